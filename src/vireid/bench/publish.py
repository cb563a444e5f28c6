"""Publishing a leaderboard: its files and its done cells (records and results, no checkpoints: archive.py) copied to
a folder kept under version control, and its summary written into a README between two marker lines
(`vireid bench ... --publish DIR --readme FILE`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..core import ConfigError
from ..utils.atomic import atomic_path, storage_errors, write_text
from .archive import archive_cells
from .layout import LEADERBOARD_FORMATS, BenchDir
from .leaderboard import summary_table
from .spec import BenchSpec
from .stats import FEW_SEEDS_NOTE

BEGIN = "<!-- leaderboard:begin -->"
END = "<!-- leaderboard:end -->"


def published_names(board: dict[str, Any]) -> list[str]:
    """The leaderboard's files: the four formats and its CMC plots."""
    return [*(f"leaderboard.{f}" for f in LEADERBOARD_FORMATS), *board["cmc_plots"].values()]


def publish(spec: BenchSpec, bench_dir: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy the leaderboard's files from `bench_dir` to `dest`, each atomically, with the done cells it counts
    (`archive_cells`), and return the leaderboard they hold (the last writer's); remove the CMC plots an earlier
    publish left there for protocols the board no longer has (nothing else in `dest` is touched)."""
    bench, dest = BenchDir(bench_dir), Path(dest)
    with storage_errors(dest):
        dest.mkdir(parents=True, exist_ok=True)
    with bench.leaderboard_lock():  # the files of one leaderboard, not of two writers
        published: dict[str, Any] = json.loads((bench.path / "leaderboard.json").read_text())
        skip = {*published["cells"]["missing"], *(f["cell"] for f in published["failed"])}
        archive_cells(spec, [c.id for c in spec.cells() if c.id not in skip], bench.path, dest)  # refuses first
        names = published_names(published)
        for stale in dest.glob("cmc-*.png"):
            if stale.name not in names:
                stale.unlink()
        for name in names:
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(bench.path / name, tmp)
    return published


def check_readme(readme: str | Path) -> str:
    """The README's text, if it has one BEGIN line and, after it, one END line; else a one-line ConfigError."""
    path = Path(readme)
    if not path.is_file():
        raise ConfigError(f"--readme {path}: no such file; give the README that holds the leaderboard block")
    text = path.read_text(encoding="utf-8")
    begin, end = text.count(BEGIN), text.count(END)
    if begin != 1 or end != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"--readme {path}: expected one '{BEGIN}' line and, after it, one '{END}' line (found "
                          f"{begin} and {end}); add the two lines where the leaderboard goes")
    return text


def seeds_complete(board: dict[str, Any]) -> list[int]:
    """The seeds done in every row: those over which every method is compared."""
    rows = board["rows"]
    if not rows:
        return []
    return sorted(set.intersection(*(set(r["seeds_done"]) for r in rows)))


def leader_lines(board: dict[str, Any]) -> list[str]:
    """Per protocol (plain rows), the first method against the second on their common seeds: the mean mAP
    difference, its bootstrap interval and how many seeds the first is higher in; only from two common seeds on."""
    plain = [r for r in board["rows"] if not r["rerank"] and r["measured"]["mAP"]["mean"] is not None]
    lines = []
    for protocol in dict.fromkeys(r["protocol"] for r in plain):
        rows = [r["method"] for r in plain if r["protocol"] == protocol]  # by mAP, best first
        if len(rows) < 2:
            continue
        first, second = rows[:2]
        pair = next((c for c in board["comparisons"] if c["protocol"] == protocol and not c["rerank"]
                     and {c["a"], c["b"]} == {first, second}), None)
        if pair is None or pair["mAP"]["ci"] is None:
            continue
        d = pair["mAP"]
        sign = 1.0 if pair["a"] == first else -1.0  # comparisons are A - B in the spec's order
        lo, hi = sorted(sign * x for x in d["ci"])
        higher = d["a_wins"] if sign > 0 else d["b_wins"]
        lines.append(f"- {protocol}: {first} − {second}, mAP {100 * sign * d['mean']:+.2f} points "
                     f"({int(100 * d['confidence'])}% bootstrap CI [{100 * lo:+.2f}, {100 * hi:+.2f}] over "
                     f"{len(d['seeds'])} seeds; {first} higher in {higher} of them)")
    return lines


def readme_block(board: dict[str, Any], link: str) -> str:
    """The README's generated leaderboard block: the summary table, the first two methods of each protocol paired
    seed by seed, the state of the cells, where and when it was made, and a link to the full leaderboard."""
    g, cells = board["generated"], board["cells"]
    seeds = seeds_complete(board)
    if cells["done"] == cells["total"]:
        state = f"All {cells['total']} cells are done."
    else:
        every = (f"every method and dataset is done at seed {', '.join(map(str, seeds))}" if seeds
                 else "no seed is done for every method and dataset yet")
        state = (f"**In progress: {cells['done']} of {cells['total']} cells are done** ({every}). "
                 + ("A std needs two seeds, and a difference between two methods comes with its uncertainty only "
                    "from two seeds on. " if len(seeds) < 2 else "")
                 + "The bench resumes where it stopped.")
    if cells["failed"]:
        state += f" {cells['failed']} cell(s) failed: see the full leaderboard."
    revisions = ", ".join(_short(r) for r in g.get("cell_revisions") or [])
    hours = {k: (g.get(k) or 0.0) / 3600 for k in ("cells_train_seconds", "cells_eval_seconds", "cells_wall_seconds")}
    made = (f"Written on {g['date']} by vireid {g['vireid']} at commit {_short(g.get('git_revision'))}"
            f" from cells trained at commit {revisions or 'unknown'}, on {g['host']} ({g['machine']}; "
            f"{', '.join(g['devices']) or 'no device recorded'}). Summed over cells, their training loops took "
            f"{hours['cells_train_seconds']:.1f} h (each epoch's own time, a resumed cell's earlier epochs included), "
            f"their evaluation {hours['cells_eval_seconds']:.1f} h, and their wall time was "
            f"{hours['cells_wall_seconds']:.1f} h (each cell's last attempt: a killed attempt leaves no record).")
    pairs = leader_lines(board)
    if pairs:
        pairs = ["The first two methods of each protocol, paired seed by seed (first − second):", "", *pairs, "",
                 FEW_SEEDS_NOTE, ""]
    lines = ["R1 and mAP in percent (mean ± std over the seeds done), without re-ranking:", "",
             *summary_table(board), "", *pairs, state, "", made, "",
             f"The full leaderboard (R10, R20, mINP, re-ranked rows, trial spread, parameters, the papers' numbers, "
             f"CMC plots, paired comparisons): [`{link}`]({link})."]
    return "\n".join(lines)


def _short(revision: str | None) -> str:
    """A commit's 7-character form, keeping '-dirty' (code modified since that commit)."""
    if not revision:
        return "unknown"
    return revision[:7] + ("-dirty" if revision.endswith("-dirty") else "")


def update_readme(readme: str | Path, board: dict[str, Any], published: str | Path) -> None:
    """Replace what lies between the README's BEGIN and END lines with `readme_block`, linking the published
    leaderboard.md relative to the README; the README is rewritten atomically."""
    path = Path(readme)
    text = check_readme(path)
    link = Path(os.path.relpath(Path(published).resolve() / "leaderboard.md", path.resolve().parent)).as_posix()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    write_text(path, f"{head}{BEGIN}\n{readme_block(board, link)}\n{END}{tail}")
