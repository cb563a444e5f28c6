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

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core import ExportError, Modality

__all__ = ["ExportError", "build_export_module", "export_onnx", "parity_batch"]


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the {name!r} package, which is not installed; "
                          "run `pip install vireid[export]` (onnx and onnxruntime)") from exc


def build_export_module(method: Any, feature: str, height: int, width: int, *, input_kind: str = "float",
                        flip: bool = False) -> Any:
    """An nn.Module (images, modality) -> features through the inference path: the method's normalisation,
    `embed_images` (with flip fusion) per modality branch when the method is modality-specific, rows selected."""
    import torch
    from torch import nn

    from ..inference import embed_images

    if input_kind not in ("float", "uint8"):
        raise ExportError(f"input kind must be 'float' or 'uint8', got {input_kind!r}")
    spec = method.inference_spec()
    if spec.channels != 3:
        raise ExportError(f"method declares {spec.channels}-channel input; the exported graph takes RGB images")

    class Exported(nn.Module):
        mean: torch.Tensor  # buffers, registered in __init__
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.method = method
            self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

        def _embed(self, x: torch.Tensor, modality: Modality) -> torch.Tensor:
            return embed_images(self.method, x, modality, flip=flip)[feature]

        def forward(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
            x = images.to(torch.float32)
            if input_kind == "uint8":
                x = x / 255.0
            x = (x - self.mean) / self.std
            vis = self._embed(x, Modality.VISIBLE)
            if not spec.modality_specific:
                return vis + 0 * modality.to(vis.dtype).unsqueeze(1)  # keeps the input in the graph
            ir = self._embed(x, Modality.INFRARED)
            return torch.where((modality == Modality.INFRARED.code).unsqueeze(1), ir, vis)

    return Exported().eval()


def parity_batch(height: int, width: int, n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded test batch: (n, 3, H, W) uint8 images and alternating modality codes (both stems used)."""
    from ..utils.seed import numpy_rng

    rng = numpy_rng(seed, 0xE4)
    images = rng.integers(0, 256, size=(n, 3, height, width), dtype=np.uint8)
    codes = np.array([i % 2 for i in range(n)], dtype=np.int64)
    return images, codes


def export_onnx(run: str | Path, out: str | Path, *, feature: str | None = None, checkpoint: str = "auto",
                opset: int = 17, input_kind: str = "float", tolerance: float = 1e-4, flip: bool | None = None,
                batch: int = 4) -> dict[str, Any]:
    """Export the run to ONNX at `out` (atomically) after ONNX Runtime matches PyTorch within `tolerance`."""
    import torch

    from ..inference import FeatureExtractor
    from ..utils.atomic import atomic_path

    _require("onnx")
    ort = _require("onnxruntime")
    fx = FeatureExtractor(run, device="cpu", feature=feature, checkpoint=checkpoint, flip=flip)
    h, w = fx.height, fx.width
    module = build_export_module(fx.method, fx.feature, h, w, input_kind=input_kind, flip=fx.flip)
    images_u8, codes = parity_batch(h, w, n=max(2, batch))
    feed_images = images_u8 if input_kind == "uint8" else images_u8.astype(np.float32) / 255.0
    example = (torch.from_numpy(feed_images[:2]), torch.from_numpy(codes[:2]))
    out = Path(out).expanduser()
    with atomic_path(out, suffix=".onnx") as tmp:
        try:
            # the stems see constant modality codes inside each branch, so the tracer's constant-folding
            # warnings about them are expected; the parity check below is what verifies the graph
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(module, example, str(tmp), input_names=["images", "modality"],
                                  output_names=["features"], opset_version=opset, dynamo=False,
                                  dynamic_axes={"images": {0: "batch"}, "modality": {0: "batch"},
                                                "features": {0: "batch"}})
        except Exception as exc:  # the exporter raises many types; name the method and the cause
            raise ExportError(f"method {fx.method_name!r} cannot be exported to ONNX: {exc}") from exc
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feed = {"images": feed_images, "modality": codes}
        got = session.run(["features"], {k: v for k, v in feed.items() if k in names})[0]
        # the reference is the deployed path itself: FeatureExtractor on the same pixels (already at H x W,
        # so its resize is a no-op), one modality per forward pass
        ref = fx(np.ascontiguousarray(images_u8.transpose(0, 2, 3, 1)), [Modality.from_code(int(c)) for c in codes])
        diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
        if not diff <= tolerance:
            raise ExportError(f"ONNX Runtime disagrees with PyTorch on the test batch: max abs difference {diff:.3e} "
                              f"> {tolerance:.0e} (shapes {got.shape} vs {ref.shape}); {out} was not written")
    return {"out": str(out), "inputs": names, "output": "features", "dim": int(ref.shape[1]), "height": h,
            "width": w, "input_kind": input_kind, "max_abs_diff": diff, "tolerance": tolerance,
            "method": fx.method_name, "feature": fx.feature, "fingerprint": fx.fingerprint}
