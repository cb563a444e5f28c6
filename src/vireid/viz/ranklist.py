"""Rank lists as a picture: one row per query, its tile first, then its ranked hits, each framed and captioned.

The renderer takes plain rows (`RankRow` of `Tile`s), so the demo, `vireid search --render` and
reports share it without knowing each other's types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import Modality, Sample, VireidError
from ..utils.atomic import atomic_path

if TYPE_CHECKING:
    from .analysis import RankedQuery

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
    """Draw `rows` (`ranklist_image`) into a PNG at `out` (atomic write; SVG or PDF when `out` ends so)."""
    sheet = ranklist_image(rows, tile, gap)
    out = Path(out).expanduser()
    if out.suffix.lower() in (".svg", ".pdf"):
        from ._figure import save_image

        return save_image(sheet, out)
    with atomic_path(out, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return out


def ranklist_image(rows: Sequence[RankRow], tile: tuple[int, int] = (128, 64), gap: int = 12) -> Any:
    """`rows` as one PIL image; `tile` is (height, width) of every image.

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
    return sheet


SHORT = {Modality.VISIBLE: "VIS", Modality.INFRARED: "IR"}


def tile_size(height: int, width: int, tile_height: int = 128) -> tuple[int, int]:
    """(height, width) of rank-list tiles for images of height x width: `tile_height` tall, the same aspect."""
    return tile_height, max(32, round(tile_height * width / max(height, 1)))


def ranked_rows(ranked: Sequence[RankedQuery], queries: Sequence[Sample], gallery: Sequence[Sample]) -> list[RankRow]:
    """Rank-list rows of `ranked` queries (indices into `queries`, orders into `gallery`): the query tile, framed blue
    (identity, camera and modality, AP), its top hits framed green (same identity) or red, each with its rank, identity,
    camera and modality; when the first true match is beyond the hits shown, one more tile shows it and its rank."""
    rows = []
    for r in ranked:
        q = queries[r.query]
        ap = "" if r.ap != r.ap else f"AP {100 * r.ap:.1f}%"  # NaN: an invalid query
        query = Tile(q.path, [f"id {q.pid}", f"cam{q.camid} {SHORT[q.modality]}", ap], QUERY)
        hits = []
        for rank, (gi, ok) in enumerate(zip(r.order, r.correct, strict=True), start=1):
            g = gallery[gi]
            hits.append(Tile(g.path, [f"#{rank} id {g.pid}", f"cam{g.camid} {SHORT[g.modality]}"],
                             CORRECT if ok else WRONG))
        if r.first_match > len(r.order):
            g = gallery[r.first_match_index]
            hits.append(Tile(g.path, [f"1st: #{r.first_match}", f"cam{g.camid} {SHORT[g.modality]}"], CORRECT))
        rows.append(RankRow(query, hits))
    return rows
