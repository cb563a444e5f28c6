"""Non-local block as used by AGW (dot-product affinity divided by the number of positions)."""

from __future__ import annotations

import torch
from torch import nn


class NonLocalBlock(nn.Module):
    """z = x + BN(W(y)), y_i = (1/N) sum_j theta(x_i)^T phi(x_j) g(x_j); N = H*W.

    `inter_channels` is the width of theta/phi/g. AGW's code computes it as
    `reduc_ratio // reduc_ratio` = 1 (an accident its author acknowledged, docs/reference/protocols.md#p16);
    1 is the faithful default. The BN of the W branch starts at weight 0 and bias 0 so a
    freshly inserted block is the identity and does not disturb pretrained features.
    """

    def __init__(self, in_channels: int, inter_channels: int = 1) -> None:
        super().__init__()
        if inter_channels < 1:
            raise ValueError(f"inter_channels must be >= 1, got {inter_channels}")
        self.in_channels = int(in_channels)
        self.inter_channels = int(inter_channels)
        self.g = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.theta = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        conv = nn.Conv2d(inter_channels, in_channels, kernel_size=1)
        bn = nn.BatchNorm2d(in_channels)
        self.W = nn.Sequential(conv, bn)
        nn.init.zeros_(bn.weight)
        nn.init.zeros_(bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)  # (B, N, C')
        theta_x = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        phi_x = self.phi(x).flatten(2)  # (B, C', N)
        affinity = torch.matmul(theta_x, phi_x) / (h * w)  # (B, N, N)
        y = torch.matmul(affinity, g_x).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.W(y)
