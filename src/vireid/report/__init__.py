"""Run reports: `make_report(run)` writes a self-contained HTML page about a trained run (its figures beside it),
and `vireid report` / `vireid viz` are its command line. The figures themselves live in `vireid.viz`.

Names load on first use, so importing `vireid.report` (e.g. to register the commands) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import build_report, make_report, prepare_inputs
    from .inputs import ReportInputs, evaluate_features, extract_features, load_npz_features

_WHERE = {"build_report": "build", "make_report": "build", "prepare_inputs": "build", "ReportInputs": "inputs",
          "evaluate_features": "inputs", "extract_features": "inputs", "load_npz_features": "inputs"}

__all__ = ["ReportInputs", "build_report", "evaluate_features", "extract_features", "load_npz_features",
           "make_report", "prepare_inputs"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
