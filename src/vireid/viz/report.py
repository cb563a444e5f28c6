"""A self-contained HTML report: a title and a list of blocks (headings, paragraphs, text tables, images)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..utils.atomic import write_text

_STYLE = "body{font-family:sans-serif;max-width:960px;margin:2em auto}pre{background:#f4f4f4;padding:1em}"


@dataclass(frozen=True)
class Block:
    """One piece of a report: kind "h2" (heading), "p" (paragraph), "pre" (preformatted text) or "img"
    (`text` is the image's path relative to the report, `alt` its description)."""

    kind: str
    text: str
    alt: str = ""


def render_report(title: str, blocks: Sequence[Block]) -> str:
    """The report as an HTML page; every text is escaped."""
    parts = []
    for b in blocks:
        if b.kind == "img":
            parts.append(f'<img src="{html.escape(b.text)}" alt="{html.escape(b.alt)}">')
        elif b.kind in ("h2", "p", "pre"):
            parts.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        else:
            raise ValueError(f"report block kind must be h2, p, pre or img, got {b.kind!r}")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(parts)
            + "\n</body></html>")


def write_report(path: str | Path, title: str, blocks: Sequence[Block]) -> Path:
    """Write `render_report(title, blocks)` to `path` atomically."""
    path = Path(path)
    write_text(path, render_report(title, blocks))
    return path
