"""Pairwise distances used by the metric-learning losses."""

from __future__ import annotations

import torch

from ._precision import float32_math


@float32_math
def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """D_ij = ||x_i - y_j||: (N, D), (M, D) -> (N, M).

    Computed as |x|^2 + |y|^2 - 2 x.y; Euclidean = sqrt(max(D^2, 1e-12)) (AGW/LbA's clamp keeps the
    gradient of sqrt finite at 0), squared = max(D^2, 0).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"pairwise_euclidean expects (N, D) and (M, D) features, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    if squared:
        return d2.clamp(min=0.0)
    return d2.clamp(min=1e-12).sqrt()
