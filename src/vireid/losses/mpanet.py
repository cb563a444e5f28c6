"""MPANet's losses (docs/reference/methods.md#mpanet-4-2): separation, center cluster, mutual-mean KL.

All run in float32 inside autocast regions. Each docstring states the formula; where the official
code and the paper disagree, the code's formula is the default and the paper's is an option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import Modality
from ..utils.tensors import modality_codes
from ._precision import float32_math

KL_FORMS = ("code", "paper")


@float32_math
def separation_loss(masks: torch.Tensor) -> torch.Tensor:
    """L_sep = sum_b sum_{i<j} <M_bi, M_bj> / (B * l(l-1)/2) over the flattened pattern maps.

    masks: (B, l, H, W) or (B, l, HW) with l >= 2 -> scalar. Penalises overlapping pattern maps
    (paper Eq. 7, averaged over the batch as the code does).
    """
    if masks.dim() not in (3, 4):
        raise ValueError(f"separation_loss expects masks of shape (B, l, H, W) or (B, l, HW), got {tuple(masks.shape)}")
    b, n_maps = masks.shape[:2]
    if n_maps < 2:
        raise ValueError(f"separation_loss needs at least 2 pattern maps, got l={n_maps}")
    m = masks.reshape(b, n_maps, -1)
    gram = torch.bmm(m, m.transpose(1, 2))
    return torch.triu(gram, diagonal=1).sum() / (b * n_maps * (n_maps - 1) / 2)


def _safe_norm(diff: torch.Tensor) -> torch.Tensor:
    """||x||_2 over the last dim; the value of a plain sqrt, with a zero (not NaN) gradient at 0."""
    sq = diff.pow(2).sum(-1)
    positive = sq > 0
    return torch.where(positive, sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt(), torch.zeros_like(sq))


@float32_math
def center_cluster_terms(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.7
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of the center-cluster loss: (pull, push); see `center_cluster_loss`."""
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"center_cluster_loss expects features (B, D) and labels (B,), got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    ids, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if ids.numel() < 2:
        raise ValueError(f"center_cluster_loss needs at least 2 identities in the batch, got {ids.numel()}")
    centers = torch.zeros(ids.numel(), features.shape[1], dtype=features.dtype, device=features.device)
    centers = centers.index_add(0, inverse, features) / counts.unsqueeze(1).to(features.dtype)
    pull = _safe_norm(features - centers[inverse]).mean()
    # The reference's pairwise distance: sqrt(clamp(|a|^2 + |b|^2 - 2ab, 1e-12)).
    sq = centers.pow(2).sum(1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * centers @ centers.t()
    dist = d2.clamp(min=1e-12).sqrt()
    hinge = (margin - dist).clamp(min=0.0)
    # Mean over the batch entries j of another identity = count-weighted mean over the other centers.
    weights = counts.to(features.dtype).unsqueeze(0).expand(ids.numel(), -1).clone()
    weights.fill_diagonal_(0.0)
    push = ((hinge * weights).sum(1) / weights.sum(1)).mean()
    return pull, push


def center_cluster_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.7) -> torch.Tensor:
    """L_cc = mean_i ||f_i - h_{y_i}|| + mean_a mean_{j: y_j != a} [rho - ||h_a - h_{y_j}||]_+ .

    features (B, D) pre-BN, labels (B,) -> scalar; h_a = the mean feature of identity a in the batch
    (both modalities pooled), rho = `margin`. The second term takes one anchor per identity and
    averages the hinge over the batch entries of every other identity, which is what the reference
    computes with anchors 0, k, 2k, ... on identity-contiguous batches of k images per identity, but
    here it follows the labels, so any batch order gives the same value. With equal counts per
    identity it is paper Eq. 13: 2/(P(P-1)) sum_{a<b} [rho - ||h_a - h_b||]_+ .
    """
    pull, push = center_cluster_terms(features, labels, margin)
    return pull + push


@float32_math
def mutual_mean_kl(logits: torch.Tensor, mean_logits: torch.Tensor, modalities: torch.Tensor | None = None,
                   faithful_to: str = "code") -> torch.Tensor:
    """Mutual mean learning: the trainable classifier P against the other modality's mean classifier Q.

    logits (N, K): the trainable modality-specific classifier (C_v on visible, C_r on infrared
    images); mean_logits (N, K): the other modality's mean classifier on the same images (E[C_r] on
    visible, E[C_v] on infrared), treated as a constant. P = softmax(logits), Q = softmax(mean_logits).

    - "code" (official code, KLDivLoss(log Q, P, 'batchmean')): (1/N) sum_i sum_c P_ic log(P_ic / Q_ic)
      = KL(P || Q) averaged over all n + m images.
    - "paper" (Eq. 10): (1/n) sum_{i visible} KL(Q_i || P_i) + (1/m) sum_{i infrared} KL(Q_i || P_i),
      needs `modalities` (N,) codes; an absent modality contributes 0.
    Gradients flow into `logits` only.
    """
    if faithful_to not in KL_FORMS:
        raise ValueError(f"mutual_mean_kl: faithful_to must be one of {KL_FORMS}, got {faithful_to!r}")
    if logits.shape != mean_logits.shape or logits.dim() != 2:
        raise ValueError(f"mutual_mean_kl expects two (N, K) logit tensors of one shape, got "
                         f"{tuple(logits.shape)} and {tuple(mean_logits.shape)}")
    log_p = F.log_softmax(logits, dim=1)
    log_q = F.log_softmax(mean_logits.detach(), dim=1)
    if faithful_to == "code":
        return (log_p.exp() * (log_p - log_q)).sum() / logits.shape[0]
    if modalities is None:
        raise ValueError("mutual_mean_kl(faithful_to='paper') needs the modality code of each row")
    codes = modality_codes(modalities, logits.shape[0], logits.device, per_item=True,
                           what=f"{logits.shape[0]} rows of mutual_mean_kl")
    per_row = (log_q.exp() * (log_q - log_p)).sum(1)
    total = logits.new_zeros(())
    for modality in (Modality.VISIBLE, Modality.INFRARED):
        rows = codes == modality.code
        if bool(rows.any()):
            total = total + per_row[rows].mean()
    return total
