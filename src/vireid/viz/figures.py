"""Figures from plain values: training curves (metrics.jsonl records), CMC curves, t-SNE embeddings, modality-gap
distance distributions and per-camera-pair rank-1 heatmaps.

Each figure has a `draw_*` function returning a pyplot-free matplotlib Figure and a `plot_*` function that draws it
into a file (PNG, SVG or PDF by suffix, written atomically) and returns the path. Sizes are fixed (inches x DPI
100, see `SIZES`), so a PNG's pixel size is known in advance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import Modality
from ._figure import new_figure, no_data, save_figure
from .analysis import CameraRank1, ModalityGap, modality_codes, sample_identities, tsne

#: Figure sizes in inches (at 100 DPI: pixels / 100); training curves grow by one row per 4 panels.
SIZES: dict[str, tuple[float, float]] = {
    "cmc": (7.0, 4.5), "tsne": (8.0, 6.5), "modality_gap": (11.0, 4.2), "camera_rank1": (6.5, 5.0),
    "curves_panel": (3.3, 2.6),
}
CURVE_COLUMNS = 4
MARKERS = {Modality.VISIBLE: "o", Modality.INFRARED: "^"}
_SKIP_KEYS = {"kind", "epoch", "step", "seconds"}


# ---------------------------------------------------------------------------------------------- training curves


@dataclass
class Panel:
    """One small plot of the training curves: a title and its series (label, steps, values, per-step or not)."""

    title: str
    series: list[tuple[str, list[float], list[float], bool]] = field(default_factory=list)
    log_y: bool = False
    percent: bool = False


def curve_panels(records: Sequence[Mapping[str, Any]]) -> list[Panel]:
    """The panels the training-curve figure draws from metrics.jsonl records: each logged training scalar (per
    step, with its epoch means), the learning rates, validation rank-1, images/s and each method scalar."""

    def numeric(r: Mapping[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in r.items() if k not in _SKIP_KEYS and isinstance(v, (int, float))
                and not isinstance(v, bool) and math.isfinite(float(v))}

    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_kind.setdefault(str(r.get("kind", "train")), []).append(r)
    train, epochs = by_kind.get("train", []), by_kind.get("epoch", [])
    panels: dict[str, Panel] = {}
    for r in train:
        for k, v in numeric(r).items():
            p = panels.setdefault(k, Panel(k))
            if not p.series:
                p.series.append(("per step", [], [], True))
            p.series[0][1].append(float(r.get("step", 0)))
            p.series[0][2].append(v)
    lr = Panel("learning rate", log_y=True)
    speed = Panel("images / s")
    for r in epochs:
        for k, v in numeric(r).items():
            if k.startswith("lr_"):
                target, label = lr, k[3:]
            elif k == "images_per_s":
                target, label = speed, "epoch"
            else:
                target, label = panels.setdefault(k, Panel(k)), "epoch mean"
            series = next((s for s in target.series if s[0] == label), None)
            if series is None:
                series = (label, [], [], False)
                target.series.append(series)
            series[1].append(float(r.get("step", 0)))
            series[2].append(v)
    out = list(panels.values())
    val = Panel("validation rank-1 (%)", percent=True)
    for r in by_kind.get("val", []):
        if "rank1" in r:
            if not val.series:
                val.series.append(("val", [], [], False))
            val.series[0][1].append(float(r.get("step", 0)))
            val.series[0][2].append(float(r["rank1"]))
    method: dict[str, Panel] = {}
    for r in by_kind.get("method", []):
        for k, v in numeric(r).items():
            p = method.setdefault(k, Panel(f"method: {k}", [(k, [], [], False)]))
            p.series[0][1].append(float(r.get("step", 0)))
            p.series[0][2].append(v)
    return out + [p for p in (lr, val, speed) if p.series] + list(method.values())


def curves_size(num_panels: int) -> tuple[float, float]:
    """The training-curve figure's size in inches for `num_panels` panels."""
    w, h = SIZES["curves_panel"]
    rows = max(1, math.ceil(num_panels / CURVE_COLUMNS))
    return (w * CURVE_COLUMNS, h * rows)


def draw_training_curves(records: Sequence[Mapping[str, Any]]) -> Any:
    """Small multiples of every training scalar of metrics.jsonl `records` against the training step."""
    panels = curve_panels(records)
    fig = new_figure(*curves_size(len(panels)))
    if not panels:
        no_data(fig.add_subplot(1, 1, 1), "no training records (metrics.jsonl is empty or missing)")
        return fig
    rows = max(1, math.ceil(len(panels) / CURVE_COLUMNS))
    axes = fig.subplots(rows, CURVE_COLUMNS, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for label, xs, ys, per_step in panel.series:
            values = [100 * y for y in ys] if panel.percent else ys
            if per_step:
                ax.plot(xs, values, lw=0.8, alpha=0.55, color="#4a72b0", label=label)
            else:
                ax.plot(xs, values, marker="o", ms=3, lw=1.4, label=label)
        ax.set_title(panel.title, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if panel.log_y and all(y > 0 for _, _, ys, _ in panel.series for y in ys):
            ax.set_yscale("log")
        if len(panel.series) > 1:
            ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("training step", fontsize=8)
    return fig


def plot_training_curves(records: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """`draw_training_curves(records)` saved to `out` (.png, .svg or .pdf)."""
    return save_figure(draw_training_curves(records), out)


# ---------------------------------------------------------------------------------------------- CMC


def draw_cmc(curves: Mapping[str, Sequence[float]], max_rank: int = 20, title: str = "") -> Any:
    """CMC curves in percent up to `max_rank`: {label: CMC values (fractions), rank 1 first}; a label ending in
    "+rerank" is drawn dashed. A curve shorter than `max_rank` stays at its last value (a small gallery)."""
    fig = new_figure(*SIZES["cmc"])
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    ranks = np.arange(1, max_rank + 1)
    for label, cmc in curves.items():
        values = [float(v) for v in cmc][:max_rank]
        if not values:
            continue
        values += [values[-1]] * (max_rank - len(values))
        y = 100 * np.asarray(values)
        ax.plot(ranks, y, ls="--" if label.endswith("+rerank") else "-", marker="o", ms=3, lw=1.6,
                label=f"{label} (R1 {y[0]:.1f}%, R{max_rank} {y[-1]:.1f}%)")
        drawn += 1
    if not drawn:
        no_data(ax, "no CMC curve")
        return fig
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(1, max_rank)
    ax.set_xticks([1, *range(5, max_rank + 1, 5)])
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title(title or "CMC (mean over trials)", fontsize=11)
    return fig


def plot_cmc(curves: Mapping[str, Sequence[float]], out: str | Path, max_rank: int = 20, title: str = "") -> Path:
    """`draw_cmc(curves)` saved to `out` (.png, .svg or .pdf)."""
    return save_figure(draw_cmc(curves, max_rank, title), out)


# ---------------------------------------------------------------------------------------------- embeddings


def draw_embedding(points: Any, pids: Any, modalities: Any, title: str = "") -> Any:
    """2-d points (e.g. t-SNE) coloured by identity, marker by modality (circle visible, triangle infrared)."""
    fig = new_figure(*SIZES["tsne"])
    ax = fig.add_subplot(1, 1, 1)
    pts = np.asarray(points, dtype=np.float64)
    pids = np.asarray(pids, dtype=np.int64)
    codes = modality_codes(modalities)
    if pts.ndim != 2 or pts.shape[1] != 2 or not (len(pts) == len(pids) == len(codes)):
        raise ValueError(f"points must be (N, 2) with one pid and modality per row, got {pts.shape}, {len(pids)} "
                         f"pids, {len(codes)} modalities")
    ids = sorted(set(pids.tolist()))
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if len(ids) > 10 else "tab10"]
    for k, pid in enumerate(ids):
        colour = cmap(k % cmap.N)
        for mod in (Modality.VISIBLE, Modality.INFRARED):
            sel = (pids == pid) & (codes == mod.code)
            if sel.any():
                ax.scatter(pts[sel, 0], pts[sel, 1], s=42, marker=MARKERS[mod], color=colour,
                           edgecolors="black" if mod is Modality.INFRARED else "white", linewidths=0.6,
                           label=f"id {pid}" if mod is Modality.VISIBLE else None)
    from matplotlib.lines import Line2D

    modality_legend = ax.legend(handles=[Line2D([], [], ls="", marker=MARKERS[m], color="grey", ms=8, label=str(m))
                                         for m in MARKERS], loc="upper left", fontsize=9, title="modality")
    ax.add_artist(modality_legend)
    if len(ids) <= 20:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="identity", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(pts)} images of {len(ids)} identities", fontsize=11)
    return fig


def plot_tsne(features: Any, pids: Any, modalities: Any, out: str | Path, num_ids: int = 10,
              per_modality: int = 12, seed: int = 0, title: str = "") -> Path:
    """t-SNE of a sample of identities (`sample_identities`) of `features`, drawn by `draw_embedding`, to `out`."""
    rows = sample_identities(pids, modalities, num_ids, per_modality, seed)
    if rows.size < 4:
        raise ValueError("t-SNE needs identities seen in both modalities (at least 4 images); none were found")
    points = tsne(np.asarray(features)[rows], seed=seed)
    mods = np.asarray(modality_codes(modalities))[rows]
    return save_figure(draw_embedding(points, np.asarray(pids)[rows], mods, title), out)


# ---------------------------------------------------------------------------------------------- modality gap


def draw_modality_gap(gap: ModalityGap, bins: int = 60) -> Any:
    """Histograms (densities) of same- and different-identity pair distances, within a modality and across the
    two, each panel titled with the AUC of telling them apart by distance."""
    fig = new_figure(*SIZES["modality_gap"])
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    every = [v for v in (gap.within_same, gap.within_different, gap.cross_same, gap.cross_different) if v.size]
    lo = min((float(v.min()) for v in every), default=0.0)
    hi = max((float(v.max()) for v in every), default=2.0)
    edges = np.linspace(lo, max(hi, lo + 1e-3), bins + 1)
    for ax, (name, same, diff, auc) in zip(axes, (
            ("within a modality", gap.within_same, gap.within_different, gap.auc_within),
            ("across modalities (visible vs infrared)", gap.cross_same, gap.cross_different, gap.auc_cross)),
            strict=True):
        for values, label, colour in ((same, "same identity", "#2a9d4b"), (diff, "different identity", "#c8423b")):
            if values.size:
                ax.hist(values, bins=edges, density=True, alpha=0.55, color=colour,
                        label=f"{label} ({values.size} pairs, mean {values.mean():.3f})")
        auc_text = "n/a" if not np.isfinite(auc) else f"{auc:.3f}"
        ax.set_title(f"{name}\nAUC same vs different = {auc_text}", fontsize=10)
        ax.set_xlabel("cosine distance (1 - cos)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("density")
    return fig


def plot_modality_gap(gap: ModalityGap, out: str | Path) -> Path:
    """`draw_modality_gap(gap)` saved to `out` (.png, .svg or .pdf)."""
    return save_figure(draw_modality_gap(gap), out)


# ---------------------------------------------------------------------------------------------- cameras


def draw_camera_rank1(cams: CameraRank1, camera_names: Mapping[int, str] | None = None, title: str = "") -> Any:
    """Heatmap of rank-1 (%) per query camera (rows) and gallery camera (columns); grey "n/a" where no query has
    a true match (a pair the protocol's rule removes)."""
    fig = new_figure(*SIZES["camera_rank1"])
    ax = fig.add_subplot(1, 1, 1)
    r1 = 100 * cams.rank1
    names = dict(camera_names or {})
    masked = np.ma.masked_invalid(r1)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = ax.imshow(masked, cmap=cmap, vmin=0, vmax=100, aspect="auto")
    fig.colorbar(image, ax=ax, label="rank-1 (%)")
    for i in range(r1.shape[0]):
        for j in range(r1.shape[1]):
            v = r1[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.1f}\n({cams.valid[i, j]} q)"
            ax.text(j, i, text, ha="center", va="center", fontsize=10,
                    color="black" if not np.isfinite(v) or v > 60 else "white")
    ax.set_xticks(range(len(cams.gallery_cameras)),
                  [names.get(c, f"cam{c}") for c in cams.gallery_cameras], fontsize=9)
    ax.set_yticks(range(len(cams.query_cameras)),
                  [names.get(c, f"cam{c}") for c in cams.query_cameras], fontsize=9)
    ax.set_xlabel("gallery camera")
    ax.set_ylabel("query camera")
    ax.set_title(title or "rank-1 per camera pair (gallery cut to one camera)", fontsize=11)
    return fig


def plot_camera_rank1(cams: CameraRank1, out: str | Path, camera_names: Mapping[int, str] | None = None,
                      title: str = "") -> Path:
    """`draw_camera_rank1(cams)` saved to `out` (.png, .svg or .pdf)."""
    return save_figure(draw_camera_rank1(cams, camera_names, title), out)
