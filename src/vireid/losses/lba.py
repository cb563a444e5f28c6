"""LbA's losses (docs/reference/methods.md#lba-5-2, #lba-5-3): ID consistency, dense triplet and the total objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DT_REDUCTIONS = ("official_1p7", "per_sample")
_PAIRWISE_EPS = 1e-6  # torch.pairwise_distance's eps, added to the difference before the norm


def dense_triplet_map(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                      margin: float = 0.3) -> torch.Tensor:
    """l(h, w) = max(0, m + |a - p + 1e-6|_2 - |a - n + 1e-6|_2), norms over channels: (B, C, H, W) x3 -> (B, H, W)."""
    if not (anchor.shape == positive.shape == negative.shape) or anchor.dim() != 4:
        raise ValueError(f"dense_triplet_map expects three (B, C, H, W) maps of one shape, got "
                         f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}")
    a, p, n = anchor.float(), positive.float(), negative.float()
    d_ap = (a - p + _PAIRWISE_EPS).norm(p=2, dim=1)
    d_an = (a - n + _PAIRWISE_EPS).norm(p=2, dim=1)
    return F.relu(margin + d_ap - d_an)


def dense_triplet(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                  attention: torch.Tensor | None, margin: float = 0.3,
                  reduction: str = "official_1p7") -> torch.Tensor:
    """Co-attention-weighted dense triplet loss; l = `dense_triplet_map`, A = attention (B, 1, H, W).

    official_1p7: mean_{h,w}[ mean_i A_i(h,w) * mean_j l_j(h,w) ] -- what PyTorch 1.7's broadcast of
    (B,1,H,W) * (B,H,W) to (B,B,H,W) computed in the official code (the published numbers);
    per_sample: mean_{i,h,w} A_i(h,w) l_i(h,w) -- the paper's formula. attention=None means A = 1
    (the ablation without co-attention), where the two reductions agree.
    """
    if reduction not in DT_REDUCTIONS:
        raise ValueError(f"dense triplet reduction must be one of {DT_REDUCTIONS}, got {reduction!r}")
    loss = dense_triplet_map(anchor, positive, negative, margin)
    if attention is None:
        return loss.mean()
    a = attention.float().reshape(loss.shape)  # (B, 1, H, W) -> (B, H, W)
    if reduction == "per_sample":
        return (a * loss).mean()
    return (a.mean(dim=0) * loss.mean(dim=0)).mean()


def id_consistency(logits_layer3: torch.Tensor | None, logits_layer4: torch.Tensor | None,
                   labels: torch.Tensor) -> torch.Tensor:
    """L_IC = CE(cls(f_hat+_layer3 -> layer4)) + CE(cls(f_hat+_layer4)); labels are the anchors'."""
    from .classification import cross_entropy

    terms = [cross_entropy(z, labels) for z in (logits_layer3, logits_layer4) if z is not None]
    if not terms:
        raise ValueError("id_consistency needs the logits of at least one aligned layer")
    return torch.stack(terms).sum()


def lba_objective(ce: torch.Tensor, triplet: torch.Tensor, ic: torch.Tensor, dt: torch.Tensor,
                  ic_weight: float = 1.0, dt_weight: float = 0.5) -> torch.Tensor:
    """L = L_ID + lambda_IC L_IC + lambda_DT L_DT, L_ID = CE + triplet (lambda_IC = 1, lambda_DT = 0.5)."""
    return ce + triplet + ic_weight * ic + dt_weight * dt
