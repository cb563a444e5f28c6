"""cmGAN's objectives (docs/reference/methods.md#cmgan-6-3): generator loss, modality discriminator CE, alternation.

The three objectives take loss values (tensors or floats) so the sign conventions can be checked
on plain numbers (docs/reference/methods.md#cmgan-6-8-1): with l_gen = 2.0, l_dis = 0.6, gamma = 0.05, eta = 1
the G-step total is 1.97, the literal D-step total -1.97 and the split D-step objective 0.03.
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F

from ..utils.tensors import modality_codes
from ._precision import float32_math

T = TypeVar("T", torch.Tensor, float)


def generator_loss(triplet: T, ide: T, alpha: float = 1.0, beta: float = 1.0) -> T:
    """l_gen = alpha * l_triplet + beta * l_ide (paper: alpha : beta = 1 : 1)."""
    return alpha * triplet + beta * ide


def generator_objective(l_gen: T, l_dis: T, gamma: float = 0.05) -> T:
    """G-step total = l_gen - gamma * l_dis (Eq. 7; the generator also tries to fool the discriminator)."""
    return l_gen - gamma * l_dis


def literal_discriminator_objective(l_gen: T, l_dis: T, gamma: float = 0.05, eta: float = 1.0) -> T:
    """Literal D-step total of Algorithm 1 = eta * (gamma * l_dis - l_gen), for one optimiser over all parameters."""
    return eta * (gamma * l_dis - l_gen)


def split_discriminator_objective(l_dis: T, gamma: float = 0.05, eta: float = 1.0) -> T:
    """Split D-step objective = eta * gamma * l_dis, stepped on the discriminator's parameters only.

    Its gradient w.r.t. theta_D equals that of the literal objective, since l_gen does not depend on theta_D.
    """
    return eta * gamma * l_dis


@float32_math
def modality_cross_entropy(logits: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
    """l_dis = mean_i -log softmax(logits_i)[m_i], m_i the modality code (0 visible, 1 infrared).

    logits (B, 2), modalities (B,) codes -> scalar.
    """
    codes = modality_codes(modalities, logits.shape[0], logits.device, per_item=True,
                           what=f"{logits.shape[0]} discriminator outputs")
    return F.cross_entropy(logits, codes)


@torch.no_grad()
def modality_accuracy(logits: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
    """Fraction of images whose arg-max discriminator logit is their modality code: (B, 2), (B,) -> scalar."""
    codes = modality_codes(modalities, logits.shape[0], logits.device, per_item=True,
                           what=f"{logits.shape[0]} discriminator outputs")
    return (logits.argmax(dim=1) == codes).float().mean()
