from solution import add

def test_small():
    assert add(1, 2) == 3

def test_negative():
    assert add(-4, 1) == -3
