"""CMC, mAP and mINP of ranked galleries under the VI-ReID filter rules (docs/reference/protocols.md#sec-3).

For one query, L is the gallery sorted by distance ascending (stable sort, so ties keep gallery
order) with the rule's filtered items removed; m_k marks a true match at 1-based position k of L:

- AP  = (1/|G|) * sum_{k: m_k=1} (sum_{j<=k} m_j) / k          (non-interpolated, image level)
- INP = |G| / R_hard, R_hard = position of the last match in L  (TPAMI survey)
- CMC image level: 1 from the first match on; identity level: 1 from the position of the query
  identity in L with every identity kept at its first occurrence only.

Queries without any match in L are invalid and skipped by every average. A query's CMC row is
padded with its last value (1 for a valid query) up to `max_rank`, so small galleries never crash
(pitfall P5, docs/reference/protocols.md#p5). The work is vectorised in torch over chunks of queries, on the
device of `dist`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import torch

from ..core import CMC_KINDS, RULES, EvaluationError

REPORT_RANKS = (1, 5, 10, 20)

# Bytes of working memory one (query, gallery) cell needs inside `_rank_chunk`: about ten int64
# matrices (order, pids, cumsums, positions, ...) plus a few boolean and float64 ones.
_BYTES_PER_CELL = 112
_CPU_BUDGET = 512 * 2**20
_CUDA_BUDGET = 2 * 2**30
# "auto": rank matches by counting when rows have few matches, else sort; "sort"/"count" force
# one way (tests check that both agree with a per-query reference loop).
_STRATEGY = "auto"


@dataclass
class RankingMetrics:
    """CMC curve, mAP and mINP over valid queries, plus per-query AP, INP and first-hit rank."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    ap: np.ndarray = field(repr=False)
    inp: np.ndarray = field(repr=False)
    first_hit: np.ndarray = field(repr=False)
    num_queries: int = 0
    num_gallery: int = 0
    requested_max_rank: int = 20

    def rank(self, r: int) -> float | None:
        """CMC at 1-based rank r; past the gallery size the curve stays at its last value.

        None when r exceeds the `max_rank` asked for (the value was not computed).
        """
        if r < 1:
            raise ValueError(f"rank must be >= 1, got {r}")
        if r > self.requested_max_rank:
            return None
        # max_rank was clipped to the gallery size: every item is in the list by then, so the
        # curve is flat (padding rule P5, docs/reference/protocols.md#p5) and its last value is exact.
        return float(self.cmc[min(r, len(self.cmc)) - 1])

    def summary(self) -> dict[str, float | None]:
        """rank1, rank5, rank10, rank20, mAP, mINP as fractions in [0, 1]."""
        out: dict[str, float | None] = {f"rank{r}": self.rank(r) for r in REPORT_RANKS}
        out["mAP"] = float(self.mAP)
        out["mINP"] = float(self.mINP)
        return out


def evaluate_ranking(
    dist: np.ndarray | torch.Tensor,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    rule: str,
    cmc: str = "identity",
    max_rank: int = 20,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
) -> RankingMetrics:
    """Rank each query's gallery by `dist` (smaller = better): CMC/mAP/mINP (docs/reference/protocols.md#sec-3).

    `rule`: "sysu_location" (a camera-3 query ignores every camera-2 gallery item),
    "same_pid_same_cam" (LLCM: drop same identity and same camera), "none" (RegDB).
    `cmc`: "identity" (first occurrence of each gallery identity) or "image".
    `max_rank` is clipped to the number of gallery images. Queries are processed `chunk_size`
    rows at a time (default: as many as `memory_budget` bytes allow).
    This is `summarize(*rank_queries(...))` with at least one query and one valid query required.
    """
    if int(max_rank) < 1:
        raise EvaluationError(f"max_rank must be >= 1, got {max_rank}")
    ap, inp, hit = rank_queries(dist, q_pids, g_pids, q_camids, g_camids, rule=rule, cmc=cmc, chunk_size=chunk_size,
                                memory_budget=memory_budget, require_query=True)
    require_valid_query(hit, q_pids, g_pids, rule)
    return summarize(ap, inp, hit, max_rank=int(max_rank), num_gallery=int(np.shape(dist)[1]))


def rank_queries(
    dist: np.ndarray | torch.Tensor,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    rule: str,
    cmc: str = "identity",
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    require_query: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query AP, INP (NaN if invalid) and first-hit rank (-1 if invalid), without averaging.

    For callers that score a large trial block by block (then `summarize` the concatenation, after
    `require_valid_query`). An empty gallery is refused; so is an empty query list with `require_query`.
    """
    if rule not in RULES:
        raise EvaluationError(f"unknown rule {rule!r}: expected one of {', '.join(RULES)}")
    if cmc not in CMC_KINDS:
        raise EvaluationError(f"unknown cmc kind {cmc!r}: expected one of {', '.join(CMC_KINDS)}")
    d = _as_tensor(dist, "dist")
    if d.dim() != 2:
        raise EvaluationError(f"dist must be a 2-d (num_query, num_gallery) matrix, got shape {tuple(d.shape)}")
    nq, ng = int(d.shape[0]), int(d.shape[1])
    if ng == 0:
        raise EvaluationError("empty gallery: dist has 0 columns; a trial needs at least one gallery image")
    if nq == 0 and require_query:
        raise EvaluationError("no query: dist has 0 rows; a trial needs at least one query image")
    dev = d.device
    optional = rule == "none"
    return _rank_all(d, _ids(q_pids, "q_pids", nq, dev, d.shape), _ids(g_pids, "g_pids", ng, dev, d.shape),
                     _ids(q_camids, "q_camids", nq, dev, d.shape, optional=optional),
                     _ids(g_camids, "g_camids", ng, dev, d.shape, optional=optional),
                     rule, cmc, chunk_size, memory_budget)


def require_valid_query(first_hit: np.ndarray, q_pids: Any, g_pids: Any, rule: str, where: str = "") -> None:
    """EvaluationError saying why, when no query has a true match left after the rule's filter."""
    if (np.asarray(first_hit) > 0).any():
        return
    qp = torch.as_tensor(q_pids).reshape(-1).cpu()
    gp = torch.as_tensor(g_pids).reshape(-1).cpu()
    message = _no_valid_message(qp, gp, rule, int(qp.numel()), int(gp.numel()))
    raise EvaluationError(f"{where}: {message}" if where else message)


def _rank_all(d: torch.Tensor, qp: torch.Tensor, gp: torch.Tensor, qc: torch.Tensor | None,
              gc: torch.Tensor | None, rule: str, cmc: str, chunk_size: int | None,
              memory_budget: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nq, ng = int(d.shape[0]), int(d.shape[1])
    # Gallery identity and camera packed into one int64 code, so one gather per row block gives
    # both: code = identity_index << bits | camera_field.
    g_uniq, g_inv = torch.unique(gp, return_inverse=True)
    q_inv = _index_in(g_uniq, qp)
    bits, q_key, packed = 0, q_inv, g_inv
    if rule == "sysu_location":
        assert qc is not None and gc is not None  # every rule but "none" requires the cameras (see _ids)
        bits = 1
        packed = (g_inv << 1) | (gc == 2).long()
        q_key = qc == 3  # queries whose camera-2 items are dropped
    elif rule == "same_pid_same_cam":
        assert qc is not None and gc is not None
        cams, g_cam = torch.unique(gc, return_inverse=True)
        bits = max(1, int(cams.numel()).bit_length())
        packed = (g_inv << bits) | g_cam
        q_cam = _index_in(cams, qc)
        q_key = torch.where((q_inv >= 0) & (q_cam >= 0), (q_inv << bits) | q_cam, torch.full_like(q_inv, -1))
    rows = chunk_size or _auto_chunk(ng, d.device, memory_budget)
    aps, inps, hits = [], [], []
    for start in range(0, nq, rows):
        stop = min(nq, start + rows)
        block = d[start:stop]
        if block.dtype in (torch.float16, torch.bfloat16):
            block = block.float()
        # One reduction instead of an elementwise test: NaN/inf make the sum non-finite (a finite
        # sum can still overflow, then the exact test decides).
        if not bool(torch.isfinite(block.sum())) and not bool(torch.isfinite(block).all()):
            _raise_non_finite(d, rows)
        if _STRATEGY == "sort":
            ap, inp, hit = _rank_chunk(block, q_inv[start:stop], q_key[start:stop], packed, bits,
                                       int(g_uniq.numel()), rule, cmc)
        else:
            ap, inp, hit = _rank_chunk_counting(block, q_inv[start:stop], q_key[start:stop], packed, bits,
                                                int(g_uniq.numel()), rule, cmc, strategy=_STRATEGY)
        aps.append(ap.cpu())
        inps.append(inp.cpu())
        hits.append(hit.cpu())
    return torch.cat(aps).numpy(), torch.cat(inps).numpy(), torch.cat(hits).numpy()


def _index_in(sorted_values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Position of each x in the sorted unique `sorted_values`, -1 where absent."""
    pos = torch.searchsorted(sorted_values, x).clamp(max=max(0, int(sorted_values.numel()) - 1))
    return torch.where(sorted_values[pos] == x, pos, torch.full_like(pos, -1))


def summarize(ap: np.ndarray, inp: np.ndarray, first_hit: np.ndarray, *, max_rank: int,
              num_gallery: int) -> RankingMetrics:
    """Means over valid queries (first_hit > 0): CMC(r) = #{first_hit <= r} / #valid, mAP, mINP."""
    first_hit = np.asarray(first_hit, dtype=np.int64)
    valid = first_hit > 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise EvaluationError(f"no valid query among {len(first_hit)}: no query has a true match in the gallery")
    length = max(1, min(int(max_rank), int(num_gallery)))
    counts = np.bincount(first_hit[valid], minlength=length + 1)[1:length + 1]
    curve = np.cumsum(counts, dtype=np.float64) / n_valid
    return RankingMetrics(
        cmc=curve,
        mAP=float(np.mean(ap[valid], dtype=np.float64)),
        mINP=float(np.mean(inp[valid], dtype=np.float64)),
        num_valid_queries=n_valid,
        ap=np.asarray(ap, dtype=np.float64),
        inp=np.asarray(inp, dtype=np.float64),
        first_hit=first_hit,
        num_queries=len(first_hit),
        num_gallery=int(num_gallery),
        requested_max_rank=int(max_rank),
    )


def _rank_chunk(d: torch.Tensor, q_inv: torch.Tensor, q_key: torch.Tensor, packed: torch.Tensor, bits: int,
                num_ids: int, rule: str, cmc: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-query AP, INP (NaN when invalid) and first-hit rank (-1 when invalid) of one row block.

    Dense work is one sort, one gather and a few comparisons; the AP/INP arithmetic runs over the
    true matches only (float64), which are few per row.
    """
    c, g = d.shape
    dev = d.device
    order = torch.argsort(d, dim=1, stable=True)
    code = packed[order]
    ids = code >> bits if bits else code
    match = ids == q_inv[:, None]
    if rule == "none":
        keep = None
    elif rule == "sysu_location":
        # Location rule of the official code: camera 3 (IR) shares its room with camera 2, so a
        # camera-3 query drops every camera-2 item whatever its identity.
        keep = ~(q_key[:, None] & (code & 1).bool())
    else:
        keep = code != q_key[:, None]
    m = match if keep is None else match & keep
    r, k = m.nonzero(as_tuple=True)  # row-major: each row's matches in ranked order
    num_pos = torch.bincount(r, minlength=c)
    valid = num_pos > 0
    nan = torch.full((c,), float("nan"), dtype=torch.float64, device=dev)
    if r.numel() == 0:
        return nan, nan.clone(), torch.full((c,), -1, dtype=torch.long, device=dev)
    # 1-based position of each match in the filtered list L
    rank_at = k + 1 if keep is None else keep.cumsum(1, dtype=torch.int32)[r, k].long()
    starts = torch.cumsum(num_pos, 0) - num_pos
    nth = torch.arange(r.numel(), device=dev) - starts[r] + 1  # matches so far, this one included
    ap = torch.zeros(c, dtype=torch.float64, device=dev).index_add_(0, r, nth.double() / rank_at.double())
    ap = ap / num_pos.clamp(min=1).double()
    first_i = starts.clamp(max=r.numel() - 1)
    last_i = (starts + num_pos - 1).clamp(min=0, max=r.numel() - 1)
    inp = num_pos.double() / rank_at[last_i].double()
    if cmc == "image":
        first_hit = rank_at[first_i]
    else:
        pos0 = torch.arange(g, device=dev)
        pos_kept = pos0.expand(c, g) if keep is None else torch.where(keep, pos0, torch.full((), g, device=dev))
        first_seen = torch.full((c, num_ids), g, dtype=torch.long, device=dev)
        first_seen.scatter_reduce_(1, ids, pos_kept, reduce="amin", include_self=True)
        # An item opens a new identity iff it is the first kept occurrence of its identity; the
        # query's identity rank counts the identities opened before its first true match.
        is_first = first_seen.gather(1, ids) == pos0
        first_hit = (is_first & (pos0 < k[first_i][:, None])).sum(1, dtype=torch.int32).long() + 1
    ap = torch.where(valid, ap, nan)
    inp = torch.where(valid, inp, nan)
    first_hit = torch.where(valid, first_hit, torch.full((), -1, dtype=first_hit.dtype, device=dev))
    return ap, inp, first_hit


def _rank_chunk_counting(d: torch.Tensor, q_inv: torch.Tensor, q_key: torch.Tensor, packed: torch.Tensor,
                         bits: int, num_ids: int, rule: str, cmc: str, strategy: str = "auto",
                         budget: int = 64 * 2**20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as `_rank_chunk`, without sorting the rows.

    The position of a match in the stable order is the number of kept items that come before it
    (smaller distance, or equal distance and smaller gallery index) plus one; the identity rank of
    the first match is one plus the number of distinct identities among the kept items before it.
    This costs O(matches x gallery) instead of O(gallery log gallery) per row, so it wins when
    queries have few true matches (single-shot galleries); otherwise we fall back to sorting.
    """
    c, g = d.shape
    dev = d.device
    ids = packed >> bits if bits else packed
    match = ids[None, :] == q_inv[:, None]
    if rule == "none":
        removed = None
    elif rule == "sysu_location":
        removed = q_key[:, None] & (packed & 1).bool()[None, :]
    else:
        removed = packed[None, :] == q_key[:, None]
    m = match if removed is None else match & ~removed
    r, k = m.nonzero(as_tuple=True)
    n_pos = int(r.numel())
    if strategy == "auto" and n_pos > c * max(4, g.bit_length()):
        return _rank_chunk(d, q_inv, q_key, packed, bits, num_ids, rule, cmc)
    num_pos = torch.bincount(r, minlength=c)
    valid = num_pos > 0
    nan = torch.full((c,), float("nan"), dtype=torch.float64, device=dev)
    if n_pos == 0:
        return nan, nan.clone(), torch.full((c,), -1, dtype=torch.long, device=dev)
    v = d[r, k]
    pos0 = torch.arange(g, device=dev)
    rank_at = torch.empty(n_pos, dtype=torch.long, device=dev)
    step = max(1, budget // (4 * g))
    for s in range(0, n_pos, step):
        rs, ks, vs = r[s:s + step], k[s:s + step], v[s:s + step]
        rows = d[rs]
        before = rows < vs[:, None]
        tied = (rows == vs[:, None])
        # equal distances: the gallery order breaks the tie
        if bool((tied.view(torch.uint8).sum(1, dtype=torch.int32) > 1).any()):
            before |= tied & (pos0[None, :] < ks[:, None])
        if removed is not None:
            before &= ~removed[rs]
        rank_at[s:s + step] = before.view(torch.uint8).sum(1, dtype=torch.int32) + 1
    # order the matches of each row by rank: the n-th match of a row sits at rank_at
    order = torch.argsort(r * (g + 1) + rank_at)
    r_s, rank_s = r[order], rank_at[order]
    starts = torch.cumsum(num_pos, 0) - num_pos
    nth = torch.arange(n_pos, device=dev) - starts[r_s] + 1
    ap = torch.zeros(c, dtype=torch.float64, device=dev).index_add_(0, r_s, nth.double() / rank_s.double())
    ap = ap / num_pos.clamp(min=1).double()
    first_i = starts.clamp(max=n_pos - 1)
    last_i = (starts + num_pos - 1).clamp(min=0, max=n_pos - 1)
    inp = num_pos.double() / rank_s[last_i].double()
    if cmc == "image":
        first_hit = rank_s[first_i]
    else:
        f = order[first_i]  # the first true match of each row
        fv, fk = v[f], k[f]
        before = (d < fv[:, None]) | ((d == fv[:, None]) & (pos0[None, :] < fk[:, None]))
        if removed is not None:
            before &= ~removed
        # distinct identities among the items ranked before the first match: one scatter, no nonzero()
        seen = torch.zeros((c, num_ids), dtype=torch.int32, device=dev)
        seen.scatter_add_(1, ids.expand(c, g), before.to(torch.int32))
        first_hit = (seen > 0).sum(1, dtype=torch.int32).long() + 1
    ap = torch.where(valid, ap, nan)
    inp = torch.where(valid, inp, nan)
    first_hit = torch.where(valid, first_hit, torch.full((), -1, dtype=first_hit.dtype, device=dev))
    return ap, inp, first_hit


def _auto_chunk(num_gallery: int, device: torch.device, budget: int | None) -> int:
    """Rows per chunk so that one chunk's working matrices fit in `budget` bytes."""
    if budget is None:
        budget = _CUDA_BUDGET if device.type == "cuda" else _CPU_BUDGET
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget = min(budget, free // 4)
    return max(1, int(budget) // (_BYTES_PER_CELL * max(1, num_gallery)))


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise EvaluationError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(arr))


@overload
def _ids(x: Any, name: str, n: int, device: torch.device, dshape: Sequence[int],
         optional: Literal[False] = False) -> torch.Tensor: ...


@overload
def _ids(x: Any, name: str, n: int, device: torch.device, dshape: Sequence[int],
         optional: bool = False) -> torch.Tensor | None: ...


def _ids(x: Any, name: str, n: int, device: torch.device, dshape: Sequence[int],
         optional: bool = False) -> torch.Tensor | None:
    """An int64 vector of length n on `device`; shape errors name both shapes."""
    if x is None:
        if optional:
            return None
        raise EvaluationError(f"{name} is required by this rule (got None)")
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 1 or int(t.shape[0]) != n:
        axis = "rows" if name.startswith("q") else "columns"
        raise EvaluationError(
            f"{name} has shape {tuple(t.shape)} but dist has shape {tuple(dshape)}: {name} needs one entry "
            f"per dist {axis} ({n})")
    if t.is_floating_point():
        if not bool(torch.equal(t, t.round())):
            raise EvaluationError(f"{name} must hold integers, got non-integral values")
    return t.to(device=device, dtype=torch.int64)


def _raise_non_finite(d: torch.Tensor, rows: int) -> None:
    """Count the non-finite entries of `d` (chunk by chunk) and raise naming the first one."""
    count, first = 0, None
    for start in range(0, int(d.shape[0]), rows):
        bad = ~torch.isfinite(d[start:start + rows])
        n = int(bad.sum())
        if n and first is None:
            r, c = (int(v) for v in bad.nonzero()[0])
            first = (start + r, c, float(d[start + r, c]))
        count += n
    assert first is not None
    raise EvaluationError(
        f"dist has {count} non-finite value(s) (NaN or inf) out of {d.numel()}; the first is {first[2]} at "
        f"(query {first[0]}, gallery {first[1]}). Check the features for NaN/inf (a diverged model or an "
        "empty image) before evaluating")


def _no_valid_message(qp: torch.Tensor, gp: torch.Tensor, rule: str, nq: int, ng: int) -> str:
    q_ids = set(qp.unique().tolist())
    g_ids = set(gp.unique().tolist())
    shared = q_ids & g_ids
    if not shared:
        why = (f"the query identities ({_few(q_ids)}) and the gallery identities ({_few(g_ids)}) do not overlap")
    else:
        why = (f"{len(shared)} identities are shared, but the '{rule}' filter removes every true match")
    return (f"no valid query among {nq} queries x {ng} gallery images: {why}. A query is valid only if a "
            "true match survives the filter; check that query and gallery come from the same test identities "
            "and that the rule fits the dataset")


def _few(ids: set, k: int = 5) -> str:
    s = sorted(ids)
    more = f", ... ({len(s)} in all)" if len(s) > k else ""
    return ", ".join(map(str, s[:k])) + more
