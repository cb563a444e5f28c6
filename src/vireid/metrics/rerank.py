"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), matching the authors' reference `re_ranking`.

All probes and gallery items form one pool P of N points with distance d. With N(p, k) the k
nearest neighbours of p in P (p itself counted, so k + 1 points; stable sort, ties by index):

- R(p, k)  = {g in N(p, k) : p in N(g, k)}                                 k-reciprocal set
- R*(p, k) = R(p, k) united with R(q, h) for every q in R(p, k) such that
             |R(p, k) and R(q, h)| > 2/3 |R(q, h)|,  h = k/2 rounded       expansion (Eq. 6)
- V_p[g]   = exp(-d(p, g)) for g in R*(p, k1), else 0; rows scaled to sum 1 (Eq. 7)
- V_p     <- mean of V_g over g in N(p, k2) (p included)                   local query expansion
- d_J(p,g) = 1 - sum_i min(V_p[i], V_g[i]) / sum_i max(V_p[i], V_g[i])      Jaccard distance
- d*(p,g)  = (1 - lambda) d_J(p, g) + lambda d(p, g)                        final distance

The paper leaves some arithmetic open; `variant` picks whose:

- "reference" (default): the authors' code (person-re-ranking `re_ranking`, copied by fast-reid,
  AGW, DDAG). d is the pool matrix transposed, each row divided by its own maximum (for the
  symmetric q_q / g_g inputs: row p of d over its maximum); the expansion needs strictly more than
  2/3 shared; h = k1/2 rounded half to even (NumPy's np.around: k1=5 gives 2); sum max is taken as
  2 - sum min (every row of V has mass 1). Distances are the squared Euclidean ones that code works
  on (its distance-matrix API squares Euclidean inputs; the feature API builds them squared).
  Departures: a stable argsort in place of its unstable one (exact ties rank by index), rounding-level
  negative distances clamped to 0, and an all-zero column of the pool kept at 0 rather than NaN.
- "vireid_v0": vireid's first reading of the paper, kept to reproduce earlier numbers: d divided
  by its global maximum, expansion at >= 2/3 shared, h = k1/2 rounded half up, sum max computed
  from the row sums.

Memory is O(N^2) for N = num_query + num_gallery.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..core import EvaluationError

RERANK_VARIANTS = ("reference", "vireid_v0")


def k_reciprocal_rerank(q_g: Any, q_q: Any, g_g: Any, k1: int = 20, k2: int = 6,
                        lambda_: float = 0.3, *, variant: str = "reference") -> torch.Tensor:
    """Re-ranked (num_query, num_gallery) distance d* = (1-lambda) d_J + lambda d (module docstring).

    Inputs are non-negative distances (e.g. squared Euclidean of L2-normalised features):
    query-gallery, query-query and gallery-gallery. `variant`: "reference" (the authors' code, the
    default) or "vireid_v0" (vireid's earlier arithmetic). Returns float32 on the inputs' device.
    """
    variant = _check_variant(variant)
    qg, qq, gg = (_tensor(x, n) for x, n in ((q_g, "q_g"), (q_q, "q_q"), (g_g, "g_g")))
    nq, ng = qg.shape
    if tuple(qq.shape) != (nq, nq) or tuple(gg.shape) != (ng, ng):
        raise EvaluationError(
            f"re-ranking needs q_g (Q, G), q_q (Q, Q) and g_g (G, G); got q_g {tuple(qg.shape)}, "
            f"q_q {tuple(qq.shape)}, g_g {tuple(gg.shape)}")
    if int(k1) < 1 or int(k2) < 1 or not 0.0 <= float(lambda_) <= 1.0:
        raise EvaluationError(f"re-ranking parameters must satisfy k1 >= 1, k2 >= 1, 0 <= lambda <= 1; "
                              f"got k1={k1}, k2={k2}, lambda={lambda_}")
    d = torch.cat([torch.cat([qq, qg], 1), torch.cat([qg.T, gg], 1)], 0).float()
    if not bool(torch.isfinite(d).all()) or bool((d < -1e-6).any()):
        raise EvaluationError("re-ranking needs finite, non-negative distances (use squared Euclidean "
                              "distances, not negative similarities)")
    d = d.clamp(min=0)
    if variant == "reference":
        # The reference divides every column by its maximum and transposes: row p of d.T over its max.
        d = d.T.contiguous()
        top_row = d.max(1, keepdim=True).values
        d = d / torch.where(top_row > 0, top_row, torch.ones_like(top_row))
    else:
        top = d.max()
        d = d / top if float(top) > 0 else d
    order = torch.argsort(d, dim=1, stable=True)
    _, r_star = k_reciprocal_sets(d, k1, order=order, variant=variant)
    v = torch.where(r_star, torch.exp(-d), torch.zeros((), device=d.device))
    v = v / v.sum(1, keepdim=True).clamp(min=1e-12)
    v = _query_expansion(v, order, int(k2))
    dj = _jaccard(v[:nq], v[nq:], unit_mass=variant == "reference")
    return (1.0 - float(lambda_)) * dj + float(lambda_) * d[:nq, nq:]


def k_reciprocal_sets(d: torch.Tensor, k1: int, order: torch.Tensor | None = None, *,
                      variant: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (N, N) masks of R(p, k1) and of its expansion R*(p, k1) over a square distance d.

    `variant` sets the k1/2 rounding and the 2/3 test as in k_reciprocal_rerank (module docstring).
    """
    variant = _check_variant(variant)
    n = int(d.shape[0])
    if order is None:
        order = torch.argsort(d, dim=1, stable=True)
    k = min(int(k1), n - 1)
    half = round(int(k1) / 2) if variant == "reference" else int(math.floor(int(k1) / 2 + 0.5))
    kh = min(half, n - 1)
    nbr = order[:, :k + 1]
    nbr_h = order[:, :kh + 1]
    r1 = _reciprocal(nbr, n)
    rh = _reciprocal(nbr_h, n)
    in_r1 = r1.gather(1, nbr)  # (N, k+1): is nbr[p, j] in R(p, k1)
    in_rh = rh.gather(1, nbr_h)  # (N, kh+1): is nbr_h[q, l] in R(q, k1/2)
    cand_members = nbr_h[nbr]  # (N, k+1, kh+1): R(q, k1/2) candidates of each q = nbr[p, j]
    cand_mask = in_rh[nbr]
    rows = torch.arange(n, device=d.device)[:, None, None].expand_as(cand_members)
    shared = (cand_mask & r1[rows, cand_members]).sum(-1)
    size = cand_mask.sum(-1)
    enough = 3 * shared > 2 * size if variant == "reference" else 3 * shared >= 2 * size
    ok = in_r1 & enough
    add = ok[..., None] & cand_mask
    r_star = r1.clone()
    r_star[rows[add], cand_members[add]] = True
    return r1, r_star


def _check_variant(variant: str) -> str:
    if variant not in RERANK_VARIANTS:
        raise EvaluationError(f"re-ranking variant must be one of {RERANK_VARIANTS}, got {variant!r}")
    return variant


def _reciprocal(nbr: torch.Tensor, n: int) -> torch.Tensor:
    """R[p, g] = g in N(p) and p in N(g), from neighbour index lists."""
    member = torch.zeros((n, n), dtype=torch.bool, device=nbr.device)
    member.scatter_(1, nbr, True)
    return member & member.T


def _query_expansion(v: torch.Tensor, order: torch.Tensor, k2: int, rows: int = 512) -> torch.Tensor:
    """V_p <- mean of V_g over the k2 nearest g of p (p itself included)."""
    k2 = min(k2, int(v.shape[0]))
    if k2 <= 1:
        return v
    out = torch.empty_like(v)
    for s in range(0, int(v.shape[0]), rows):
        out[s:s + rows] = v[order[s:s + rows, :k2]].mean(1)
    return out


def _jaccard(vq: torch.Tensor, vg: torch.Tensor, unit_mass: bool = False,
             budget: int = 64 * 2**20) -> torch.Tensor:
    """1 - sum min / sum max between rows of vq and vg, summing only over each query's support.

    sum max = sum V_q + sum V_g - sum min, or 2 - sum min with `unit_mass` (the reference's form).
    """
    nq, ng = int(vq.shape[0]), int(vg.shape[0])
    support = int((vq > 0).sum(1).max()) if nq else 0
    support = max(support, 1)
    sums_g = vg.sum(1)
    vg_t = vg.T.contiguous()  # (N, G): column i of every gallery vector
    rows = max(1, budget // (4 * support * max(ng, 1)))
    out = torch.empty((nq, ng), dtype=vq.dtype, device=vq.device)
    for s in range(0, nq, rows):
        vals, idx = vq[s:s + rows].topk(support, dim=1)  # zeros past the support add nothing to sum min
        mins = torch.minimum(vals[:, :, None], vg_t[idx]).sum(1)
        if unit_mass:
            maxs = 2.0 - mins
        else:
            maxs = vq[s:s + rows].sum(1, keepdim=True) + sums_g[None, :] - mins
        out[s:s + rows] = 1.0 - mins / maxs.clamp(min=1e-12)
    return out


def _tensor(x: Any, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if t.dim() != 2:
        raise EvaluationError(f"re-ranking input {name} must be 2-d, got shape {tuple(t.shape)}")
    return t.float()
