from x import x


def test_x():
    assert x() == 1
