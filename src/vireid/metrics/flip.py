"""Fusion of a feature with the feature of the horizontally flipped image (docs/reference/protocols.md#sec-7)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from ..core import EvaluationError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

FLIP_STYLES = ("caj", "deen")


def fuse_flip(f: ArrayT, f_flipped: ArrayT, style: str = "caj") -> ArrayT:
    """caj: normalise((f + f') / 2) row-wise; deen: f + f' (no renormalisation). Same type as `f`."""
    if style not in FLIP_STYLES:
        raise EvaluationError(f"unknown flip fusion style {style!r}: expected one of {', '.join(FLIP_STYLES)}")
    if tuple(f.shape) != tuple(f_flipped.shape):
        raise EvaluationError(f"flip fusion needs equal shapes, got {tuple(f.shape)} and {tuple(f_flipped.shape)}")
    if isinstance(f, torch.Tensor):
        fused = f + f_flipped
        if style == "caj":
            fused = torch.nn.functional.normalize(fused / 2, p=2, dim=-1)
        return fused
    fused = np.asarray(f) + np.asarray(f_flipped)
    if style == "caj":
        fused = fused / 2
        norm = np.linalg.norm(fused, axis=-1, keepdims=True)
        fused = fused / np.maximum(norm, 1e-12)
    return fused
