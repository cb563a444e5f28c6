"""Figure plumbing shared by every picture: matplotlib and scikit-learn loaded on demand (one-line error naming the
extra when absent), pyplot-free figures, atomic saving as PNG, SVG or PDF, and figures as pixel arrays.

Figures are `matplotlib.figure.Figure` objects built without pyplot, so drawing never touches a user's interactive
backend or global state, and a PNG is exactly figsize x dpi pixels (no tight bounding box), which tests rely on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core import VireidError
from ..utils.atomic import atomic_path

FORMATS = (".png", ".svg", ".pdf")
DPI = 100
EXTRA = "pip install 'vireid[viz]'"


def require_matplotlib() -> Any:
    """The matplotlib module; VireidError with the install command when it is missing."""
    try:
        import matplotlib
    except ImportError as exc:
        raise VireidError(f"drawing figures needs matplotlib, which is not installed; run `{EXTRA}`") from exc
    return matplotlib


def require_sklearn_tsne() -> Any:
    """scikit-learn's TSNE class; VireidError with the install command when scikit-learn is missing."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:
        raise VireidError(f"the t-SNE embedding needs scikit-learn, which is not installed; run `{EXTRA}`") from exc
    return TSNE


def has_sklearn() -> bool:
    """Whether scikit-learn can be imported (the report leaves the t-SNE figure out without it)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float, height: float, dpi: int = DPI) -> Any:
    """A pyplot-free Figure of width x height inches with constrained layout."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def check_format(out: str | Path) -> Path:
    """`out` as a Path; VireidError unless it ends in .png, .svg or .pdf."""
    path = Path(out).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise VireidError(f"cannot write figure {path}: its name must end in {', '.join(FORMATS)} (the format); "
                          f"give e.g. {path.with_suffix('.png').name}")
    return path


def save_figure(fig: Any, out: str | Path) -> Path:
    """Write `fig` to `out` (format from the suffix: .png, .svg, .pdf) atomically; returns the path."""
    path = check_format(out)
    fmt = path.suffix.lower()[1:]
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, format=fmt, dpi=fig.dpi, metadata=_metadata(fmt))
    return path


def _metadata(fmt: str) -> dict[str, Any] | None:
    # no creation dates in SVG/PDF: the same data draws the same file
    return {"Date": None} if fmt in ("svg", "pdf") else None


def figure_array(fig: Any) -> np.ndarray:
    """The figure's pixels as an (H, W, 3) uint8 array (TensorBoard images, tests)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_image(image: Any, out: str | Path) -> Path:
    """Write a PIL image to `out` atomically: PNG as is; SVG or PDF through matplotlib at the same pixel size."""
    path = check_format(out)
    if path.suffix.lower() == ".png":
        with atomic_path(path, suffix=".png") as tmp:
            image.save(tmp, format="PNG")
        return path
    width, height = image.size
    fig = new_figure(width / DPI, height / DPI)
    fig.set_layout_engine("none")
    fig.figimage(np.asarray(image.convert("RGB")), 0, 0)
    return save_figure(fig, path)


def no_data(ax: Any, text: str) -> None:
    """Write `text` in the middle of an empty axis (a panel with nothing to draw)."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#555555")
