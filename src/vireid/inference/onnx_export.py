"""ONNX export of a FeatureExtractor's model: the graph (normalisation inside), its parity check, its metadata.

`vireid export` (`vireid.serve.export.export_onnx`) and the onnx backend of FeatureExtractor
(`onnx_backend`) both write graphs through `export_extractor`; the graph's inputs and outputs are
described in `vireid.serve.export`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core import ExportError, Modality

__all__ = ["build_export_module", "export_extractor", "parity_batch"]


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the {name!r} package, which is not installed; "
                          "run `pip install vireid[export]` (onnx and onnxruntime)") from exc


def build_export_module(method: Any, feature: str, height: int, width: int, *, input_kind: str = "float",
                        flip: bool = False, modality: Modality | None = None) -> Any:
    """An nn.Module (images, modality) -> features through the inference path: the method's normalisation,
    `embed_images` (with flip fusion) per modality branch when the method is modality-specific, rows selected.
    With `modality` the graph holds that modality's branch only (its `modality` input is then ignored)."""
    import torch
    from torch import nn

    from .embed import embed_images

    if input_kind not in ("float", "uint8"):
        raise ExportError(f"input kind must be 'float' or 'uint8', got {input_kind!r}")
    spec = method.inference_spec()
    if spec.channels != 3:
        raise ExportError(f"method declares {spec.channels}-channel input; the exported graph takes RGB images")
    modality_fixed = modality

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
            if modality_fixed is not None:  # one branch: half the work of a modality-specific graph
                out = self._embed(x, modality_fixed)
                return out + 0 * modality.to(out.dtype).unsqueeze(1)  # keeps the input in the graph
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


def export_extractor(fx: Any, out: str | Path, *, opset: int = 17, input_kind: str = "float",
                     tolerance: float = 1e-4, batch: int = 4, modality: Modality | None = None) -> dict[str, Any]:
    """Export a FeatureExtractor's model to `out` atomically, once ONNX Runtime matches its PyTorch path within
    `tolerance`; the graph's metadata records the fingerprint, input kind, modality and the difference.
    `modality`: a graph of that modality's branch only, checked on images of that modality."""
    import torch

    from ..utils.atomic import atomic_path

    onnx = _require("onnx")
    ort = _require("onnxruntime")
    h, w = fx.height, fx.width
    device = next(iter(fx.method.parameters()), torch.empty(0)).device  # trace where the weights are
    module = build_export_module(fx.method, fx.feature, h, w, input_kind=input_kind, flip=fx.flip,
                                 modality=modality).to(device)
    images_u8, codes = parity_batch(h, w, n=max(2, batch))
    if modality is not None:
        codes = np.full_like(codes, modality.code)
    feed_images = images_u8 if input_kind == "uint8" else images_u8.astype(np.float32) / 255.0
    example = (torch.from_numpy(feed_images[:2]).to(device), torch.from_numpy(codes[:2]).to(device))
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
        # the reference is the deployed path itself: FeatureExtractor's PyTorch path on the same pixels (already
        # at H x W, so its resize is a no-op), one modality per forward pass
        ref = fx.torch_features(list(np.ascontiguousarray(images_u8.transpose(0, 2, 3, 1))),
                                [Modality.from_code(int(c)) for c in codes])
        diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
        if not diff <= tolerance:
            raise ExportError(f"ONNX Runtime disagrees with PyTorch on the test batch: max abs difference {diff:.3e} "
                              f"> {tolerance:.0e} (shapes {got.shape} vs {ref.shape}); {out} was not written")
        # recorded in the graph so a cached copy is only ever used for the weights it was verified against
        model = onnx.load(str(tmp))
        for key, value in {"vireid_fingerprint": fx.fingerprint, "vireid_input": input_kind,
                           "vireid_modality": "both" if modality is None else modality.value,
                           "vireid_method": fx.method_name, "vireid_feature": fx.feature,
                           "vireid_max_abs_diff": f"{diff:.3e}", "vireid_tolerance": f"{tolerance:.0e}"}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
    return {"out": str(out), "inputs": names, "output": "features", "dim": int(ref.shape[1]), "height": h,
            "width": w, "input_kind": input_kind, "max_abs_diff": diff, "tolerance": tolerance,
            "method": fx.method_name, "feature": fx.feature, "fingerprint": fx.fingerprint}
