"""Dataset readers for SYSU-MM01, RegDB, LLCM and plain folders, registered by name in `registry.DATASETS`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...registry import DATASETS
from ._common import DanglingSymlinkWarning
from .base import Reader, ReIDDataset, build_label_map


def load_dataset(name: str, root: str | Path, **options: Any) -> ReIDDataset:
    """Parse the dataset `name` (a registered reader) at `root` with the reader's `options`."""
    reader = DATASETS.get(name)
    return reader(Path(root).expanduser(), **options).load()


__all__ = ["DanglingSymlinkWarning", "ReIDDataset", "Reader", "build_label_map", "load_dataset"]
