"""utils.atomic.storage_errors: the one mapping of a full disk or a denied permission to a one-line StorageError,
used by atomic_path, atomic_dir, the run directory's evaluation files, the converter and the gallery index."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from vireid.core import StorageError
from vireid.utils.atomic import atomic_path, storage_errors


def test_a_full_disk_names_the_file_the_block_was_writing(tmp_path):
    with pytest.raises(StorageError) as info, storage_errors(tmp_path) as where:
        where.target = tmp_path / "galleries" / "trial3.txt"
        raise OSError(errno.ENOSPC, "No space left on device")
    text = str(info.value)
    assert text.startswith(f"cannot write {tmp_path / 'galleries' / 'trial3.txt'}: the disk is full")
    assert "free some space and run the command again" in text and info.value.__cause__ is None


def test_a_denied_permission_is_a_storage_error_and_other_errors_pass_unchanged(tmp_path):
    with pytest.raises(StorageError, match=r"cannot write .*out: Read-only file system; check the folder's"), \
            storage_errors(tmp_path / "out"):
        raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(FileNotFoundError), storage_errors(tmp_path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    with pytest.raises(ValueError, match="not an OSError"), storage_errors(tmp_path):
        raise ValueError("not an OSError")


def test_atomic_path_on_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".results.json."):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StorageError, match=r"results\.json: the disk is full"), atomic_path(target) as tmp:
        tmp.write_text("new")
    monkeypatch.undo()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
