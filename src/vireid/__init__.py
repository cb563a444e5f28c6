"""vireid: visible-infrared cross-modality person re-identification.

Importing vireid is light: torch-heavy parts load when used.
"""

from __future__ import annotations

from .core import (
    Batch,
    CheckpointError,
    ConfigError,
    DatasetError,
    EvalTrial,
    EvaluationError,
    ExportError,
    GalleryIndexError,
    LayoutError,
    Modality,
    ModalityError,
    NonFiniteLossError,
    Sample,
    StorageError,
    TrainingError,
    VireidError,
)
from .registry import register_dataset, register_method, register_protocol

__version__ = "0.1.0"

__all__ = [
    "Batch", "CheckpointError", "ConfigError", "DatasetError", "EvalTrial", "EvaluationError", "ExportError",
    "GalleryIndexError", "LayoutError", "Modality", "ModalityError", "NonFiniteLossError", "Sample", "StorageError",
    "TrainingError", "VireidError",
    "register_dataset", "register_method", "register_protocol", "__version__", "FeatureExtractor", "convert_official",
    "run_bench",
    "make_report",
]


def __getattr__(name: str):
    if name == "FeatureExtractor":
        from .inference.extractor import FeatureExtractor

        return FeatureExtractor
    if name == "convert_official":
        from .convert.official import convert_official

        return convert_official
    if name == "make_report":
        from .report.build import make_report

        return make_report
    if name == "run_bench":
        from .bench import run_bench

        return run_bench
    raise AttributeError(f"module 'vireid' has no attribute {name!r}")
