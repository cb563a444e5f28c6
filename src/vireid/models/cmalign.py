"""CMAlign (LbA, ICCV'21): parameter-free dense cross-modal alignment of feature maps (training only).

Mechanics (docs/reference/methods.md#lba-5-1), for an anchor map f_a and a target map f_t, both (B, C, H, W):

- C(p, q) = cos(f_a(p), f_t(q)) over channels; P(p, .) = softmax_q(beta * (C(p, q) - max_q C(p, q))), beta = 50;
- W(p) = sum_q P(p, q) f_t(q) (soft warping);
- M = per-image min-max of the channel L2 norm of f_a, (x - min) / (max - min + 1e-12), detached;
- f_hat = M * W + (1 - M) * f_a (reconstruction), for the positive and for the negative target;
- A = minmax(M_a * (P_pos M_t)) (co-attention, positives only), detached.

Gradients flow through P and f_t; only the masks are detached. The module has no parameters.
`cross_modal_pairs` draws the targets: each anchor's positive is in the other modality with the
same identity (a random permutation of that identity's block), its negative in the other modality
from a distinct other identity per anchor of a block (one image each, at permuted positions).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Modality, TrainingError

TEMPERATURE = 50.0  # beta = 1 / tau, tau = 0.02 (official `temperature=50`)
_EPS = 1e-12


# --------------------------------------------------------------------------- the pieces


def feature_similarity(anchor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """C[b, p, q] = <f_a(p), f_t(q)> / (|f_a(p)| |f_t(q)|): (B, C, H, W) x2 -> (B, HW, HW)."""
    a = F.normalize(anchor.flatten(2), dim=1)
    t = F.normalize(target.flatten(2), dim=1)
    return torch.bmm(a.transpose(1, 2), t)


def matching_probability(similarity: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """P[b, p, q] = softmax_q(beta * (C[b, p, q] - max_q C[b, p, q])): (B, N, N) -> (B, N, N)."""
    shifted = similarity - similarity.max(dim=-1, keepdim=True).values
    return torch.softmax(temperature * shifted, dim=-1)


def soft_warp(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """W[b, :, p] = sum_q P[b, p, q] f_t[b, :, q]: (B, N, N), (B, C, H, W) -> (B, C, H, W)."""
    b, c, h, w = target.shape
    return torch.bmm(target.flatten(2), prob.transpose(1, 2)).view(b, c, h, w)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    # per image over every position: (x - min) / (max - min + 1e-12)
    flat = x.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / (flat.max(dim=1, keepdim=True).values + _EPS)
    return flat.view_as(x)


def person_mask(feat: torch.Tensor) -> torch.Tensor:
    """M = minmax_{h,w}(|f(:, h, w)|_2), detached: (B, C, H, W) -> (B, 1, H, W) in [0, 1]."""
    return _minmax(feat.detach().norm(p=2, dim=1, keepdim=True))


def reconstruct(mask: torch.Tensor, warped: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """f_hat = M * W + (1 - M) * f_a (masked positions take the warped target)."""
    return mask * warped + (1.0 - mask) * anchor


def coattention(prob: torch.Tensor, mask_anchor: torch.Tensor, mask_target: torch.Tensor) -> torch.Tensor:
    """A = minmax(M_a * (P M_t)), detached: (B, N, N), (B, 1, H, W) x2 -> (B, 1, H, W)."""
    b, _, h, w = mask_anchor.shape
    carried = torch.bmm(prob.detach(), mask_target.detach().flatten(1).unsqueeze(-1)).view(b, 1, h, w)
    return _minmax(mask_anchor.detach() * carried)


# --------------------------------------------------------------------------- pairing


class Pairs(NamedTuple):
    """Target batch positions of every anchor: `positive[i]`, `negative[i]` (both (B,) long)."""

    positive: torch.Tensor
    negative: torch.Tensor | None  # None: no negative targets (CMAlign then reconstructs the positive only)


def identity_blocks(labels: torch.Tensor, modalities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible, infrared) batch positions, each (P, K): row b holds identity b's images of that modality.

    Identities are in ascending label order, positions within a row in batch order. Raises
    TrainingError unless every identity in the batch has the same number K of visible and of
    infrared images.
    """
    labels = labels.reshape(-1)
    codes = modalities.reshape(-1).long()
    if labels.numel() != codes.numel():
        raise TrainingError(f"CMAlign pairing: got {labels.numel()} labels for {codes.numel()} modality codes")
    bad = (codes != Modality.VISIBLE.code) & (codes != Modality.INFRARED.code)
    if bool(bad.any()):
        raise TrainingError(f"CMAlign pairing: modality codes must be 0 (visible) or 1 (infrared), "
                            f"found {codes[bad][:5].tolist()}")
    ids = torch.unique(labels)
    rows: dict[int, list[torch.Tensor]] = {Modality.VISIBLE.code: [], Modality.INFRARED.code: []}
    counts = set()
    for pid in ids.tolist():
        for code, name in ((Modality.VISIBLE.code, "visible"), (Modality.INFRARED.code, "infrared")):
            pos = torch.nonzero((labels == pid) & (codes == code)).flatten()
            rows[code].append(pos)
            counts.add(pos.numel())
            if pos.numel() == 0:
                raise TrainingError(
                    f"CMAlign pairing: identity label {pid} has no {name} image in the batch; LbA needs every "
                    "identity in both modalities (use sampler.kind=agw, which draws num_pos of each)")
        n_vis, n_ir = rows[Modality.VISIBLE.code][-1].numel(), rows[Modality.INFRARED.code][-1].numel()
        if n_vis != n_ir:
            raise TrainingError(
                f"CMAlign pairing: identity label {pid} has {n_vis} visible but {n_ir} infrared images in the batch; "
                "LbA needs the same number of each (use sampler.kind=agw)")
    if len(counts) != 1:
        raise TrainingError(
            f"CMAlign pairing: identities have different numbers of images per modality in the batch "
            f"({sorted(counts)}); LbA needs exactly num_pos of each per identity (use sampler.kind=agw)")
    return torch.stack(rows[Modality.VISIBLE.code]), torch.stack(rows[Modality.INFRARED.code])


def _permutations(rows: int, size: int, generator: torch.Generator) -> torch.Tensor:
    # one uniform random permutation of range(size) per row
    return torch.rand((rows, size), generator=generator).argsort(dim=1)


def _direction(anchor_blocks: torch.Tensor, target_blocks: torch.Tensor, generator: torch.Generator,
               positive: torch.Tensor, negative: torch.Tensor) -> None:
    p, k = anchor_blocks.shape
    perm = _permutations(p, k, generator)
    positive[anchor_blocks] = torch.gather(target_blocks, 1, perm)
    # K distinct other identities per block, in random order: shuffle the other P-1, keep the first K
    scores = torch.rand((p, p), generator=generator)
    scores.fill_diagonal_(float("inf"))
    other = scores.argsort(dim=1)[:, :k]
    slot = _permutations(p, k, generator)
    negative[anchor_blocks] = target_blocks[other, slot]


def cross_modal_pairs(labels: torch.Tensor, modalities: torch.Tensor, generator: torch.Generator) -> Pairs:
    """Positive and negative target positions, in the other modality, for every image of the batch.

    With P identities of K images per modality: the K visible anchors of identity b take a random
    permutation of identity b's K infrared images as positives, and one infrared image each from K
    distinct identities != b (random identities, random permuted positions) as negatives; the same
    independently for infrared anchors. Needs P - 1 >= K. All draws come from `generator` (CPU).
    """
    # index bookkeeping on the CPU: one device sync instead of one per identity
    vis, ir = identity_blocks(labels.detach().cpu(), modalities.detach().cpu())
    p, k = vis.shape
    if p - 1 < k:
        raise TrainingError(
            f"CMAlign pairing: the batch has {p} identities of {k} images per modality, but each identity's "
            f"{k} anchors need {k} distinct other identities as negatives (P - 1 >= K); "
            f"raise sampler.num_ids to at least {k + 1} or lower sampler.num_pos")
    n = labels.numel()
    positive = torch.full((n,), -1, dtype=torch.long)
    negative = torch.full((n,), -1, dtype=torch.long)
    _direction(vis, ir, generator, positive, negative)
    _direction(ir, vis, generator, positive, negative)
    return Pairs(positive.to(labels.device), negative.to(labels.device))


# --------------------------------------------------------------------------- the module


class AlignOutput(NamedTuple):
    """What CMAlign computes for one feature map; tensors are float32."""

    recon_pos: torch.Tensor  # (B, C, H, W) reconstruction from the positive target
    recon_neg: torch.Tensor | None  # (B, C, H, W) from the negative target (None without negatives)
    coattention: torch.Tensor  # (B, 1, H, W) detached, in [0, 1]
    mask: torch.Tensor  # (B, 1, H, W) detached anchor person mask
    prob_pos: torch.Tensor  # (B, HW, HW) matching probability to the positive target


class CMAlign(nn.Module):
    """Parameter-free alignment: anchor map + target positions -> reconstructions, masks, co-attention.

    `forward(feat, pairs)` uses `feat[pairs.positive]` / `feat[pairs.negative]` as targets of each
    anchor `feat[i]`; the math runs in float32 (the beta = 50 softmax is too sharp for half precision).
    """

    def __init__(self, temperature: float = TEMPERATURE) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"CMAlign temperature (beta) must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def align(self, anchor: torch.Tensor, target: torch.Tensor, mask_anchor: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, matching probability) of `anchor` from `target`."""
        prob = matching_probability(feature_similarity(anchor, target), self.temperature)
        return reconstruct(mask_anchor, soft_warp(prob, target), anchor), prob

    def forward(self, feat: torch.Tensor, pairs: Pairs) -> AlignOutput:
        device_type = feat.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            feat = feat.float()
            mask = person_mask(feat)
            recon_pos, prob_pos = self.align(feat, feat[pairs.positive], mask)
            co = coattention(prob_pos, mask, mask[pairs.positive])
            recon_neg = None
            if pairs.negative is not None:
                recon_neg, _ = self.align(feat, feat[pairs.negative], mask)
        return AlignOutput(recon_pos, recon_neg, co, mask, prob_pos)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"
