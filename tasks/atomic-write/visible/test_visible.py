"""Visible tests of the atomic-write task: what an agent build may run while it works.

A few checks of the basic API, run from the workspace root (`python3 -m pytest visible`), so
`atomic_write.py` at the top of the workspace is importable. The hidden suite the gate runs is
larger and different; passing these is necessary, not sufficient.
"""

import os
import stat

import pytest

from atomic_write import atomic_write


def test_bytes_are_written_exactly(tmp_path):
    target = tmp_path / "blob.bin"
    payload = b"\x00\r\n\xff"
    atomic_write(target, payload)
    assert target.read_bytes() == payload


def test_str_replaces_old_content(tmp_path):
    target = tmp_path / "note.txt"
    target.write_text("old content that is longer\n")
    atomic_write(str(target), "new\n")
    assert target.read_text() == "new\n"


def test_other_data_types_raise_type_error(tmp_path):
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "x", 42)


def test_missing_parent_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no" / "such" / "file.txt", "x")


def test_explicit_mode_is_exact(tmp_path):
    target = tmp_path / "key"
    atomic_write(target, b"k", mode=0o640)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
