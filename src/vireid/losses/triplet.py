"""Triplet-loss variants: batch-hard, AGW's weighted regularised, CAJ's squared form, cross-modality.

All take features (B, D) and labels (B,) and return a scalar tensor; the math runs in float32
even under autocast. Distances are Euclidean sqrt(max(d^2, 1e-12)) unless stated otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import Modality
from ..utils.tensors import modality_codes
from ._precision import float32_math
from .distance import pairwise_euclidean


def _label_masks(labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = labels.reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"got {labels.numel()} labels for {n} features")
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    return same, ~same


def hard_example_mining(dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: d_ap = max over `pos` of dist (-inf if none), d_an = min over `neg` (+inf if none)."""
    d_ap = dist.masked_fill(~pos, float("-inf")).max(dim=1).values
    d_an = dist.masked_fill(~neg, float("inf")).min(dim=1).values
    return d_ap, d_an


@float32_math
def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """mean_a max(0, max_p d(a,p) - min_n d(a,n) + m) over the whole batch (Hermans et al.).

    features (B, D), labels (B,) -> scalar. Positives are same-label samples (the anchor itself
    included, at distance ~1e-6), negatives the other labels, from either modality. An anchor
    with no negative contributes 0 (it still counts in the mean, as in the reference code).
    """
    same, diff = _label_masks(labels, features.shape[0])
    d_ap, d_an = hard_example_mining(pairwise_euclidean(features, features), same, diff)
    return F.relu(d_ap - d_an + margin).mean()


def _softmax_weights(dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # AGW subtracts the row max of dist*mask (the zeros outside the mask take part, as in the
    # reference code) and adds 1e-6 to the normaliser.
    max_v = (dist * mask).max(dim=1, keepdim=True).values
    e = (dist - max_v).exp() * mask
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


def weighted_pair_distances(features: torch.Tensor, labels: torch.Tensor,
                            alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(d_ap, d_an) per anchor: softmax(alpha*d)-weighted positives, softmax(-alpha*d)-weighted negatives."""
    same, _ = _label_masks(labels, features.shape[0])
    pos = same.float()
    neg = 1.0 - pos
    dist = pairwise_euclidean(features, features)
    d_ap, d_an = dist * pos, dist * neg
    w_ap = _softmax_weights(d_ap * alpha, pos)
    w_an = _softmax_weights(-d_an * alpha, neg)
    return (d_ap * w_ap).sum(dim=1), (d_an * w_an).sum(dim=1)


@float32_math
def weighted_regularized_triplet(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AGW's WRT: mean_a log(1 + exp(-(d_an - d_ap))) with softmax-weighted d_ap, d_an.

    d_ap = sum_p w_ap d(a,p), w_ap = softmax over positives of d (anchor itself included);
    d_an = sum_n w_an d(a,n), w_an = softmax over negatives of -d; both max-subtracted with
    +1e-6 in the denominator. features (B, D), labels (B,) -> scalar.
    """
    d_ap, d_an = weighted_pair_distances(features, labels)
    return F.soft_margin_loss(d_an - d_ap, torch.ones_like(d_ap))


@float32_math
def caj_triplet(features: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """CAJ's enhanced squared difference: SoftMargin(min(gamma (d_ap - d_an)^2, 88), y).

    d_ap, d_an as in WRT with alpha scaling the distances inside the softmax weights;
    y1 = [d_ap > d_an], y = -(y1 + (y1 - 1)), i.e. y = -1 for a violated triplet (the loss grows
    with the squared gap) and +1 for a satisfied one (it shrinks). features (B, D) -> scalar.
    """
    d_ap, d_an = weighted_pair_distances(features, labels, alpha)
    diff = (gamma * (d_ap - d_an).pow(2)).clamp(max=88.0)
    y1 = (d_ap > d_an).float()
    y = -(y1 + (y1 - 1.0))
    return F.soft_margin_loss(diff, y)


@float32_math
def cross_modality_triplet(features: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor,
                           margin: float, squared: bool = False, mining: str = "hard",
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """(L_vis + L_ir) / 2, L_m = mean over anchors a of modality m of max(0, d(a,p) - d(a,n) + margin).

    p and n come from the other modality: p has a's label, n another label. mining="hard" takes
    the farthest p and the closest n (JSIA: Euclidean, margin 0.3); mining="random" draws p and n
    uniformly from `generator` (cmGAN: squared Euclidean, margin 1.4). d is Euclidean, or squared
    Euclidean with `squared`. Anchors lacking a cross-modal positive or negative are left out; a
    direction with no usable anchor is left out of the average (0 if neither has one).
    features (B, D), labels (B,), modalities (B,) Modality codes -> scalar.
    """
    n = features.shape[0]
    codes = modality_codes(modalities, n, features.device, per_item=True, what=f"{n} features")
    same, diff = _label_masks(labels, n)
    cross = codes.unsqueeze(0) != codes.unsqueeze(1)
    pos, neg = same & cross, diff & cross
    dist = pairwise_euclidean(features, features, squared=squared)
    if mining == "hard":
        d_ap, d_an = hard_example_mining(dist, pos, neg)
    elif mining == "random":
        if generator is None:
            raise ValueError("cross_modality_triplet(mining='random') needs a seeded torch.Generator "
                             "(generator=...), so the triplets are reproducible")
        scores = torch.rand((n, n), generator=generator, device=generator.device).to(dist.device)
        p_idx = scores.masked_fill(~pos, -1.0).argmax(dim=1, keepdim=True)
        n_idx = scores.masked_fill(~neg, -1.0).argmax(dim=1, keepdim=True)
        d_ap, d_an = dist.gather(1, p_idx).squeeze(1), dist.gather(1, n_idx).squeeze(1)
    else:
        raise ValueError(f"mining must be 'hard' or 'random', got {mining!r}")
    usable = pos.any(dim=1) & neg.any(dim=1)
    per_direction = []
    for m in (Modality.VISIBLE, Modality.INFRARED):
        rows = usable & (codes == m.code)
        if bool(rows.any()):
            per_direction.append(F.relu(d_ap[rows] - d_an[rows] + margin).mean())
    if not per_direction:
        return features.sum() * 0.0  # keeps the graph so backward() still works
    return torch.stack(per_direction).mean()
