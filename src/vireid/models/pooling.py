"""Global pooling of a feature map to a vector: GeM and average pooling."""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    """g = (mean_{HxW} max(x, 0)^p + eps)^(1/p), per channel: (B, C, H, W) -> (B, C).

    eps is added after the mean (AGW/LbA). p is fixed unless `learnable`. The power is
    computed in float32 because x^3 of post-ReLU activations overflows float16.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-12, learnable: bool = False) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM power p must be > 0, got {p}")
        self.eps = float(eps)
        if learnable:
            self.p = nn.Parameter(torch.tensor(float(p)))
        else:
            self.register_buffer("p", torch.tensor(float(p)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        pooled = x.float().clamp(min=0).pow(p).flatten(2).mean(dim=-1)
        return (pooled + self.eps).pow(1.0 / p).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4g}, eps={self.eps:g}, learnable={isinstance(self.p, nn.Parameter)}"


class GlobalAvgPool(nn.Module):
    """g = mean_{HxW} x, per channel: (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=-1)


def build_pooling(name: str, p: float = 3.0) -> nn.Module:
    """"gem" -> GeM(p) with fixed p; "avg" -> GlobalAvgPool()."""
    key = str(name).lower()
    if key == "gem":
        return GeM(p=p)
    if key in ("avg", "gap", "mean"):
        return GlobalAvgPool()
    raise ValueError(f"unknown pooling {name!r}: expected 'gem' or 'avg' (config key model.pooling)")
