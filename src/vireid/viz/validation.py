"""Figures of the validation set during training (for TensorBoard): a rank list of some infrared queries and a
t-SNE of the validation identities, as (H, W, 3) uint8 arrays. Used by the trainer when train.tensorboard_figures
is on; any method, any features (the query and gallery samples are given)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core import Sample
from ._figure import figure_array
from .analysis import normalize_rows, rank_query, sample_identities, tsne
from .ranklist import ranked_rows, ranklist_image, tile_size


def validation_figures(method: Any, query: Sequence[Sample], gallery: Sequence[Sample], *, height: int, width: int,
                       rule: str = "sysu_location", device: Any = "cpu", num_queries: int = 6, topk: int = 8,
                       num_ids: int = 10, seed: int = 0, batch_size: int = 128) -> dict[str, np.ndarray]:
    """{"ranklist": ..., "embedding": ...} images of `method` on a validation trial: `num_queries` evenly spaced
    queries with their top-`topk` gallery images, and a t-SNE of up to `num_ids` identities of both sides."""
    from ..inference import embed_items
    from .figures import draw_embedding

    items = list(query) + list(gallery)
    feats = embed_items(method, items, [s.modality for s in items], height=height, width=width, device=device,
                        batch_size=batch_size, kinds=(method.inference_spec().feature,))
    f = normalize_rows(next(iter(feats.values())).numpy())
    q, g = f[: len(query)], f[len(query):]
    dist = -(q @ g.T)
    step = max(len(query) // num_queries, 1)
    g_pids = np.asarray([s.pid for s in gallery])
    g_cams = np.asarray([s.camid for s in gallery])
    ranked = [rank_query(dist[i], query[i].pid, query[i].camid, g_pids, g_cams, rule, topk, query=i)
              for i in range(0, len(query), step)[:num_queries]]
    sheet = ranklist_image(ranked_rows(ranked, list(query), list(gallery)), tile_size(height, width))
    out = {"ranklist": np.asarray(sheet.convert("RGB"))}
    rows = sample_identities([s.pid for s in items], [s.modality for s in items], num_ids, 12, seed)
    if rows.size >= 4:
        points = tsne(f[rows], seed=seed)
        fig = draw_embedding(points, [items[i].pid for i in rows], [items[i].modality for i in rows],
                             f"validation t-SNE: {rows.size} images of {len({items[i].pid for i in rows})} identities")
        out["embedding"] = figure_array(fig)
    return out
