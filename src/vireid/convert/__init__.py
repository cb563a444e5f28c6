"""Import the authors' released checkpoints (AGW, CAJ, MPANet, LbA, JSIA-ReID) as vireid runs: `vireid convert`.

docs/official-weights.md: where each is published, the name mappings, the test-time settings a converted run gets.
The package face is light (no torch); `convert_official` and the mappings load on first use.
"""

from __future__ import annotations

from typing import Any

from .sources import DATASETS, SOURCES, EvalSettings, OfficialSource

__all__ = ["DATASETS", "SOURCES", "ConvertedRun", "EvalSettings", "OfficialSource", "convert_official",
           "official_key_map"]

_LAZY = ("ConvertedRun", "convert_official", "official_key_map")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import official

        return getattr(official, name)
    raise AttributeError(f"module 'vireid.convert' has no attribute {name!r}")
