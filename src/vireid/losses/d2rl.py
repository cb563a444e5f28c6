"""D2RL's objectives (docs/reference/methods.md#d2rl-2-3) on loss values, so the weighting can be checked on plain
numbers (spec 2.8): one domain's KL 0.2, L1 0.05, GAN 0.3, cycle 0.04 give 0.1*0.2 + 100*0.05 + 10*0.3 + 100*0.04 =
12.02; L_I 3.0, L_F 5.0 and gamma 0.2 give 0.8*3 + 0.2*5 = 3.4.
"""

from __future__ import annotations

from typing import TypeVar

import torch

T = TypeVar("T", torch.Tensor, float)


def image_level_loss(kl: T, recon: T, gan: T, cycle: T, cycle_kl: T | float = 0.0, *, weight_kl: float = 0.1,
                     weight_recon: float = 100.0, weight_gan: float = 10.0, weight_cycle: float = 100.0,
                     weight_cycle_kl: float = 0.0) -> T:
    """L_I = l0 KL + l1 |rec - x|_1 + l2 GAN_G + l3 |cyc - x|_1 (+ w KL of the cycle latents) [paper: 0.1, 100, 10,
    100; the cycle KL is UNIT's, not the paper's]."""
    return (weight_kl * kl + weight_recon * recon + weight_gan * gan + weight_cycle * cycle
            + weight_cycle_kl * cycle_kl)


def feature_level_loss(ce: T, triplet: T, weight_ce: float = 10.0, weight_triplet: float = 10.0) -> T:
    """L_F = l4 CE(H_c(f)) + l5 triplet(H_t(f)) [paper: l4 = l5 = 10]."""
    return weight_ce * ce + weight_triplet * triplet


def joint_objective(image_loss: T, feature_loss: T, gamma: float) -> T:
    """(1 - gamma) L_I + gamma L_F, 0 < gamma < 1 (Eq. 6), minimised over T_I and T_F together."""
    return (1.0 - gamma) * image_loss + gamma * feature_loss
