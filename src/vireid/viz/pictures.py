"""Each method's own pictures: MPANet's pattern maps over the input, LbA's dense cross-modal correspondences and
co-attention. `draw_*` take plain arrays; the thin read-only helpers (`mpanet_pattern_maps`, `lba_correspondences`)
call the methods' existing hooks (`MPANet.pattern_maps`, `LbA.correspondences`) on samples read the way
evaluation reads them, and `method_pictures` says which pictures a method has.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import Modality, Sample
from ._figure import new_figure, save_figure

#: The pictures each kind of method provides, by the name the report and `vireid viz` use.
PATTERN_MAPS = "patterns"
CORRESPONDENCES = "correspondences"
TRANSLATIONS = "translations"


def method_pictures(method: Any) -> list[str]:
    """The method pictures `method` provides: "patterns" (an MPANet with PAM), "correspondences" (LbA), and
    "translations" for a generative method (one whose `image_translations` makes images; tried by the caller)."""
    from ..methods.lba import LbA
    from ..methods.mpanet import MPANet

    out = []
    if isinstance(method, MPANet) and method.pam is not None:
        out.append(PATTERN_MAPS)
    if isinstance(method, LbA):
        out.append(CORRESPONDENCES)
    return out


def _pixels(samples: Sequence[Sample], height: int, width: int) -> np.ndarray:
    from ..data.transforms import eval_image

    return np.stack([eval_image(s, height, width) for s in samples])


def _inputs(method: Any, samples: Sequence[Sample], height: int, width: int) -> Any:
    from ..inference.embed import preprocess

    device = next(method.parameters()).device
    return preprocess(list(samples), height, width, method.inference_spec()).to(device)


def mpanet_pattern_maps(method: Any, samples: Sequence[Sample], height: int, width: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, H, W, 3) uint8 as evaluation sees them, pattern maps (n, l, h, w) float32) of `samples`, each
    image through the branch of its own modality."""
    import torch

    maps = np.zeros((len(samples), 0, 1, 1), dtype=np.float32)
    method.eval()
    parts: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for mod in (Modality.VISIBLE, Modality.INFRARED):
            idx = [i for i, s in enumerate(samples) if s.modality is mod]
            if idx:
                out = method.pattern_maps(_inputs(method, [samples[i] for i in idx], height, width), mod)
                for k, i in enumerate(idx):
                    parts[i] = out[k].float().cpu().numpy()
    if parts:
        maps = np.stack([parts[i] for i in range(len(samples))])
    return _pixels(samples, height, width), maps


def draw_pattern_maps(images: np.ndarray, maps: np.ndarray, captions: Sequence[str] = ()) -> Any:
    """One row per image: the image, then each pattern map (min-max scaled per map) over a grey copy of it."""
    images, maps = np.asarray(images), np.asarray(maps, dtype=np.float32)
    if images.ndim != 4 or maps.ndim != 4 or len(images) != len(maps):
        raise ValueError(f"images must be (n, H, W, 3) and maps (n, l, h, w) with the same n, got {images.shape} "
                         f"and {maps.shape}")
    n, parts = len(images), maps.shape[1]
    h, w = images.shape[1:3]
    cell = 1.25
    fig = new_figure(cell * (parts + 1) * max(w / h, 0.35) * 2 + 0.4, cell * 2 * n + 0.5)
    axes = fig.subplots(n, parts + 1, squeeze=False)
    for i in range(n):
        grey = images[i].mean(axis=2)
        axes[i, 0].imshow(images[i])
        axes[i, 0].set_title(captions[i] if i < len(captions) else "input", fontsize=8)
        for p in range(parts):
            m = maps[i, p]
            m = (m - m.min()) / (m.max() - m.min() + 1e-12)
            axes[i, p + 1].imshow(grey, cmap="gray", vmin=0, vmax=255)
            axes[i, p + 1].imshow(m, cmap="jet", alpha=0.5, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                                  interpolation="bilinear", vmin=0, vmax=1)
            if i == 0:
                axes[i, p + 1].set_title(f"pattern {p + 1}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_pattern_maps(images: np.ndarray, maps: np.ndarray, out: str | Path, captions: Sequence[str] = ()) -> Path:
    """`draw_pattern_maps(images, maps)` saved to `out` (.png, .svg or .pdf)."""
    return save_figure(draw_pattern_maps(images, maps, captions), out)


def lba_correspondences(method: Any, pairs: Sequence[tuple[Sample, Sample]], height: int, width: int,
                        stage: str = "layer4") -> dict[str, np.ndarray]:
    """LbA's CMAlign of each (visible, infrared) pair at `stage`, as arrays: visible and infrared images
    (n, H, W, 3) uint8, prob (n, hw, hw), mask_anchor and coattention (n, h, w), size (2,) = (h, w)."""
    import torch

    vis, ir = [v for v, _ in pairs], [i for _, i in pairs]
    method.eval()
    with torch.no_grad():
        out = method.correspondences(_inputs(method, vis, height, width), _inputs(method, ir, height, width),
                                     stage=stage)
    return {"visible": _pixels(vis, height, width), "infrared": _pixels(ir, height, width),
            "prob": out["prob"].float().cpu().numpy(), "mask_anchor": out["mask_anchor"][:, 0].float().cpu().numpy(),
            "coattention": out["coattention"][:, 0].float().cpu().numpy(),
            "size": out["size"].cpu().numpy().astype(np.int64)}


def draw_correspondences(visible: np.ndarray, infrared: np.ndarray, prob: np.ndarray,
                         size: Sequence[int] | np.ndarray, coattention: np.ndarray | None = None,
                         mask: np.ndarray | None = None, lines: int = 12) -> Any:
    """One row per (visible, infrared) pair: the two images side by side with lines from the `lines` visible
    positions matched most confidently (weighted by the person mask when given) to their most probable infrared
    position, coloured by that probability; then the co-attention over the visible image."""
    import matplotlib
    from matplotlib import patheffects

    visible, infrared, prob = np.asarray(visible), np.asarray(infrared), np.asarray(prob, dtype=np.float32)
    n = len(visible)
    h, w = (int(x) for x in size)
    if prob.shape != (n, h * w, h * w):
        raise ValueError(f"prob must be (n, h*w, h*w) = ({n}, {h * w}, {h * w}), got {prob.shape}")
    H, W = visible.shape[1:3]
    gap = max(4, W // 8)
    cols = 2 if coattention is not None else 1
    fig = new_figure(2.6 * cols + 0.6 * (cols - 1) + 0.8, 2.9 * n + 0.4)
    axes = fig.subplots(n, cols, squeeze=False, width_ratios=[2, 1] if cols == 2 else None)
    cmap = matplotlib.colormaps["viridis"]
    sy, sx = H / h, W / w
    for i in range(n):
        ax = axes[i, 0]
        canvas = np.full((H, 2 * W + gap, 3), 255, dtype=np.uint8)
        canvas[:, :W], canvas[:, W + gap:] = visible[i], infrared[i]
        ax.imshow(canvas)
        best = prob[i].max(axis=1)
        score = best * (np.asarray(mask[i]).reshape(-1) if mask is not None else 1.0)
        for p in np.argsort(-score, kind="stable")[:lines]:
            q = int(prob[i, p].argmax())
            (py, px), (qy, qx) = divmod(int(p), w), divmod(q, w)
            x0, y0 = (px + 0.5) * sx - 0.5, (py + 0.5) * sy - 0.5
            x1, y1 = W + gap + (qx + 0.5) * sx - 0.5, (qy + 0.5) * sy - 0.5
            colour = cmap(float(best[p]))
            # a dark outline keeps bright lines visible over bright pixels
            ax.plot([x0, x1], [y0, y1], color=colour, lw=1.6, marker="o", ms=3.5,
                    path_effects=[patheffects.withStroke(linewidth=3.2, foreground="black")])
        ax.set_title("visible -> infrared (colour: matching probability)" if i == 0 else "", fontsize=8)
        if coattention is not None:
            a = np.asarray(coattention[i], dtype=np.float32)
            axes[i, 1].imshow(visible[i].mean(axis=2), cmap="gray", vmin=0, vmax=255)
            axes[i, 1].imshow(a, cmap="jet", alpha=0.5, extent=(-0.5, W - 0.5, H - 0.5, -0.5),
                              interpolation="bilinear", vmin=0, vmax=1)
            axes[i, 1].set_title("co-attention" if i == 0 else "", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes[:, 0].tolist(), orientation="horizontal",
                 shrink=0.8, fraction=0.04, label="matching probability")
    return fig


def plot_correspondences(data: dict[str, np.ndarray], out: str | Path, lines: int = 12) -> Path:
    """`draw_correspondences` of what `lba_correspondences` returns, saved to `out` (.png, .svg or .pdf)."""
    return save_figure(draw_correspondences(data["visible"], data["infrared"], data["prob"], data["size"],
                                            data.get("coattention"), data.get("mask_anchor"), lines), out)
