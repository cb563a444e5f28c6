"""Small fully-connected heads: cmGAN's two-layer ID head and its modality discriminator.

See docs/reference/methods.md#cmgan-6-2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _check_dims(where: str, dims: Sequence[int]) -> list[int]:
    out = [int(d) for d in dims]
    bad = [d for d in out if d < 1]
    if bad:
        raise ValueError(f"{where}: every layer width must be >= 1, got {out}")
    return out


ACTIVATIONS = ("relu", "leaky_relu")
LEAKY_SLOPE = 0.1


class IdHead(nn.Module):
    """hidden = W1 x + b1, logits = W2 act(hidden) + b2: (B, in_dim) -> ((B, hidden_dim), (B, num_classes)).

    cmGAN's "two fully-connected layers for ID predictions"; widths 2048 -> 512 -> N with biases and
    act = ReLU follow the unofficial code (torch's default Linear init). act = "leaky_relu" (slope 0.1)
    keeps the head trainable when every hidden unit would otherwise be driven negative ("dead").
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int = 512, activation: str = "relu") -> None:
        super().__init__()
        in_dim, hidden_dim, num_classes = _check_dims("IdHead", (in_dim, hidden_dim, num_classes))
        if activation not in ACTIVATIONS:
            raise ValueError(f"IdHead activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.ReLU() if activation == "relu" else nn.LeakyReLU(LEAKY_SLOPE)
        self.fc2 = nn.Linear(hidden_dim, num_classes)
        self.hidden_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.fc1(x)
        return hidden, self.fc2(self.act(hidden))


class ModalityDiscriminator(nn.Module):
    """logits = MLP(x): (B, in_dim) -> (B, num_modalities); Linear+ReLU per hidden width, then a Linear.

    Default widths 2048 -> 1000 -> 500 -> 2 (cmGAN's "3-layer feed-forward network", sizes from the
    unofficial code). Logit k scores modality code k (0 visible, 1 infrared).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (1000, 500), num_modalities: int = 2) -> None:
        super().__init__()
        widths = _check_dims("ModalityDiscriminator", (in_dim, *hidden, num_modalities))
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:  # no ReLU on the logits
                layers.append(nn.ReLU(inplace=False))
        self.net = nn.Sequential(*layers)
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
