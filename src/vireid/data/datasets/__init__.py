"""Dataset readers for SYSU-MM01, RegDB, LLCM and plain folders, registered by name."""

from .base import ReIDDataset, build_label_map, load_dataset

__all__ = ["ReIDDataset", "build_label_map", "load_dataset"]
