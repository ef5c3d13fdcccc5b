"""The `python -m atomic_write PATH [--mode OCTAL]` command line."""

import os
import stat


def perm(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_cli_stdin_to_path(run_cli, tmp_path):
    payload = b"binary \x00\xff\xfe not utf-8\r\n" * 1000
    target = tmp_path / "from-stdin.bin"
    result = run_cli(target, stdin=payload)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert target.read_bytes() == payload
    # replacing an existing file, relative path, empty stdin
    result = run_cli("from-stdin.bin", stdin=b"")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert target.read_bytes() == b""
    assert set(os.listdir(tmp_path)) == {"from-stdin.bin"}


def test_cli_mode_option(run_cli, tmp_path):
    target = tmp_path / "secret.txt"
    result = run_cli(target, "--mode", "600", stdin=b"s3cret\n")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert target.read_bytes() == b"s3cret\n"
    assert perm(target) == 0o600
    result = run_cli("--mode", "0644", target, stdin=b"public\n")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert target.read_bytes() == b"public\n"
    assert perm(target) == 0o644


def test_cli_error_missing_parent(run_cli, tmp_path):
    target = tmp_path / "missing" / "out.txt"
    result = run_cli(target, stdin=b"data")
    assert result.returncode != 0
    err = result.stderr.decode(errors="replace").strip()
    assert err, "an error message is expected on stderr"
    assert "Traceback" not in err, f"expected a one-line error message, got a traceback:\n{err}"
    assert not (tmp_path / "missing").exists()
    assert os.listdir(tmp_path) == []
