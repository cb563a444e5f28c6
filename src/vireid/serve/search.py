"""Searching an index with query images, and drawing the ranked results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import Modality, VireidError
from .index import GalleryIndex, Hit


@dataclass
class QueryResult:
    """The ranked hits of one query, or why it could not be answered."""

    query: Any
    modality: Modality
    hits: list[Hit] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """`{"results": [...]}` as the REST API returns it, plus the query and its modality."""
        out: dict[str, Any] = {"query": str(self.query), "modality": self.modality.value,
                               "results": [h.to_dict() for h in self.hits]}
        if self.error is not None:
            out["error"] = self.error
        return out


def search_images(index: GalleryIndex, extractor: Any, queries: Sequence[Any], modality: Modality | str, *,
                  topk: int = 10, cross_modal_only: bool = False) -> list[QueryResult]:
    """Embed each query on its own, so one undecodable image fails alone; then search them together."""
    import numpy as np

    mod = Modality.parse(modality)
    index.check_model(extractor)
    results = [QueryResult(q, mod) for q in queries]
    feats, ok = [], []
    for i, q in enumerate(queries):
        try:
            feats.append(extractor(q, mod))
            ok.append(i)
        except (VireidError, OSError, ValueError, TypeError) as exc:
            results[i].error = str(exc)
    if ok:
        hits = index.search(np.concatenate(feats), topk, cross_modal_only=cross_modal_only, query_modality=mod)
        for i, h in zip(ok, hits, strict=False):
            results[i].hits = h
    return results


def render_results(index: GalleryIndex, results: Sequence[QueryResult], out: str | Path,
                   tile: tuple[int, int] = (128, 64)) -> Path:
    """A PNG grid, one row per query: the query, then its hits with rank, score and modality (atomic write)."""
    from ..viz import RankRow, Tile, render_ranklist

    def gallery_image(hit: Hit) -> Any:
        try:
            return index.image_path(hit.item)
        except VireidError:
            return None

    rows = [RankRow(Tile(r.query, ["query", r.modality.value[:3]], "black"),
                    [Tile(gallery_image(h), [f"#{rank} {h.score:.3f}", f"{h.item.modality.value[:3]} id {h.item.pid}"],
                          "royalblue" if h.item.modality is Modality.VISIBLE else "firebrick")
                     for rank, h in enumerate(r.hits, start=1)])
            for r in results]
    return render_ranklist(rows, out, tile=tile)
