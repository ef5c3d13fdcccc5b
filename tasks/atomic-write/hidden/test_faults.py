"""Durability and failure handling, checked by observing or breaking os calls."""

import errno
import os
import stat

import pytest


def names(directory):
    return set(os.listdir(directory))


def perm(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def fail_with(code):
    def fail(*args, **kwargs):
        raise OSError(code, f"injected fault: {os.strerror(code)}")

    return fail


def test_replace_failure_leaves_no_temp_and_old_content(aw, tmp_path, monkeypatch):
    target = tmp_path / "ledger.txt"
    target.write_bytes(b"balance=100\n")
    attempts = []

    def broken_replace(src, dst, *args, **kwargs):
        attempts.append((os.fspath(src), os.fspath(dst)))
        raise OSError(errno.EIO, "injected fault: rename failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    monkeypatch.setattr(os, "rename", broken_replace)
    with pytest.raises(OSError) as info:
        aw(target, b"balance=0\n")
    monkeypatch.undo()

    assert info.value.errno == errno.EIO, "the os.replace error must propagate unchanged"
    assert attempts, "the file must be put in place with os.replace"
    assert names(tmp_path) == {"ledger.txt"}, "temp file left behind after a failed replace"
    assert target.read_bytes() == b"balance=100\n"


def test_fsync_error_propagates(aw, tmp_path, monkeypatch):
    target = tmp_path / "journal.log"
    target.write_bytes(b"committed\n")
    monkeypatch.setattr(os, "fsync", fail_with(errno.EIO))
    monkeypatch.setattr(os, "fdatasync", fail_with(errno.EIO), raising=False)
    with pytest.raises(OSError) as info:
        aw(target, b"uncommitted\n")
    monkeypatch.undo()

    assert info.value.errno == errno.EIO
    assert names(tmp_path) == {"journal.log"}, "temp file left behind after an fsync error"
    assert target.read_bytes() == b"committed\n"


def test_fsync_file_before_replace_and_directory_after(aw, tmp_path, monkeypatch):
    parent = os.stat(tmp_path)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            is_parent = (st.st_dev, st.st_ino) == (parent.st_dev, parent.st_ino)
            events.append("fsync-parent-dir" if is_parent else "fsync-other-dir")
        else:
            events.append("fsync-file")
        return real_fsync(fd)

    def spy_replace(src, dst, *args, **kwargs):
        events.append("replace")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    target = tmp_path / "durable.txt"
    aw(target, b"must survive a crash")
    monkeypatch.undo()

    assert target.read_bytes() == b"must survive a crash"
    assert "replace" in events, f"os.replace was not used; events: {events}"
    at = events.index("replace")
    assert "fsync-file" in events[:at], f"temp file not fsynced before the replace; events: {events}"
    assert "fsync-parent-dir" in events[at + 1:], (
        f"containing directory not fsynced after the replace; events: {events}"
    )


def test_mode_set_before_replace(aw, tmp_path, monkeypatch, umask):
    umask(0o022)
    seen = []
    real_replace = os.replace

    def spy_replace(src, dst, *args, **kwargs):
        seen.append((os.path.basename(os.fspath(dst)), perm(src)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy_replace)
    # explicit mode on a new file
    aw(tmp_path / "explicit.txt", b"a", mode=0o640)
    # no mode: the existing target's permissions must already be on the temp file
    kept = tmp_path / "kept.txt"
    kept.write_bytes(b"old")
    os.chmod(kept, 0o604)
    aw(kept, b"b")
    monkeypatch.undo()

    assert seen == [("explicit.txt", 0o640), ("kept.txt", 0o604)], (
        "the final permissions must be on the temp file when it is renamed into place; "
        f"saw {[(name, oct(mode)) for name, mode in seen]}"
    )
    assert perm(tmp_path / "explicit.txt") == 0o640
    assert perm(kept) == 0o604
