"""The report page: sections with ids (a table of contents links them), tables, figures with captions, notes.

Every text is escaped here; images are referenced by relative paths beside the page, so it opens from the file
system with no server.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:1.5em auto;
padding:0 1.2em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.sub{color:#666;margin-top:0}
nav{background:#f6f6f6;padding:.6em 1em;border-radius:6px;display:flex;flex-wrap:wrap;gap:.3em 1.2em}
nav a{white-space:nowrap}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin-top:.3em}
pre{background:#f4f4f4;padding:.8em;overflow-x:auto}.note{color:#8a5a00}
"""


def esc(text: object) -> str:
    """`text` escaped for HTML."""
    return html.escape(str(text))


def para(text: str, cls: str = "") -> str:
    """A paragraph of plain text."""
    return f'<p class="{esc(cls)}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def heading(text: str) -> str:
    """A sub-heading inside a section."""
    return f"<h3>{esc(text)}</h3>"


def pre(text: str) -> str:
    """Preformatted text."""
    return f"<pre>{esc(text)}</pre>"


def table(head: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int | None = None) -> str:
    """A table (no header row when `head` is empty); columns from `numeric_from` on are right-aligned numbers."""
    out = ["<table>"]
    if head:
        out += ["<thead><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        cells = [f'<td class="num">{esc(c)}</td>' if numeric_from is not None and i >= numeric_from
                 else f"<td>{esc(c)}</td>" for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def figure(src: str, alt: str, caption: str = "") -> str:
    """An image beside the page (`src` relative to it) with its caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{esc(src)}" alt="{esc(alt)}">{cap}</figure>'


@dataclass
class Section:
    """One part of the report: an anchor id, a heading, and its HTML fragments (built with the helpers here)."""

    id: str
    title: str
    parts: list[str] = field(default_factory=list)


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page: title, a table of contents, the sections."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>\n' + "\n".join(s.parts) + "</section>"
                     for s in sections)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>'
            f'<body><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p><nav>{nav}</nav>\n{body}\n</body></html>\n')
