"""ONNX export of a trained method, with the ImageNet normalisation inside the graph and a parity check.

The exported graph:

- input ``images``: (N, 3, H, W) RGB at the run's size (cfg.data.height x cfg.data.width), either
  float32 in [0, 1] (``input_kind="float"``) or uint8 0..255 (``"uint8"``); resizing (LANCZOS in vireid)
  stays outside the graph;
- input ``modality``: (N,) int64, ``Modality.code`` per image (0 visible, 1 infrared). Methods with
  modality-specific stems run both stems on the whole batch and pick each row's stem by this input,
  so the graph has no data-dependent branches;
- output ``features``: (N, D) float32, L2-normalised (with the run's flip fusion when cfg.eval.flip);
- normalisation, flip fusion and the modality branches come from the inference path and the method's
  `inference_spec()`, the same code evaluation and FeatureExtractor run;
- the batch axis N is dynamic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core import ExportError

__all__ = ["ExportError", "export_onnx"]  # and, imported on first use, the helpers in _MOVED
_MOVED = ("build_export_module", "export_extractor", "parity_batch")  # live in vireid.inference.onnx_export


def __getattr__(name: str) -> Any:
    """The export helpers, imported on first use (importing this module must not import torch)."""
    if name in _MOVED:
        from ..inference import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_onnx(run: str | Path, out: str | Path, *, feature: str | None = None, checkpoint: str = "auto",
                opset: int = 17, input_kind: str = "float", tolerance: float = 1e-4, flip: bool | None = None,
                batch: int = 4) -> dict[str, Any]:
    """Export the run to ONNX at `out` (atomically) after ONNX Runtime matches PyTorch within `tolerance`."""
    from ..inference import FeatureExtractor
    from ..inference.onnx_export import _require, export_extractor

    _require("onnx")
    _require("onnxruntime")
    fx = FeatureExtractor(run, device="cpu", feature=feature, checkpoint=checkpoint, flip=flip)
    return export_extractor(fx, out, opset=opset, input_kind=input_kind, tolerance=tolerance, batch=batch)
