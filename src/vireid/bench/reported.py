"""The papers' numbers, read from the "Reported numbers" tables of docs/methods/<method>.md (one source of truth).

Each method page has a section headed "Reported numbers ..." (or "The paper's numbers ..."); its markdown tables
come in three shapes, all read here:

- metric columns (`| setting | R1 | R10 | R20 | mAP |`): one setting per row;
- setting columns (`| source | all-search | indoor R1/mAP | RegDB thermal→visible |`): one source per row, each
  cell `a / b / ...` in the order its header names, else the order the paragraph above the table names;
- a value column (`| setting | full model |`): one setting per row, cells `a / b / ...` as above.

A setting is a key such as `sysu/all/single`, `regdb/visible_to_thermal`, `llcm/ir_to_visible`; the first table
row of a setting wins (the paper's own table comes before re-runs and ablations). Values are percent, as printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HEADING = re.compile(r"^##\s+(.*(?:reported numbers|paper'?s'? numbers).*)$", re.I)
_METRIC = {"r1": "rank1", "rank1": "rank1", "rank-1": "rank1", "r5": "rank5", "rank5": "rank5", "rank-5": "rank5",
           "r10": "rank10", "rank10": "rank10", "rank-10": "rank10", "r20": "rank20", "rank20": "rank20",
           "rank-20": "rank20", "map": "mAP", "minp": "mINP"}
_TOKEN = r"(?:R-?\d+|rank-?\d+|mAP|mINP)"
_SEQUENCE = re.compile(rf"{_TOKEN}(?:\s*/\s*{_TOKEN})+", re.I)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
_ARROW = re.compile(r"(visible|thermal|infrared|nir|ir)\s*(?:→|->|to)\s*(visible|thermal|infrared|nir|ir)", re.I)


@dataclass(frozen=True)
class Reported:
    """A paper's numbers for one setting (percent, as printed), and where they were read."""

    method: str
    setting: str  # e.g. "sysu/all/single"
    values: dict  # metric key (rank1, rank10, rank20, mAP, mINP) -> percent
    source: str  # "docs/methods/<method>.md, <section heading>"
    label: str  # the row (or column) text the numbers came from

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, values as fractions in [0, 1] like every measured number (percent as printed: /100)."""
        return {"setting": self.setting, "values": {k: v / 100.0 for k, v in self.values.items()},
                "source": self.source, "label": self.label}


def setting_of(protocol: str, options: dict) -> str | None:
    """The setting key a protocol and its options evaluate (sysu/all/single, regdb/<direction>, llcm/<direction>)."""
    if protocol == "sysu":
        mode = str(options.get("mode", "all"))
        shots = "multi" if int(options.get("shots", 1)) > 1 else "single"
        return f"sysu/{mode}/{shots}"
    if protocol == "regdb":
        return f"regdb/{options.get('direction', 'visible_to_thermal')}"
    if protocol == "llcm":
        direction = str(options.get("direction", "ir_to_visible"))
        return "llcm/visible_to_ir" if direction.startswith("visible_to_ir") else "llcm/ir_to_visible"
    return None


def parse_setting(text: str, context: str = "") -> str | None:
    """The setting key a table's row or column label names ("SYSU-MM01 indoor", "RegDB visible→thermal", ...);
    `context` (the paragraph above the table) names the dataset when the label does not. None: not a setting."""
    t, ctx = text.lower(), context.lower()
    arrow = _ARROW.search(t)
    if "regdb" in t:
        dataset = "regdb"
    elif "llcm" in t:
        dataset = "llcm"
    elif "sysu" in t or re.search(r"\ball\b|all-search|indoor", t):
        dataset = "sysu"
    elif arrow and ("regdb" in ctx or "llcm" in ctx):
        dataset = "regdb" if "regdb" in ctx else "llcm"
    else:
        return None
    if dataset == "sysu":
        return f"sysu/{'indoor' if 'indoor' in t else 'all'}/{'multi' if 'multi' in t else 'single'}"
    if arrow is None:
        return None
    from_visible = arrow.group(1).lower() == "visible"
    if dataset == "regdb":
        return "regdb/visible_to_thermal" if from_visible else "regdb/thermal_to_visible"
    return "llcm/visible_to_ir" if from_visible else "llcm/ir_to_visible"


def _metric(text: str) -> str | None:
    return _METRIC.get(re.sub(r"\s+", "", text.strip().lower()))


def _orders(text: str) -> list[list[str]]:
    """Every metric sequence written in `text` ("R1 / R10 / R20 / mAP" -> [rank1, rank10, rank20, mAP])."""
    out = []
    for m in _SEQUENCE.finditer(text):
        keys = [_metric(p) for p in m.group(0).split("/")]
        if all(keys):
            out.append([k for k in keys if k])
    return out


def _values(cell: str, header: str, paragraph: str) -> dict[str, float]:
    """The numbers of a cell `a / b / ...` keyed by the metric order its header, else the paragraph, names."""
    numbers = [float(n) for n in _NUMBER.findall(cell)]
    if not numbers:
        return {}
    single = _metric(header)
    if single and len(numbers) == 1:
        return {single: numbers[0]}
    for order in _orders(header) + _orders(paragraph):
        if len(order) == len(numbers):
            return dict(zip(order, numbers, strict=True))
    return {}


def _split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _tables(lines: list[str]) -> list[tuple[str, list[list[str]]]]:
    """(the text above the table, rows incl. the header) of each markdown table; a table right after another
    shares the text above the first."""
    out: list[tuple[str, list[list[str]]]] = []
    paragraph: list[str] = []
    rows: list[list[str]] = []
    last = ""
    for line in [*lines, ""]:
        if line.lstrip().startswith("|"):
            cells = _split_row(line)
            if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                rows.append(cells)
            continue
        if rows:
            last = " ".join(paragraph) or last
            out.append((last, rows))
            rows, paragraph = [], []
        if line.strip():
            paragraph.append(line.strip())
    return out


def parse_reported(text: str, method: str, source: str = "") -> dict[str, Reported]:
    """The settings and numbers of one method page's reported-numbers section (empty when it has none)."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if _HEADING.match(ln)), None)
    if start is None:
        return {}
    heading = _HEADING.match(lines[start]).group(1).strip()  # type: ignore[union-attr]
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^#{1,2}\s", lines[i])), len(lines))
    where = f"{source}, {heading}" if source else heading
    found: dict[str, Reported] = {}

    def add(setting: str | None, values: dict[str, float], label: str) -> None:
        if setting and values and setting not in found:
            found[setting] = Reported(method, setting, values, where, label)

    for paragraph, rows in _tables(lines[start + 1:end]):
        header, body = rows[0], rows[1:]
        columns = header[1:]
        if any(_metric(c) for c in columns):  # metric columns: one setting per row
            for row in body:
                values = {}
                for col, cell in zip(columns, row[1:], strict=False):
                    key = _metric(col)
                    nums = _NUMBER.findall(cell)
                    if key and len(nums) == 1:
                        values[key] = float(nums[0])
                add(parse_setting(row[0], paragraph), values, row[0])
        elif any(parse_setting(c, paragraph) for c in columns):  # setting columns: one source per row
            for row in body:
                for col, cell in zip(columns, row[1:], strict=False):
                    add(parse_setting(col, paragraph), _values(cell, col, paragraph), f"{row[0]} ({col})")
        elif columns:  # one value column (the first) per setting row
            for row in body:
                if len(row) > 1:
                    add(parse_setting(row[0], paragraph), _values(row[1], columns[0], paragraph),
                        f"{row[0]} ({columns[0]})")
    return found


def default_folder() -> Path | None:
    """The repository's docs/methods (beside src/), else ./docs/methods; None when neither exists."""
    here = Path(__file__).resolve().parents[3] / "docs" / "methods"
    for folder in (here, Path("docs") / "methods"):
        if folder.is_dir():
            return folder
    return None


def read_reported(folder: str | Path | None = None) -> dict[str, dict[str, Reported]]:
    """{method name: {setting: Reported}} from every <method>.md in `folder` (default: `default_folder()`)."""
    where = Path(folder).expanduser() if folder else default_folder()
    if where is None or not where.is_dir():
        return {}
    out = {}
    for page in sorted(where.glob("*.md")):
        rel = Path(where.resolve().parent.name) / where.resolve().name / page.name  # docs/methods/x.md, anywhere
        found = parse_reported(page.read_text(encoding="utf-8"), page.stem, rel.as_posix())
        if found:
            out[page.stem] = found
    return out
