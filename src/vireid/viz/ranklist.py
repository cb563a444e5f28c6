"""Rank lists as a picture: one row per query, its tile first, then its ranked hits, each framed and captioned.

The renderer takes plain rows (`RankRow` of `Tile`s), so the demo, `vireid search --render` and
reports share it without knowing each other's types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import VireidError
from ..utils.atomic import atomic_path

Colour = "str | tuple[int, int, int]"

QUERY = (60, 60, 200)
CORRECT = (0, 170, 0)
WRONG = (210, 0, 0)


@dataclass
class Tile:
    """One image of a rank list: a path or PIL image (None: missing, drawn empty), caption lines, frame colour."""

    image: Any
    caption: list[str] = field(default_factory=list)
    colour: Any = "black"


@dataclass
class RankRow:
    """A query tile and its hits, best first."""

    query: Tile
    hits: list[Tile]


def _load(image: Any) -> Any:
    """A PIL image of `image` (a path or PIL image); None when it cannot be read."""
    from PIL import Image

    from ..data.images import load_rgb

    if image is None or isinstance(image, Image.Image):
        return image
    try:
        return load_rgb(image)
    except (VireidError, OSError):
        return None


def render_ranklist(rows: Sequence[RankRow], out: str | Path, tile: tuple[int, int] = (128, 64),
                    gap: int = 12) -> Path:
    """Draw `rows` into a PNG at `out` (atomic write); `tile` is (height, width) of every image.

    Images keep their aspect ratio (padded with black), frames are 3 px in the tile's colour, the
    query column is set apart by `gap` pixels, and caption lines go under their tile.
    """
    from PIL import Image, ImageDraw, ImageOps

    th, tw = tile
    lines = max((len(t.caption) for r in rows for t in (r.query, *r.hits)), default=0)
    caption = 12 * lines + (4 if lines else 0)
    pad = 4
    ncols = 1 + max((len(r.hits) for r in rows), default=0)
    cell_w, cell_h = tw + 2 * pad, th + 2 * pad + caption
    sheet = Image.new("RGB", (ncols * cell_w + gap, max(1, len(rows)) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = r * cell_h + pad
        for c, t in enumerate((row.query, *row.hits)):
            x = c * cell_w + pad + (gap if c else 0)
            img = _load(t.image)
            if img is not None:
                sheet.paste(ImageOps.pad(img, (tw, th), color=(0, 0, 0)), (x, y))
            draw.rectangle([x - 3, y - 3, x + tw + 2, y + th + 2], outline=t.colour, width=3)
            for k, line in enumerate(t.caption):
                draw.text((x, y + th + 4 + 12 * k), line, fill="black")
    out = Path(out).expanduser()
    with atomic_path(out, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return out
