"""FeatureExtractor: a trained run as a function images -> L2-normalised features, through the inference path.

Accepted images (one or a list): a path, a PIL image, an (H, W, 3) / (H, W) uint8 NumPy array, an
(N, H, W, 3) uint8 array, or a torch tensor. Tensors follow torchvision's convention: (3, H, W) or
(N, 3, H, W); float tensors hold RGB in [0, 1] and are quantised to uint8 (round(x * 255)) so every
source goes through the same decode -> LANCZOS resize -> ImageNet normalisation as evaluation.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import ConfigError, Modality
from .embed import embed_items
from .model import load_trained

BACKENDS = ("torch", "onnx")


def _tensor_to_uint8(t: torch.Tensor) -> list[np.ndarray]:
    """(3, H, W) or (N, 3, H, W) tensor -> list of (H, W, 3) uint8 arrays; floats are RGB in [0, 1]."""
    t = t.detach().cpu()
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise ValueError(f"an image tensor must be (3, H, W) or (N, 3, H, W), got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        if not torch.isfinite(t).all():
            raise ValueError("an image tensor holds NaN or infinite values")
        t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return [np.ascontiguousarray(x.permute(1, 2, 0).numpy()) for x in t]


def as_image_list(images: Any) -> list[Any]:
    """Split `images` (one image, a list, an (N, H, W, 3) array or an (N, 3, H, W) tensor) into single images."""
    if isinstance(images, torch.Tensor):
        return _tensor_to_uint8(images)
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        return [images]
    out: list[Any] = []
    for im in images:
        if isinstance(im, torch.Tensor):
            out.extend(_tensor_to_uint8(im))
        else:
            out.append(im)
    return out


def as_modalities(modality: Any, n: int) -> list[Modality]:
    """One Modality per image: a single Modality/str broadcasts, a list must have one entry per image."""
    if isinstance(modality, (Modality, str)):
        return [Modality.parse(modality)] * n
    mods = [Modality.parse(m) for m in modality]
    if len(mods) != n:
        raise ValueError(f"got {len(mods)} modalities for {n} images; pass one modality or one per image")
    return mods


class FeatureExtractor:
    """A trained method with evaluation preprocessing: `extractor(images, modality) -> (N, D) float32`.

    Args:
        run_dir_or_checkpoint: a run directory (its best checkpoint, else last) or a checkpoint file.
        device: "cpu", "cuda", "cuda:1", ...
        feature: the feature kind to return (default: the method's reported one, `inference_spec().feature`).
        batch_size: images per forward pass (per modality).
        checkpoint: auto | best | last | a file name in the run's checkpoints/.
        flip: fuse the features of mirrored images (default: the run's eval.flip).
        backend: "torch" (PyTorch eager) or "onnx" (ONNX Runtime running the graph `vireid export` writes,
            exported, parity-checked and cached in `onnx_cache` on first use; needs `vireid[export]`).
        threads: ONNX Runtime intra-op threads (default: the cores available, capped by $OMP_NUM_THREADS);
            the PyTorch backend uses the process's torch.get_num_threads().
        onnx_cache: folder of the cached graphs (default: <run>/onnx, or onnx/ beside a checkpoint file).

    Both backends of one checkpoint have the same `fingerprint` (an index built with one is searched with the
    other): a graph is only used after its features matched PyTorch's within the parity tolerance.

    Examples::

        fx = vireid.FeatureExtractor("runs/base")
        feats = fx(["a.jpg", "b.jpg"], modality="infrared")   # (2, D), rows L2-normalised
    """

    def __init__(self, run_dir_or_checkpoint: str | Path, device: str = "cpu", feature: str | None = None,
                 batch_size: int = 64, checkpoint: str = "auto", flip: bool | None = None, backend: str = "torch",
                 threads: int | None = None, onnx_cache: str | Path | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend == "onnx":
            from .onnx_backend import require_onnxruntime

            require_onnxruntime()  # fail before loading the checkpoint when the extra is missing
        self.cfg, self.method, self.checkpoint_path = load_trained(run_dir_or_checkpoint, checkpoint, device)
        self.source = Path(run_dir_or_checkpoint)
        self.device = device
        feature = feature or self.method.inference_spec().feature
        self.feature = feature
        self.batch_size = int(batch_size)
        # evaluation fuses flipped views when cfg.eval.flip is set; so does this, unless told otherwise
        self.flip = bool(self.cfg.eval.flip if flip is None else flip)
        dims = self.method.feature_dims()
        if feature not in dims:
            raise ConfigError(f"feature {feature!r} is not produced by method {self.cfg.method.name!r}; "
                              f"choose one of {sorted(dims)}")
        self.dim = int(dims[feature])
        self._fingerprint: str | None = None
        self.backend = backend
        self._onnx = None
        if backend == "onnx":
            from .onnx_backend import OnnxRunner

            self._onnx = OnnxRunner(self, threads=threads, cache_dir=onnx_cache)

    @property
    def height(self) -> int:
        return int(self.cfg.data.height)

    @property
    def width(self) -> int:
        return int(self.cfg.data.width)

    @property
    def method_name(self) -> str:
        return str(self.cfg.method.name)

    @property
    def fingerprint(self) -> str:
        """sha256 over the weights (sorted names, shapes, dtypes, bytes), method, feature, flip and input size."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"vireid-features v1 {self.method_name} {self.feature} flip={int(self.flip)} "
                               f"{self.height}x{self.width}\n".encode())
            for name, t in sorted(self.method.state_dict().items()):
                t = t.detach().cpu().contiguous()
                h.update(f"{name} {tuple(t.shape)} {t.dtype}\n".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __call__(self, images: Any, modality: Any) -> np.ndarray:
        """(N, D) float32 L2-normalised features, rows in input order; batches of `batch_size` per modality."""
        items = as_image_list(images)
        mods = as_modalities(modality, len(items))
        if self._onnx is not None:
            return self._onnx.features(items, mods, self.batch_size)
        return self.torch_features(items, mods)

    @property
    def onnx_paths(self) -> list[Path]:
        """The cached graphs the onnx backend runs (one per modality for modality-specific methods; [] for torch)."""
        return list(self._onnx.paths.values()) if self._onnx is not None else []

    def torch_features(self, items: Sequence[Any], mods: Sequence[Modality]) -> np.ndarray:
        """(N, D) float32 features of single images through the PyTorch path (the onnx backend's reference)."""
        feats = embed_items(self.method, items, mods, height=self.height, width=self.width, device=self.device,
                            flip=self.flip, batch_size=self.batch_size, kinds=(self.feature,))
        return feats[self.feature].numpy()

    def describe(self) -> dict[str, Any]:
        """What an index records about the model that built it."""
        return {"fingerprint": self.fingerprint, "method": self.method_name, "feature": self.feature,
                "dim": self.dim, "flip": self.flip, "height": self.height, "width": self.width,
                "checkpoint": str(self.checkpoint_path.resolve())}
