"""The report's figures drawn from `ReportInputs` (and, for method pictures, the method): each function writes one
file (PNG, SVG or PDF by suffix) and returns what the report says about it. `vireid viz KIND` calls them one at
a time; `build_report` calls them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import Modality, Sample
from ..viz.analysis import (
    CameraRank1,
    ModalityGap,
    RankedQuery,
    camera_pair_rank1,
    modality_gap,
    rank_query,
    select_queries,
)
from ..viz.ranklist import SHORT, ranked_rows, render_ranklist, tile_size
from .inputs import ReportInputs

GROUPS = ("best", "median", "worst")


def camera_names(samples: Sequence[Sample]) -> dict[int, str]:
    """{camid: "cam3 IR"} of the cameras in `samples`."""
    return {s.camid: f"cam{s.camid} {SHORT[s.modality]}" for s in samples}


def cmc_curves(inputs: ReportInputs) -> dict[str, list[float]]:
    """{feature label: mean CMC} of every protocol and feature the Evaluator scored (protocol prefix when several)."""
    out = {}
    several = len(inputs.results.protocols) > 1
    for key, entry in inputs.results.protocols.items():
        for label, fr in entry.features.items():
            out[f"{key} {label}" if several else label] = fr.mean_cmc()
    return out


def cmc_figure(inputs: ReportInputs, out: str | Path, max_rank: int = 20) -> Path:
    """CMC curves of every feature (re-ranked ones dashed) to rank `max_rank`."""
    from ..viz.figures import plot_cmc

    return plot_cmc(cmc_curves(inputs), out, max_rank, title=f"CMC, mean over {len(inputs.trials)} trial(s)")


def ranked_queries(inputs: ReportInputs, group: str, per_group: int = 3, topk: int = 10,
                   trial_index: int = 0) -> list[RankedQuery]:
    """The `per_group` best, median or worst queries by AP of one trial, each with its ranking (top-k)."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    trial = inputs.trials[trial_index]
    metrics = inputs.trial_result(trial).metrics
    if metrics is None:
        raise ValueError(f"trial {trial.name!r} kept no per-query numbers")
    chosen = select_queries(metrics.ap, per_group)[group]
    dist = inputs.distances(trial)
    g_pids = np.asarray([s.pid for s in trial.gallery])
    g_cams = np.asarray([s.camid for s in trial.gallery])
    out = []
    for qi in chosen:
        q = trial.query[qi]
        r = rank_query(dist[qi], q.pid, q.camid, g_pids, g_cams, trial.rule, topk, query=qi)
        r.ap, r.first_hit = float(metrics.ap[qi]), int(metrics.first_hit[qi])
        out.append(r)
    return out


def ranklist_figure(inputs: ReportInputs, out: str | Path, group: str = "best", per_group: int = 3,
                    topk: int = 10, height: int = 128, width: int = 64, trial_index: int = 0
                    ) -> tuple[Path, list[RankedQuery]]:
    """The rank lists of the `group` queries of one trial (query tile, top-k framed, first match beyond k); tiles
    are 128 px tall with the aspect of height x width images."""
    trial = inputs.trials[trial_index]
    ranked = ranked_queries(inputs, group, per_group, topk, trial_index)
    rows = ranked_rows(ranked, list(trial.query), list(trial.gallery))
    return render_ranklist(rows, out, tile=tile_size(height, width)), ranked


def tsne_figure(inputs: ReportInputs, out: str | Path, num_ids: int = 10, per_modality: int = 12,
                seed: int = 0) -> tuple[Path, list[int]]:
    """t-SNE of a seeded sample of identities (colour = identity, marker = modality); returns the identities."""
    from ..viz._figure import save_figure
    from ..viz.analysis import sample_identities, tsne
    from ..viz.figures import draw_embedding

    pids = np.asarray([s.pid for s in inputs.samples])
    mods = [s.modality for s in inputs.samples]
    rows = sample_identities(pids, mods, num_ids, per_modality, seed)
    if rows.size < 4:
        raise ValueError("t-SNE needs identities seen in both modalities; the test set has none")
    points = tsne(inputs.features[inputs.feature][rows], seed=seed)
    chosen = sorted({int(p) for p in pids[rows]})
    title = (f"t-SNE of the {inputs.feature} feature: {len(rows)} test images of {len(chosen)} identities "
             "(circle visible, triangle infrared)")
    fig = draw_embedding(points, pids[rows], [mods[i] for i in rows], title)
    return save_figure(fig, out), chosen


def gap_figure(inputs: ReportInputs, out: str | Path, max_images: int = 2000, seed: int = 0
               ) -> tuple[Path, ModalityGap]:
    """Same- vs different-identity distance distributions within and across modalities, with their AUCs."""
    from ..viz.figures import plot_modality_gap

    pids = [s.pid for s in inputs.samples]
    mods = [s.modality for s in inputs.samples]
    gap = modality_gap(inputs.features[inputs.feature], pids, mods, max_images=max_images, seed=seed)
    return plot_modality_gap(gap, out), gap


def camera_rank1(inputs: ReportInputs) -> CameraRank1:
    """Per-camera-pair rank-1 of the reported feature, every trial's queries added up."""
    total: CameraRank1 | None = None
    for trial in inputs.trials:
        part = camera_pair_rank1(inputs.distances(trial), [s.pid for s in trial.query],
                                 [s.pid for s in trial.gallery], [s.camid for s in trial.query],
                                 [s.camid for s in trial.gallery], rule=trial.rule, cmc=trial.cmc_kind)
        total = part if total is None else total + part
    assert total is not None  # a ReportInputs holds at least one trial (the Evaluator refuses none)
    return total


def camera_figure(inputs: ReportInputs, out: str | Path) -> tuple[Path, CameraRank1]:
    """Heatmap of rank-1 per (query camera, gallery camera), over every trial."""
    from ..viz.figures import plot_camera_rank1

    cams = camera_rank1(inputs)
    title = f"rank-1 per camera pair ({inputs.feature}, {len(inputs.trials)} trial(s); gallery cut to one camera)"
    return plot_camera_rank1(cams, out, camera_names(inputs.samples), title), cams


# ---------------------------------------------------------------------------------------------- method pictures


def picture_pairs(samples: Sequence[Sample], n: int, seed: int = 0) -> list[tuple[Sample, Sample]]:
    """Up to `n` seeded (visible, infrared) pairs, each of one identity."""
    from ..viz.translations import same_identity_pairs

    return same_identity_pairs(samples, n, seed=seed)


def pattern_map_figure(method: Any, samples: Sequence[Sample], height: int, width: int, out: str | Path,
                       pairs: int = 2, seed: int = 0) -> Path:
    """MPANet's pattern maps over visible and infrared images of the same identities."""
    from ..viz.pictures import mpanet_pattern_maps, plot_pattern_maps

    chosen = [s for pair in picture_pairs(samples, pairs, seed) for s in pair]
    images, maps = mpanet_pattern_maps(method, chosen, height, width)
    captions = [f"id {s.pid} cam{s.camid} {SHORT[s.modality]}" for s in chosen]
    return plot_pattern_maps(images, maps, out, captions)


def correspondence_figure(method: Any, samples: Sequence[Sample], height: int, width: int, out: str | Path,
                          pairs: int = 3, seed: int = 0) -> Path:
    """LbA's matching probabilities between a visible and an infrared image of one identity, and co-attention."""
    from ..viz.pictures import lba_correspondences, plot_correspondences

    return plot_correspondences(lba_correspondences(method, picture_pairs(samples, pairs, seed), height, width), out)


def translation_figure(method: Any, samples: Sequence[Sample], height: int, width: int, out: str | Path,
                       pairs: int = 4, seed: int = 0) -> Path | None:
    """A generative method's translated images of same-identity pairs; None (nothing written) when it makes none."""
    from ..viz.translations import render_translations, translate_samples

    device = next(method.parameters()).device
    images = translate_samples(method.eval(), picture_pairs(samples, pairs, seed), height, width, device)
    if not images:
        return None
    size = next(iter(images.values())).shape[-2:]
    return render_translations(images, out, tile=tile_size(int(size[0]), int(size[1])))


def ranked_json(ranked: Sequence[RankedQuery], queries: Sequence[Sample], gallery: Sequence[Sample]
                ) -> list[dict[str, Any]]:
    """report.json's view of ranked queries: indices plus the paths, identities, cameras and modalities shown."""

    def item(s: Sample) -> dict[str, Any]:
        return {"path": s.path, "pid": s.pid, "camid": s.camid, "modality": s.modality.value}

    return [{**r.to_json(), "query_sample": item(queries[r.query]),
             "hits": [item(gallery[i]) for i in r.order]} for r in ranked]


def modality_counts(samples: Sequence[Sample]) -> Mapping[str, int]:
    """{"visible": n, "infrared": m}."""
    return {m.value: sum(1 for s in samples if s.modality is m) for m in Modality}
