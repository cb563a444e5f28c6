"""MPANet's attention blocks (Wu et al., CVPR 2021): the modality alleviation module and pattern alignment.

docs/reference/methods.md#mpanet-4-1. Both are pure building blocks: no losses here (the separation
loss over PAM's maps lives in `vireid.losses.mpanet`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MAM(nn.Module):
    """MAM(Z) = m * Z + (1 - m) * IN(Z), m = sigmoid(W2 ReLU(W1 GAP(Z))): (B, C, H, W) -> (B, C, H, W).

    W1 (C -> C/r) and W2 (C/r -> C) are bias-free 1x1 convs with kaiming-normal (fan_out) init;
    IN is InstanceNorm2d without affine parameters or running statistics (eps 1e-5), so it always
    normalises each image's channel by its own biased spatial variance, in training and at test time.
    The channel gate m decides per image how much of each channel keeps its modality-specific
    statistics (m -> 1) or has them removed (m -> 0).
    """

    def __init__(self, channels: int, reduction: int = 16, eps: float = 1e-5) -> None:
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"MAM needs 1 <= reduction <= channels, got channels={channels} reduction={reduction}")
        hidden = channels // reduction
        self.channel_attention = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
            nn.Sigmoid(),
        )
        self.instance_norm = nn.InstanceNorm2d(channels, eps=eps, affine=False, track_running_stats=False)
        for m in self.channel_attention:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def gate(self, z: torch.Tensor) -> torch.Tensor:
        """The channel gate m (B, C, 1, 1)."""
        return self.channel_attention(F.adaptive_avg_pool2d(z, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = self.gate(z)
        return z * m + self.instance_norm(z) * (1 - m)


class PAM(nn.Module):
    """Pattern alignment: M = sigmoid(Conv1x1(F)) (B, l, H, W); P_k = M_k * F; p_k = GAP(P_k).

    forward(F (B, C, H, W)) -> (f, M) with f = [p_1, ..., p_l, GAP(F)] of shape (B, (l + 1) * C),
    in that order (each block of C channels is one pattern, the last one the plain global feature),
    and M the pattern maps (the input of the separation loss). The conv weight keeps torch's default
    init and its bias starts at 0, as in the reference.
    """

    def __init__(self, channels: int, num_parts: int = 6) -> None:
        super().__init__()
        if num_parts < 1:
            raise ValueError(f"PAM needs num_parts >= 1, got {num_parts}")
        self.channels = int(channels)
        self.num_parts = int(num_parts)
        self.spatial_attention = nn.Conv2d(channels, num_parts, kernel_size=1, bias=True)
        assert self.spatial_attention.bias is not None  # bias=True
        nn.init.zeros_(self.spatial_attention.bias)

    @property
    def out_dim(self) -> int:
        """(l + 1) * C."""
        return (self.num_parts + 1) * self.channels

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """The pattern maps M = sigmoid(Conv1x1(F)) (B, l, H, W)."""
        return torch.sigmoid(self.spatial_attention(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        masks = self.maps(x)
        flat = x.reshape(b, c, h * w)
        # GAP(M_k * F) = (1/hw) sum_s M_k(s) F(s): one batched product instead of l masked copies of F
        parts = torch.bmm(masks.reshape(b, self.num_parts, h * w), flat.transpose(1, 2)) / (h * w)
        pooled = flat.mean(dim=2, keepdim=True).transpose(1, 2)  # (B, 1, C)
        feature = torch.cat([parts, pooled], dim=1).reshape(b, self.out_dim)
        return feature, masks
