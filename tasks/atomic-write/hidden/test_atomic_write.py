"""Behaviour of atomic_write() through its public API."""

import errno
import os
import stat
import threading

import pytest


def names(directory):
    return set(os.listdir(directory))


def perm(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def path_of(arg):
    """The absolute path an open()-style first argument names, or None for an fd."""
    if isinstance(arg, int):
        return None
    try:
        value = os.fspath(arg)
    except TypeError:
        return None
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    return os.path.abspath(value)


# --- writing -----------------------------------------------------------------


def test_text_basic_write(aw, tmp_path):
    target = tmp_path / "greeting.txt"
    text = "héllo wörld — ✓\nline two\n"
    aw(target, text)
    assert target.read_bytes() == text.encode("utf-8")


def test_text_custom_encoding(aw, tmp_path):
    target = tmp_path / "latin.txt"
    text = "café crème\n"
    aw(str(target), text, encoding="latin-1")
    assert target.read_bytes() == text.encode("latin-1")
    aw(str(target), "Ωmega", encoding="utf-16")
    assert target.read_bytes() == "Ωmega".encode("utf-16")


def test_bytes_basic_write(aw, tmp_path):
    target = tmp_path / "blob.bin"
    payload = bytes(range(256)) * 64 + b"\r\n\x00\r"  # every byte value, no newline translation
    aw(str(target), payload)
    assert target.read_bytes() == payload
    aw(target, b"")
    assert target.read_bytes() == b""


def test_replaces_existing(aw, tmp_path):
    target = tmp_path / "config.ini"
    target.write_bytes(b"old content that is much longer than the new one\n" * 100)
    aw(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    aw(target, "newer\n")
    assert target.read_bytes() == b"newer\n"
    assert names(tmp_path) == {"config.ini"}


def test_replace_swaps_in_a_new_file(aw, tmp_path):
    # The target is replaced by rename, never rewritten in place: a reader that
    # opened the old file keeps seeing the old bytes, and the inode changes.
    target = tmp_path / "data.txt"
    target.write_bytes(b"old generation\n")
    old_inode = os.stat(target).st_ino
    with open(target, "rb") as reader:
        aw(target, b"new generation\n")
        assert reader.read() == b"old generation\n"
    assert target.read_bytes() == b"new generation\n"
    assert os.stat(target).st_ino != old_inode


# --- errors --------------------------------------------------------------------


def test_missing_parent_raises_filenotfound(aw, tmp_path):
    before = names(tmp_path)
    with pytest.raises(FileNotFoundError):
        aw(tmp_path / "no-such-dir" / "file.txt", b"data")
    assert names(tmp_path) == before
    assert not (tmp_path / "no-such-dir").exists()


def test_path_is_directory_raises(aw, tmp_path):
    victim = tmp_path / "adir"
    victim.mkdir()
    (victim / "inside.txt").write_bytes(b"keep me")
    with pytest.raises(IsADirectoryError):
        aw(victim, b"data")
    assert victim.is_dir()
    assert (victim / "inside.txt").read_bytes() == b"keep me"
    assert names(tmp_path) == {"adir"}
    assert names(victim) == {"inside.txt"}


# --- permissions ---------------------------------------------------------------


def test_mode_applied_when_set(aw, tmp_path, umask):
    umask(0o077)  # an explicit mode is exact, not filtered through the umask
    fresh = tmp_path / "fresh.txt"
    aw(fresh, b"x", mode=0o640)
    assert perm(fresh) == 0o640

    existing = tmp_path / "existing.txt"
    existing.write_bytes(b"old")
    os.chmod(existing, 0o600)
    aw(existing, b"new", mode=0o644)
    assert perm(existing) == 0o644
    assert existing.read_bytes() == b"new"


def test_mode_preserved_when_none_and_target_exists(aw, tmp_path, umask):
    umask(0o022)
    for wanted in (0o600, 0o755, 0o604):
        target = tmp_path / f"keep-{wanted:o}.txt"
        target.write_bytes(b"old")
        os.chmod(target, wanted)
        aw(target, b"new")
        assert perm(target) == wanted, f"expected {wanted:o}, got {perm(target):o}"
        assert target.read_bytes() == b"new"


def test_new_file_gets_umask_default_mode(aw, tmp_path, umask):
    umask(0o027)
    first = tmp_path / "first.txt"
    aw(first, b"x")
    assert perm(first) == 0o640
    umask(0o002)
    second = tmp_path / "second.txt"
    aw(second, "y")
    assert perm(second) == 0o664


# --- leftovers -----------------------------------------------------------------


def test_no_tmp_residue_on_success(aw, tmp_path):
    (tmp_path / "neighbour.txt").write_bytes(b"untouched")
    target = tmp_path / "out.txt"
    for i in range(5):
        aw(target, f"round {i}\n")
    aw(target, b"bytes round\n", mode=0o600)
    assert names(tmp_path) == {"out.txt", "neighbour.txt"}
    assert (tmp_path / "neighbour.txt").read_bytes() == b"untouched"
    assert target.read_bytes() == b"bytes round\n"


def test_no_tmp_residue_on_open_failure(aw, tmp_path, monkeypatch):
    # Creating any file in the directory fails (ENOSPC); the call must raise,
    # leave nothing behind and keep the old content.
    target = tmp_path / "state.json"
    target.write_bytes(b'{"old": true}')
    root = str(tmp_path)

    def refuse(real):
        def wrapper(file, *args, **kwargs):
            where = path_of(file)
            if where is not None and (where == root or where.startswith(root + os.sep)):
                raise OSError(errno.ENOSPC, "injected fault: no space left on device", file)
            return real(file, *args, **kwargs)

        return wrapper

    import builtins
    import io

    monkeypatch.setattr(os, "open", refuse(os.open))
    monkeypatch.setattr(builtins, "open", refuse(builtins.open))
    monkeypatch.setattr(io, "open", refuse(io.open))
    with pytest.raises(OSError):
        aw(target, b'{"new": true}')
    monkeypatch.undo()
    assert names(tmp_path) == {"state.json"}
    assert target.read_bytes() == b'{"old": true}'


# --- symlinks ------------------------------------------------------------------


def test_symlink_writes_to_target(aw, tmp_path):
    real = tmp_path / "real.txt"
    real.write_bytes(b"old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    aw(link, b"through the link")
    assert link.is_symlink()
    assert real.read_bytes() == b"through the link"


def test_symlink_kept_and_target_updated_across_dirs(aw, tmp_path, umask):
    # The link lives in one directory, its (relative) target in another: the
    # file that is actually replaced is the target, its mode is preserved, the
    # temp file lives beside the target, and the link is untouched.
    umask(0o022)
    links = tmp_path / "links"
    store = tmp_path / "store"
    links.mkdir()
    store.mkdir()
    real = store / "settings.conf"
    real.write_bytes(b"old settings")
    os.chmod(real, 0o600)
    link = links / "settings.conf"
    os.symlink(os.path.join("..", "store", "settings.conf"), link)
    link_stat = os.lstat(link)

    aw(link, "new settings")

    assert os.path.islink(link)
    assert os.readlink(link) == os.path.join("..", "store", "settings.conf")
    assert os.lstat(link).st_ino == link_stat.st_ino
    assert real.read_bytes() == b"new settings"
    assert not real.is_symlink()
    assert perm(real) == 0o600
    assert names(links) == {"settings.conf"}
    assert names(store) == {"settings.conf"}


# --- concurrency ---------------------------------------------------------------


def test_concurrent_writers_no_corruption(aw, tmp_path):
    target = tmp_path / "shared.bin"
    size = 256 * 1024
    payloads = [bytes([65 + i]) * size for i in range(8)]
    valid = set(payloads)
    target.write_bytes(payloads[0])

    errors = []
    torn = []
    start = threading.Barrier(len(payloads) + 1)
    writers_done = threading.Event()

    def writer(payload):
        try:
            start.wait()
            for _ in range(6):
                aw(target, payload)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    def reader():
        start.wait()
        while not writers_done.is_set():
            with open(target, "rb") as fh:
                seen = fh.read()
            if seen not in valid:
                torn.append(len(seen))

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    watcher = threading.Thread(target=reader)
    for t in threads:
        t.start()
    watcher.start()
    for t in threads:
        t.join(timeout=60)
    writers_done.set()
    watcher.join(timeout=60)

    assert not errors, f"writers failed: {errors[:3]}"
    assert not torn, f"a reader saw {len(torn)} torn file(s), sizes {torn[:5]}"
    assert target.read_bytes() in valid
    assert names(tmp_path) == {"shared.bin"}
