"""The numbers behind the pictures, from plain arrays: which gallery items a query ranks (under the protocol's rule),
the best, median and worst queries, per-camera-pair rank-1, identity samples, t-SNE, and the modality gap.

Everything takes NumPy arrays (features, pids, cameras, modalities) so it works on any features, including a
user's `.npz`; modalities may be `Modality` values, their names or their codes (0 visible, 1 infrared).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import RULES, SYSU_SHARED_ROOM, Modality
from ._figure import require_sklearn_tsne


def modality_codes(modalities: Sequence[Any] | np.ndarray) -> np.ndarray:
    """(N,) int8 codes (0 visible, 1 infrared) of Modality values, names ("ir", "visible") or codes."""
    out = np.empty(len(modalities), dtype=np.int8)
    for i, m in enumerate(modalities):
        if isinstance(m, Modality):
            out[i] = m.code
        elif isinstance(m, (int, np.integer)) or str(m).strip() in ("0", "1"):
            out[i] = Modality.from_code(int(m)).code
        else:
            out[i] = Modality.parse(str(m)).code
    return out


def normalize_rows(features: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit L2 norm (zero rows stay zero)."""
    f = np.asarray(features, dtype=np.float32)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(norm, 1e-12)


def kept_gallery(rule: str, q_pid: int, q_cam: int, g_pids: np.ndarray, g_cams: np.ndarray) -> np.ndarray:
    """Boolean mask of the gallery items one query is ranked against under `rule` (metrics.ranking's filter)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    keep = np.ones(len(g_pids), dtype=bool)
    if rule == "sysu_location" and int(q_cam) == SYSU_SHARED_ROOM[0]:
        keep &= np.asarray(g_cams) != SYSU_SHARED_ROOM[1]
    elif rule == "same_pid_same_cam":
        keep &= ~((np.asarray(g_pids) == q_pid) & (np.asarray(g_cams) == q_cam))
    return keep


@dataclass
class RankedQuery:
    """One query's ranking: `order` = its top gallery indices best first (after the rule's filter), whether each is
    the query's identity, and the 1-based position and gallery index of its first true match (-1: none)."""

    query: int
    order: list[int]
    correct: list[bool]
    first_match: int
    first_match_index: int
    ap: float = float("nan")
    first_hit: int = -1  # the evaluator's first-hit rank (identity or image CMC, as the trial counts)

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "order": self.order, "correct": self.correct, "first_match": self.first_match,
                "first_match_index": self.first_match_index,
                "ap": None if not np.isfinite(self.ap) else float(self.ap), "first_hit": self.first_hit}


def rank_query(dist_row: np.ndarray, q_pid: int, q_cam: int, g_pids: np.ndarray, g_cams: np.ndarray, rule: str,
               topk: int, query: int = 0) -> RankedQuery:
    """The ranking of one query: a stable sort of `dist_row` (smaller = better, ties keep gallery order, as the
    evaluator sorts) over the gallery items `rule` keeps."""
    g_pids, g_cams = np.asarray(g_pids), np.asarray(g_cams)
    keep = kept_gallery(rule, q_pid, q_cam, g_pids, g_cams)
    order = np.argsort(np.asarray(dist_row, dtype=np.float64), kind="stable")
    order = order[keep[order]]
    match = g_pids[order] == q_pid
    first = int(np.argmax(match)) if bool(match.any()) else -1
    top = order[:topk]
    return RankedQuery(query, [int(i) for i in top], [bool(g_pids[i] == q_pid) for i in top],
                       first + 1 if first >= 0 else -1, int(order[first]) if first >= 0 else -1)


def select_queries(ap: np.ndarray, per_group: int = 3) -> dict[str, list[int]]:
    """Query indices of the `per_group` best, median and worst queries by AP (invalid queries, AP NaN, skipped);
    ties are broken by query index, so the choice is reproducible."""
    ap = np.asarray(ap, dtype=np.float64)
    valid = np.flatnonzero(np.isfinite(ap))
    if valid.size == 0:
        return {"best": [], "median": [], "worst": []}
    ranked = valid[np.lexsort((valid, -ap[valid]))]  # AP descending, then index
    k = min(per_group, ranked.size)
    mid = max(0, ranked.size // 2 - k // 2)
    return {"best": [int(i) for i in ranked[:k]], "median": [int(i) for i in ranked[mid:mid + k]],
            "worst": [int(i) for i in ranked[::-1][:k]]}


@dataclass
class CameraRank1:
    """Rank-1 of each (query camera, gallery camera) pair: the gallery cut to one camera, the query's rule kept.

    `hits[i, j]`: valid queries of camera query_cameras[i] whose first gallery item of camera gallery_cameras[j] is
    a true match; `valid[i, j]`: queries with at least one true match there. Several trials add up."""

    query_cameras: list[int]
    gallery_cameras: list[int]
    hits: np.ndarray = field(repr=False)
    valid: np.ndarray = field(repr=False)

    @property
    def rank1(self) -> np.ndarray:
        """hits / valid, NaN where no query is valid (e.g. a pair the rule filters out)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.valid > 0, self.hits / np.maximum(self.valid, 1), np.nan)

    def __add__(self, other: CameraRank1) -> CameraRank1:
        qc = sorted(set(self.query_cameras) | set(other.query_cameras))
        gc = sorted(set(self.gallery_cameras) | set(other.gallery_cameras))
        hits = np.zeros((len(qc), len(gc)), dtype=np.int64)
        valid = np.zeros_like(hits)
        for part in (self, other):
            rows = [qc.index(c) for c in part.query_cameras]
            cols = [gc.index(c) for c in part.gallery_cameras]
            hits[np.ix_(rows, cols)] += part.hits
            valid[np.ix_(rows, cols)] += part.valid
        return CameraRank1(qc, gc, hits, valid)

    def to_json(self) -> dict[str, Any]:
        r1 = self.rank1
        return {"query_cameras": self.query_cameras, "gallery_cameras": self.gallery_cameras,
                "hits": self.hits.tolist(), "valid": self.valid.tolist(),
                "rank1": [[None if not np.isfinite(v) else float(v) for v in row] for row in r1]}


def camera_pair_rank1(dist: Any, q_pids: Any, g_pids: Any, q_cams: Any, g_cams: Any, rule: str = "none",
                      cmc: str = "identity") -> CameraRank1:
    """Per-camera-pair rank-1 of one (query x gallery) distance matrix, from the evaluator's per-query first hits
    (`metrics.rank_queries`) on each gallery camera's columns."""
    from ..metrics.ranking import rank_queries

    d = np.asarray(dist, dtype=np.float32)
    qp, gp, qc, gc = (np.asarray(x, dtype=np.int64) for x in (q_pids, g_pids, q_cams, g_cams))
    q_list, g_list = sorted({int(c) for c in qc}), sorted({int(c) for c in gc})
    hits = np.zeros((len(q_list), len(g_list)), dtype=np.int64)
    valid = np.zeros_like(hits)
    for j, cam in enumerate(g_list):
        cols = np.flatnonzero(gc == cam)
        _, _, first_hit = rank_queries(d[:, cols], qp, gp[cols], qc, gc[cols], rule=rule, cmc=cmc)
        for i, qcam in enumerate(q_list):
            rows = qc == qcam
            hits[i, j] = int((first_hit[rows] == 1).sum())
            valid[i, j] = int((first_hit[rows] > 0).sum())
    return CameraRank1(q_list, g_list, hits, valid)


def sample_identities(pids: Any, modalities: Any, num_ids: int = 10, per_modality: int = 12,
                      seed: int = 0) -> np.ndarray:
    """Sorted row indices of `num_ids` identities seen in both modalities (drawn with `seed`) and at most
    `per_modality` images of each in each modality (also drawn with `seed`)."""
    pids = np.asarray(pids, dtype=np.int64)
    codes = modality_codes(modalities)
    rng = random.Random(seed)
    both = sorted(int(p) for p in np.unique(pids) if {0, 1} <= set(codes[pids == p].tolist()))
    chosen = sorted(rng.sample(both, min(num_ids, len(both))))
    rows: list[int] = []
    for pid in chosen:
        for code in (0, 1):
            idx = np.flatnonzero((pids == pid) & (codes == code)).tolist()
            rows += sorted(rng.sample(idx, min(per_modality, len(idx))))
    return np.asarray(sorted(rows), dtype=np.int64)


def tsne(features: Any, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """(N, 2) t-SNE (scikit-learn, PCA start, fixed seed) of the L2-normalised `features`."""
    f = normalize_rows(np.asarray(features))
    n = f.shape[0]
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    TSNE = require_sklearn_tsne()
    perplexity = perplexity if perplexity is not None else float(min(30.0, max(2.0, (n - 1) / 3)))
    model = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return np.asarray(model.fit_transform(f), dtype=np.float32)
    # one thread: a few hundred points gain nothing from more, and OpenMP threads spinning on a busy machine
    # (training beside the report) made it four times slower
    with threadpool_limits(limits=1):
        return np.asarray(model.fit_transform(f), dtype=np.float32)


def separation_auc(same: np.ndarray, different: np.ndarray) -> float:
    """P(a different-identity distance > a same-identity distance), ties counted half: the ROC AUC of telling the
    pairs apart by distance (1 perfect, 0.5 chance); NaN when either side is empty."""
    same = np.sort(np.asarray(same, dtype=np.float64))
    different = np.asarray(different, dtype=np.float64)
    if same.size == 0 or different.size == 0:
        return float("nan")
    below = np.searchsorted(same, different, side="left")  # same-identity distances strictly smaller
    ties = np.searchsorted(same, different, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (same.size * different.size))


@dataclass
class ModalityGap:
    """Cosine distances (1 - cos) of image pairs: same or different identity, within one modality or across the
    two, and how well distance separates same from different identity (AUC) within and across modalities."""

    within_same: np.ndarray = field(repr=False)
    within_different: np.ndarray = field(repr=False)
    cross_same: np.ndarray = field(repr=False)
    cross_different: np.ndarray = field(repr=False)
    auc_within: float = float("nan")
    auc_cross: float = float("nan")

    def summary(self) -> dict[str, Any]:
        """Pair counts, mean distances and the two AUCs (JSON-friendly)."""
        out: dict[str, Any] = {}
        for name in ("within_same", "within_different", "cross_same", "cross_different"):
            values = getattr(self, name)
            out[name] = {"pairs": int(values.size), "mean": float(values.mean()) if values.size else None}
        out["auc_within"] = None if not np.isfinite(self.auc_within) else self.auc_within
        out["auc_cross"] = None if not np.isfinite(self.auc_cross) else self.auc_cross
        return out


def modality_gap(features: Any, pids: Any, modalities: Any, max_images: int = 2000, seed: int = 0) -> ModalityGap:
    """The pair distances of `features` (at most `max_images` rows, drawn with `seed`) grouped by identity and
    modality, with the AUC of same- vs different-identity distances within and across modalities."""
    f = normalize_rows(np.asarray(features))
    pids = np.asarray(pids, dtype=np.int64)
    codes = modality_codes(modalities)
    if not (len(f) == len(pids) == len(codes)):
        raise ValueError(f"features ({len(f)}), pids ({len(pids)}) and modalities ({len(codes)}) need one row each")
    if len(f) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(f), size=max_images, replace=False))
        f, pids, codes = f[keep], pids[keep], codes[keep]
    iu, ju = np.triu_indices(len(f), k=1)
    dist = (1.0 - (f @ f.T))[iu, ju].astype(np.float32)
    same_id = pids[iu] == pids[ju]
    same_mod = codes[iu] == codes[ju]
    gap = ModalityGap(dist[same_id & same_mod], dist[~same_id & same_mod], dist[same_id & ~same_mod],
                      dist[~same_id & ~same_mod])
    gap.auc_within = separation_auc(gap.within_same, gap.within_different)
    gap.auc_cross = separation_auc(gap.cross_same, gap.cross_different)
    return gap
