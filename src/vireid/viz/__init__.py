"""Pictures from plain values: rank lists, CMC and training curves, t-SNE embeddings, the modality gap, per-camera
rank-1, method pictures (MPANet pattern maps, LbA correspondences, translated images) and small HTML reports.

Every figure function takes arrays or rows (features, pids, cameras, modalities, CMC values, metrics records), so
it works on any features, a user's `.npz` included; `vireid.report` assembles them for a trained run. Names load on
first use: importing `vireid.viz` imports neither torch nor matplotlib.

    from vireid.viz import modality_gap, plot_modality_gap
    plot_modality_gap(modality_gap(features, pids, modalities), "gap.png")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._figure import figure_array, save_figure, save_image
    from .analysis import (
        CameraRank1,
        ModalityGap,
        RankedQuery,
        camera_pair_rank1,
        modality_gap,
        rank_query,
        sample_identities,
        select_queries,
        separation_auc,
        tsne,
    )
    from .figures import (
        curve_panels,
        draw_camera_rank1,
        draw_cmc,
        draw_embedding,
        draw_modality_gap,
        draw_training_curves,
        plot_camera_rank1,
        plot_cmc,
        plot_modality_gap,
        plot_training_curves,
        plot_tsne,
    )
    from .pictures import (
        draw_correspondences,
        draw_pattern_maps,
        lba_correspondences,
        method_pictures,
        mpanet_pattern_maps,
        plot_correspondences,
        plot_pattern_maps,
    )
    from .ranklist import CORRECT, QUERY, WRONG, RankRow, Tile, ranked_rows, render_ranklist
    from .report import Block, render_report, write_report
    from .translations import render_translations, translation_rows

_WHERE = {
    "figure_array": "_figure", "save_figure": "_figure", "save_image": "_figure",
    "CameraRank1": "analysis", "ModalityGap": "analysis", "RankedQuery": "analysis", "camera_pair_rank1": "analysis",
    "modality_gap": "analysis", "rank_query": "analysis", "sample_identities": "analysis",
    "select_queries": "analysis", "separation_auc": "analysis", "tsne": "analysis",
    "curve_panels": "figures", "draw_camera_rank1": "figures", "draw_cmc": "figures", "draw_embedding": "figures",
    "draw_modality_gap": "figures", "draw_training_curves": "figures", "plot_camera_rank1": "figures",
    "plot_cmc": "figures", "plot_modality_gap": "figures", "plot_training_curves": "figures", "plot_tsne": "figures",
    "draw_correspondences": "pictures", "draw_pattern_maps": "pictures",
    "lba_correspondences": "pictures", "method_pictures": "pictures",
    "mpanet_pattern_maps": "pictures", "plot_correspondences": "pictures",
    "plot_pattern_maps": "pictures",
    "CORRECT": "ranklist", "QUERY": "ranklist", "WRONG": "ranklist", "RankRow": "ranklist", "Tile": "ranklist",
    "ranked_rows": "ranklist", "render_ranklist": "ranklist",
    "Block": "report", "render_report": "report", "write_report": "report",
    "render_translations": "translations", "translation_rows": "translations",
}

__all__ = [
    "CORRECT", "QUERY", "WRONG", "Block", "CameraRank1", "ModalityGap", "RankRow", "RankedQuery", "Tile",
    "camera_pair_rank1", "curve_panels", "draw_camera_rank1", "draw_cmc", "draw_correspondences", "draw_embedding",
    "draw_modality_gap", "draw_pattern_maps", "draw_training_curves", "figure_array", "lba_correspondences",
    "method_pictures", "modality_gap", "mpanet_pattern_maps", "plot_camera_rank1", "plot_cmc", "plot_correspondences",
    "plot_modality_gap", "plot_pattern_maps", "plot_training_curves", "plot_tsne", "rank_query", "ranked_rows",
    "render_ranklist", "render_report", "render_translations", "sample_identities", "save_figure", "save_image",
    "select_queries", "separation_auc", "translation_rows", "tsne", "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
