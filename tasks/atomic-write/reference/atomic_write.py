"""Crash-safe file replacement.

``atomic_write(path, data)`` writes ``data`` to a temporary file in the same
directory as the file being written, makes it durable (write, fchmod, fsync),
renames it over the target with ``os.replace`` and finally fsyncs the
directory so the rename itself survives a crash. Readers see either the old
content or the new content, never a mix.

Command line::

    python -m atomic_write PATH [--mode OCTAL] < data
"""

import argparse
import errno
import os
import secrets
import stat
import sys

__all__ = ["atomic_write", "main"]

_TEMP_ATTEMPTS = 100
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def atomic_write(path, data, *, mode=None, encoding="utf-8"):
    """Atomically replace the file at ``path`` with ``data``.

    ``data`` is ``str`` (encoded with ``encoding``) or bytes-like. ``mode``,
    if given, is the exact permission set of the result; otherwise an existing
    target keeps its permission bits and a new file gets ``0o666 & ~umask``.
    If ``path`` is a symlink, the file it points to is replaced and the link
    is left alone. Any error propagates; the temporary file is removed and the
    previous content of the target is left intact.
    """
    if isinstance(data, str):
        payload = data.encode(encoding)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        payload = bytes(data)
    else:
        raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
    if mode is not None and (not isinstance(mode, int) or isinstance(mode, bool)):
        raise TypeError(f"mode must be an int, not {type(mode).__name__}")

    shown = os.fspath(path)
    # Write through symlinks: the file actually replaced is the link's target.
    target = os.path.realpath(shown)
    directory = os.path.dirname(target)

    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), shown)
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise NotADirectoryError(errno.ENOTDIR, "parent is not a directory", shown)
        raise FileNotFoundError(errno.ENOENT, "parent directory does not exist", shown)

    if mode is None:
        try:
            final_mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            final_mode = None  # new file: keep the umask-derived mode of the temp file
    else:
        final_mode = mode

    fd, tmp = _create_temp(directory, os.path.basename(target))
    try:
        try:
            _write_all(fd, payload)
            if final_mode is not None:
                os.fchmod(fd, final_mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _create_temp(directory, base):
    """Create a fresh temp file next to the target; mode 0o666 minus the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
    for _ in range(_TEMP_ATTEMPTS):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", directory)


def _write_all(fd, payload):
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _octal(text):
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"mode out of range: {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m atomic_write",
        description="Atomically replace PATH with the bytes read from stdin.",
    )
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("--mode", type=_octal, metavar="OCTAL",
                        help="permission bits of the result, e.g. 644")
    args = parser.parse_args(argv)
    data = sys.stdin.buffer.read()
    try:
        atomic_write(args.path, data, mode=args.mode)
    except (OSError, ValueError) as exc:
        print(f"atomic_write: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
