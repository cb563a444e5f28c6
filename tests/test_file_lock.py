"""utils.atomic.file_lock: the one advisory lock of the index, the image cache and the bench."""

from __future__ import annotations

import os
import sys

import pytest

from vireid.core import GalleryIndexError, StorageError
from vireid.utils.atomic import file_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks are POSIX only")


def test_a_held_lock_refuses_a_second_holder_and_frees_on_exit(tmp_path):
    path = tmp_path / "sub" / ".x.lock"
    with file_lock(path) as held:
        assert held == path and path.read_text() == f"{os.getpid()}\n"  # the parent folder is made
        with pytest.raises(StorageError, match=r"\.x\.lock is held by another process"), file_lock(path, timeout=0):
            pass
        with pytest.raises(GalleryIndexError, match="busy index"), \
                file_lock(path, timeout=0.1, busy=lambda: GalleryIndexError("busy index")):
            pass
    with file_lock(path, timeout=0):  # released by the first holder's exit
        pass


def test_an_unwritable_place_is_one_storage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError), file_lock(blocker / ".x.lock"):
        pass
