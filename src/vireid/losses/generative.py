"""Image-generation losses: LSGAN, L1 reconstruction, the KL alignment terms of JSIA-ReID (spec §3.4).

Also UNIT's (D2RL's) latent KL term `unit_kl` and the log-likelihood ("nsgan") GAN losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..core import TrainingError
from ._precision import float32_math


def _scales(where: str, outs: Sequence[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    scales = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    if not scales:
        raise TrainingError(f"{where}: got no discriminator outputs; expected one tensor per scale")
    return [s.float() if s.is_floating_point() and s.dtype != torch.float64 else s for s in scales]


def _paired_scales(where: str, fake_outs: Sequence[torch.Tensor] | torch.Tensor,
                   real_outs: Sequence[torch.Tensor] | torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    fakes, reals = _scales(where, fake_outs), _scales(where, real_outs)
    if len(fakes) != len(reals):
        raise TrainingError(f"{where}: {len(fakes)} fake scales but {len(reals)} real scales; "
                            "pass the outputs of the same discriminator for both")
    return fakes, reals


def lsgan_discriminator_loss(fake_outs: Sequence[torch.Tensor] | torch.Tensor,
                             real_outs: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """L_D = sum_s [mean(D_s(fake)^2) + mean((D_s(real) - 1)^2)]; lists of per-scale outputs -> scalar.

    The caller computes fake_outs on detached fakes. A single tensor counts as one scale.
    """
    fakes, reals = _paired_scales("lsgan_discriminator_loss", fake_outs, real_outs)
    with torch.autocast(device_type=fakes[0].device.type, enabled=False):
        terms = [f.pow(2).mean() + (r - 1.0).pow(2).mean() for f, r in zip(fakes, reals, strict=True)]
        return torch.stack(terms).sum()


def lsgan_generator_loss(fake_outs: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """L_G = sum_s mean((D_s(fake) - 1)^2); list of per-scale outputs -> scalar."""
    fakes = _scales("lsgan_generator_loss", fake_outs)
    with torch.autocast(device_type=fakes[0].device.type, enabled=False):
        return torch.stack([(f - 1.0).pow(2).mean() for f in fakes]).sum()


def nsgan_discriminator_loss(fake_outs: Sequence[torch.Tensor] | torch.Tensor,
                             real_outs: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """L_D = sum_s [mean(-log(1 - sigmoid(D_s(fake)))) + mean(-log sigmoid(D_s(real)))]; logits in, scalar out.

    UNIT's 'nsgan' (BCE on sigmoid outputs), computed stably from the logits. The caller computes fake_outs
    on detached fakes. A single tensor counts as one scale.
    """
    fakes, reals = _paired_scales("nsgan_discriminator_loss", fake_outs, real_outs)
    with torch.autocast(device_type=fakes[0].device.type, enabled=False):
        terms = [F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
                 + F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) for f, r in zip(fakes, reals, strict=True)]
        return torch.stack(terms).sum()


def nsgan_generator_loss(fake_outs: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """L_G = sum_s mean(-log sigmoid(D_s(fake))) (non-saturating); list of per-scale logits -> scalar."""
    fakes = _scales("nsgan_generator_loss", fake_outs)
    with torch.autocast(device_type=fakes[0].device.type, enabled=False):
        return torch.stack([F.binary_cross_entropy_with_logits(f, torch.ones_like(f)) for f in fakes]).sum()


@float32_math
def unit_kl(mu: torch.Tensor) -> torch.Tensor:
    """mean(mu^2) over every element (UNIT's KL term: KL(N(mu, I) || N(0, I)) = sum(mu^2) / 2, as a mean)."""
    if mu.numel() == 0:
        raise TrainingError("unit_kl: got an empty latent; pass the encoder's mean code")
    return mu.pow(2).mean()


@float32_math
def l1_reconstruction(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |x - target| over every element (nn.L1Loss); same shapes required, no broadcasting."""
    if x.shape != target.shape:
        raise TrainingError(f"l1_reconstruction: shapes differ, {tuple(x.shape)} vs {tuple(target.shape)}; "
                            "compare a reconstruction with the tensor it reconstructs")
    return (x - target).abs().mean()


def _probs(where: str, logits: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() != 2 or logits.shape != target_logits.shape:
        raise TrainingError(f"{where}: expected two (B, K) logit tensors of one shape, got "
                            f"{tuple(logits.shape)} and {tuple(target_logits.shape)}")
    return F.softmax(logits, dim=1), F.softmax(target_logits.detach(), dim=1)


@float32_math
def symmetric_kl(logits: torch.Tensor, target_logits: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """mean_i [sum_k q log(eps + q / (p + eps)) + sum_k p log(eps + p / (q + eps))], p = softmax(logits).

    q = softmax(target_logits.detach()): no gradient reaches the target. JSIA's kl_loss (the code's
    instance-level alignment, with logits of the fake and target_logits of the real image); (B, K) -> scalar.
    """
    p, q = _probs("symmetric_kl", logits, target_logits)
    per_row = (q * torch.log(eps + q / (p + eps))).sum(dim=1) + (p * torch.log(eps + p / (q + eps))).sum(dim=1)
    return per_row.mean()


@float32_math
def one_way_kl(logits: torch.Tensor, target_logits: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KL(q || p) = mean_i sum_k q log(eps + q / (p + eps)), p = softmax(logits), q = softmax(target.detach()).

    The first term of `symmetric_kl` alone: the one-way KL the paper writes (Eq. 11), with the code's guards.
    """
    p, q = _probs("one_way_kl", logits, target_logits)
    return (q * torch.log(eps + q / (p + eps))).sum(dim=1).mean()
