"""BN-neck and the identity classifier that follows it."""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_INITS = ("ones", "normal", "kaiming")


class BNNeck(nn.Module):
    """y = BatchNorm1d(x): (B, dim) -> (B, dim); the bias is zero and frozen by default.

    weight_init: "ones" (MPANet, JSIA), "normal" = N(1, 0.01) (LbA), "kaiming" = what AGW's
    `weights_init_kaiming` does to a BatchNorm1d, which is also N(1, 0.01) (the name is
    kept so configs can say which recipe they follow).
    """

    def __init__(self, dim: int, bias_frozen: bool = True, weight_init: str = "ones",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"BNNeck weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        self.bn = nn.BatchNorm1d(dim)
        with torch.no_grad():
            if weight_init == "ones":
                self.bn.weight.fill_(1.0)
            else:
                self.bn.weight.normal_(1.0, 0.01, generator=generator)
            self.bn.bias.zero_()
        self.bn.bias.requires_grad_(not bias_frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


class Classifier(nn.Module):
    """logits = x W^T (+ b): (B, dim) -> (B, num_classes); W ~ N(0, init_std) or torch's default."""

    def __init__(self, dim: int, num_classes: int, bias: bool = False, init_std: float | None = 0.001,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes, bias=bias)
        if init_std is not None:
            with torch.no_grad():
                self.fc.weight.normal_(0.0, float(init_std), generator=generator)
                if self.fc.bias is not None:
                    self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)
