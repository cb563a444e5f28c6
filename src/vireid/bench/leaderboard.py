"""The leaderboard: one row per method x protocol (x re-ranking, rows of their own) aggregated over seeds from the
cells' results.json, the papers' numbers in a column of their own, paired comparisons, CMC plots.

Measured numbers are fractions in leaderboard.json (as in results.json) and percent in the other files. A row's
metric is the mean over its seeds of each seed's trial mean, with the sample std over seeds (ddof=1; 0 for one
seed in the .json and .csv, not shown in the .md and .html); its "trial spread" is the mean over seeds of each
seed's std over the protocol's trials.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..engine.results import RERANK_SUFFIX, EvalResults, _jsonable
from ..runs import git_revision
from ..utils.atomic import atomic_path, clean_leftovers, write_json, write_text
from .cell import CELL_FAILED, cell_done
from .layout import LEADERBOARD_FORMATS, BenchDir
from .reported import read_reported, setting_of
from .spec import BenchSpec
from .stats import FEW_SEEDS_NOTE, mean_std, paired_comparison

log = logging.getLogger(__name__)

SCHEMA = "vireid.leaderboard/1"
METRICS = ("rank1", "rank10", "rank20", "mAP", "mINP")
HEADS = {"rank1": "R1", "rank10": "R10", "rank20": "R20", "mAP": "mAP", "mINP": "mINP"}
REPORTED_HEAD = "paper's numbers (reported, real dataset; not measured here)"


def build_leaderboard(spec: BenchSpec, bench_dir: str | Path, *, wall_seconds: float | None = None
                      ) -> dict[str, Any]:
    """The leaderboard.json object of the cells of `spec` under `bench_dir` (cells not done are listed, not
    counted)."""
    bench = BenchDir(bench_dir)
    reported = read_reported(spec.reported_numbers)
    cells: dict[str, dict[str, Any]] = {}
    failed, missing = [], []
    for cell in spec.cells():
        run = bench.run(cell.id)
        record = bench.read_record(cell.id)
        if record is not None and record.get("status") == CELL_FAILED:
            failed.append({"cell": cell.id, "error": record.get("error"), "attempts": record.get("attempts")})
        elif record is not None and cell_done(spec, bench, cell):
            cells[cell.id] = {"record": record, "results": EvalResults.load(run.results)}
        else:
            missing.append(cell.id)
    rows, comparisons, groups = [], [], []
    for dataset, proto in spec.protocols():
        for rerank in (False, True) if spec.eval.rerank else (False,):
            group = []
            for method in spec.methods:
                ids = {s: f"{method.name}/{dataset.name}/seed{s}" for s in spec.seeds}
                done = {s: cells[i] for s, i in ids.items() if i in cells}
                row = _row(spec, method, dataset, proto, rerank, done,
                           [f for f in failed if f["cell"] in ids.values()], reported)
                group.append(row)
            group.sort(key=lambda r: -(r["measured"]["mAP"]["mean"] if r["measured"]["mAP"]["mean"] is not None
                                       else -math.inf))
            groups.append(group)
            rows += group
    for g, group in enumerate(groups):
        by_name = {r["method"]: r for r in group}
        ordered = [by_name[m.name] for m in spec.methods]
        for p, (a, b) in enumerate(itertools.combinations(ordered, 2)):
            comparisons.append(_compare(spec, a, b, seed=[spec.stats.seed, g, p]))
    records = [c["record"] for c in cells.values()]
    revisions = sorted({str(r.get("git_revision") or "unknown") for r in records})
    devices = sorted({r.get("device_name", "?") for r in records})
    return _jsonable({
        "schema": SCHEMA, "bench": spec.name, "spec": str(spec.path), "bench_dir": str(bench.path),
        "description": spec.description,
        "generated": {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "vireid": __version__,
                      "git_revision": git_revision(), "cell_revisions": revisions, "host": platform.node(),
                      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
                      "devices": devices, "wall_seconds": wall_seconds,
                      **{f"cells_{k}": float(sum(r.get(k) or 0.0 for r in records))
                         for k in ("wall_seconds", "train_seconds", "eval_seconds")}},
        "units": "fractions in [0, 1] (the .md, .csv and .html files show percent)",
        "std": "sample std over seeds (ddof=1); 0 for one seed",
        "trial_spread": "mean over seeds of the sample std over the protocol's trials (gallery samplings)",
        "evaluation": {"feature": spec.eval.feature, "flip": spec.eval.flip, "rerank": spec.eval.rerank,
                       "distance": spec.eval.distance},
        "reported_note": "reported: the paper's numbers for the same protocol, read from the 'Reported numbers' "
                         "table of docs/methods/<method>.md; on the paper's own (real) dataset and recipe, never "
                         "averaged with, or substituted for, a measured number",
        "cells": {"total": len(spec.cells()), "done": len(cells), "failed": len(failed), "missing": missing},
        "rows": rows, "comparisons": comparisons, "failed": failed,
        "cmc_plots": {p.name: bench.cmc_plot(p.name).name for _, p in spec.protocols()},
    })


def _row(spec: BenchSpec, method: Any, dataset: Any, proto: Any, rerank: bool, done: dict[int, dict],
         failed: list[dict], reported: dict) -> dict[str, Any]:
    per_seed: dict[int, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    for seed, cell in sorted(done.items()):
        record, results = cell["record"], cell["results"]
        key = record["protocols"][proto.name]
        fr = results.get(key, record["feature"] + (RERANK_SUFFIX if rerank else ""))
        per_seed[seed] = {"values": fr.mean(), "trial_std": fr.std(), "cmc": fr.mean_cmc(),
                          "trials": {t.name: t.values for t in fr.trials}, "record": record}
        info = {"results_key": key, "rerank_params": results[key].info.get("rerank_params") if rerank else None}
    measured = {}
    for metric in (*METRICS, "rank5"):
        values = [p["values"].get(metric) for p in per_seed.values()]
        values = [v for v in values if v is not None]
        mean, std = mean_std(values)
        spreads = [p["trial_std"].get(metric) for p in per_seed.values() if p["trial_std"].get(metric) is not None]
        measured[metric] = {"mean": mean, "std": std, "per_seed": values, "trial_spread": mean_std(spreads)[0]}
    records = [p["record"] for p in per_seed.values()]
    first = records[0] if records else {}
    setting = setting_of(proto.protocol, proto.options)
    paper = None if rerank else reported.get(method.method, {}).get(setting or "")
    return {
        "method": method.name, "method_name": method.method, "dataset": dataset.name, "protocol": proto.name,
        "protocol_name": proto.protocol, "options": dict(proto.options), "setting": setting,
        "results_key": info.get("results_key"), "feature": first.get("feature"), "rerank": rerank,
        "rerank_params": info.get("rerank_params"), "flip": spec.eval.flip, "distance": spec.eval.distance,
        "model_selection": first.get("model_selection"),
        "seeds": list(spec.seeds), "seeds_done": sorted(per_seed), "seeds_failed": [f["cell"] for f in failed],
        "measured": measured,
        "per_seed_trials": {str(s): p["trials"] for s, p in per_seed.items()},
        "cmc": _mean_curve([p["cmc"] for p in per_seed.values()]),
        "input_size": first.get("input_size"), "epochs": first.get("epochs"), "parameters": first.get("parameters"),
        "train_seconds": _stat([r.get("train_seconds") for r in records]),
        "ms_per_image": _stat([r.get("ms_per_image") for r in records]),
        "devices": sorted({str(r.get("device_name")) for r in records}),
        "reported": paper.to_json() if paper is not None else None,
    }


def _stat(values: list) -> dict[str, float | None]:
    mean, std = mean_std([float(v) for v in values if v is not None])
    return {"mean": mean, "std": std}


def _mean_curve(curves: list[list[float]]) -> list[float]:
    curves = [c for c in curves if c]
    if not curves:
        return []
    n = min(len(c) for c in curves)
    return [float(v) for v in np.mean([c[:n] for c in curves], axis=0)]


def _compare(spec: BenchSpec, a: dict, b: dict, seed: list[int]) -> dict[str, Any]:
    """Paired comparison of rows `a` and `b` (one protocol, one re-ranking flag) on their common seeds."""
    def by_seed(row: dict, metric: str) -> dict[int, float]:
        return {s: v for s, v in zip(row["seeds_done"], row["measured"][metric]["per_seed"], strict=True)}

    trials = {}
    for s in set(a["seeds_done"]) & set(b["seeds_done"]):
        ta, tb = a["per_seed_trials"][str(s)], b["per_seed_trials"][str(s)]
        names = [n for n in ta if n in tb]  # the same gallery samplings: trial by trial
        trials[s] = ([ta[n]["mAP"] for n in names], [tb[n]["mAP"] for n in names])
    out = {"protocol": a["protocol"], "rerank": a["rerank"], "a": a["method"], "b": b["method"],
           "metric": "mAP",
           "mAP": paired_comparison(by_seed(a, "mAP"), by_seed(b, "mAP"), resamples=spec.stats.bootstrap,
                                    seed=seed, confidence=spec.stats.confidence, trials=trials),
           "rank1": paired_comparison(by_seed(a, "rank1"), by_seed(b, "rank1"), resamples=spec.stats.bootstrap,
                                      seed=seed, confidence=spec.stats.confidence),
           "bootstrap_seed": seed}
    return out


# ------------------------------------------------------------------------------------------------ writing


def write_leaderboard(spec: BenchSpec, bench_dir: str | Path, *, wall_seconds: float | None = None
                      ) -> dict[str, Any]:
    """Build the leaderboard and write BENCH/leaderboard.{json,csv,md,html} and the CMC plots, each atomically,
    holding the leaderboard's lock (after removing what a killed writer left half-written)."""
    bench = BenchDir(bench_dir)
    with bench.leaderboard_lock():
        for target in (*(bench.leaderboard(f) for f in LEADERBOARD_FORMATS),
                       *(bench.cmc_plot(p.name) for _, p in spec.protocols())):
            clean_leftovers(target)
        board = build_leaderboard(spec, bench.path, wall_seconds=wall_seconds)
        plots = write_cmc_plots(board, bench)
        board["cmc_plots"] = {k: v for k, v in board["cmc_plots"].items() if k in plots}
        write_json(bench.leaderboard("json"), board)
        write_text(bench.leaderboard("csv"), format_csv(board))
        write_text(bench.leaderboard("md"), format_markdown(board))
        write_text(bench.leaderboard("html"), format_html(board))
    log.info("[bench] leaderboard: %s (.md, .csv, .html)", bench.leaderboard("json"))
    return board


def _pct(stat: dict | None, seeds: int, digits: int = 2) -> str:
    """'mean ± std' in percent over `seeds` seeds; the mean alone for one seed (a std of one value says nothing)."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    if seeds < 2:
        return f"{100 * stat['mean']:.{digits}f}"
    return f"{100 * stat['mean']:.{digits}f} ± {100 * (stat.get('std') or 0.0):.{digits}f}"


def _reported_text(rep: dict | None) -> str:
    if not rep:
        return "—"
    values = rep["values"]
    return " · ".join(f"{HEADS[k]} {100 * values[k]:.2f}" for k in METRICS if k in values)


def _rerank_text(row: dict) -> str:
    if not row["rerank"]:
        return "no"
    p = row.get("rerank_params")
    if not p:  # read from the cells' results: a row with no finished seed has none to show
        return "yes"
    return f"yes (k1={p.get('k1')}, k2={p.get('k2')}, λ={p.get('lambda')})"


def _seeds_text(row: dict) -> str:
    text = f"{len(row['seeds_done'])}/{len(row['seeds'])}"
    return text + (f" ({len(row['seeds_failed'])} failed)" if row["seeds_failed"] else "")


def _params_text(n: Any) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} M"


def _seconds_text(stat: dict) -> str:
    return "n/a" if stat.get("mean") is None else f"{stat['mean']:.1f} s"


def _ms_text(stat: dict) -> str:
    return "n/a" if stat.get("mean") is None else f"{stat['mean']:.2f}"


COLUMNS = ("method", "feature", "re-ranking", "flip", "model selection", "seeds", "R1", "R10", "R20", "mAP",
           "mINP", "mAP trial spread", "input", "epochs", "params", "train time / seed", "device", "ms / image",
           REPORTED_HEAD)


def _cells(row: dict) -> list[str]:
    m = row["measured"]
    size = row.get("input_size")
    return [row["method"], str(row.get("feature") or "n/a"), _rerank_text(row), "yes" if row["flip"] else "no",
            str(row.get("model_selection") or "n/a"), _seeds_text(row),
            *(_pct(m[k], len(row["seeds_done"])) for k in METRICS),
            "n/a" if m["mAP"]["trial_spread"] is None else f"{100 * m['mAP']['trial_spread']:.2f}",
            f"{size[0]}x{size[1]}" if size else "n/a", str(row.get("epochs") or "n/a"),
            _params_text(row.get("parameters")), _seconds_text(row["train_seconds"]),
            ", ".join(row["devices"]) or "n/a", _ms_text(row["ms_per_image"]), _reported_text(row["reported"])]


def _groups(board: dict) -> list[tuple[str, list[dict]]]:
    out: dict[str, list[dict]] = {}
    for row in board["rows"]:
        out.setdefault(row["protocol"], []).append(row)
    return list(out.items())


def _comparison_lines(board: dict) -> list[str]:
    lines = []
    for c in board["comparisons"]:
        d = c["mAP"]
        if len(d["seeds"]) < 2:
            continue
        tag = " (re-ranked)" if c["rerank"] else ""
        per = ", ".join(f"{100 * x:+.2f}" for x in d["per_seed"])
        lo, hi = d["ci"]
        lines.append(f"- {c['protocol']}{tag}: **{c['a']} − {c['b']}**, mAP {100 * d['mean']:+.2f} points "
                     f"(per seed: {per}); {int(100 * d['confidence'])}% bootstrap CI [{100 * lo:+.2f}, "
                     f"{100 * hi:+.2f}] over {len(d['seeds'])} seeds ({d['resamples']} resamples); "
                     f"{c['a']} ahead in {d['a_wins']} of {len(d['seeds'])} seeds")
    return lines


def _header_lines(board: dict) -> list[str]:
    g = board["generated"]
    wall = g.get("wall_seconds")
    wall_text = f"{wall:.0f} s this run, " if wall is not None else ""
    trained = g.get("cell_revisions") or []
    trained_text = f"; cells trained at commit {', '.join(trained)}" if trained else ""
    return [
        f"Generated {g['date']} by vireid {g['vireid']} (commit {g.get('git_revision') or 'unknown'}"
        f"{trained_text}) on {g['host']} ({g['machine']}); device(s): {', '.join(g['devices']) or 'n/a'}; wall "
        f"time: {wall_text}{g['cells_wall_seconds']:.0f} s summed over cells (each cell's last attempt; a killed "
        f"attempt leaves no record), training loops {g.get('cells_train_seconds', 0.0):.0f} s summed over cells "
        "(each epoch's own time; a resumed cell's earlier epochs count).",
        f"Cells: {board['cells']['done']} of {board['cells']['total']} done, {board['cells']['failed']} failed, "
        f"{len(board['cells']['missing'])} not run. Evaluation: feature {board['evaluation']['feature']}, flip "
        f"{'on' if board['evaluation']['flip'] else 'off'}, distance {board['evaluation']['distance']}; re-ranked "
        "numbers are rows of their own, never mixed with plain ones.",
        "Metrics in percent: mean ± sample std over seeds; mAP trial spread: mean over seeds of the std over the "
        "protocol's gallery samplings. Model selection never looks at the test set.",
    ]


def _summary(board: dict) -> tuple[list[str], list[list[str]]]:
    """(header, lines) of the summary: one line per method, R1 and mAP of every protocol (plain rows, mean ± std
    over seeds), its seeds and mean training time per cell; methods by mAP on the first protocol."""
    plain = [r for r in board["rows"] if not r["rerank"]]
    protocols = list(dict.fromkeys(r["protocol"] for r in plain))
    by = {(r["method"], r["protocol"]): r for r in plain}
    head = ["method", *(f"{p} {h}" for p in protocols for h in ("R1", "mAP")), "seeds", "train time / cell"]
    lines = []
    for method in dict.fromkeys(r["method"] for r in plain):  # rows are already sorted by mAP per protocol
        rows = [by[(method, p)] for p in protocols]
        times = [r["train_seconds"]["mean"] for r in rows if r["train_seconds"]["mean"] is not None]
        lines.append([method, *(_pct(r["measured"][k], len(r["seeds_done"])) for r in rows for k in ("rank1", "mAP")),
                      ", ".join(sorted({_seeds_text(r) for r in rows})),
                      f"{np.mean(times) / 60:.1f} min" if times else "n/a"])
    return head, lines


def summary_table(board: dict) -> list[str]:
    """The summary as markdown table lines (the leaderboard.md's first table, made to be pasted into a README)."""
    head, lines = _summary(board)
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(line) + " |" for line in lines)]


SUMMARY_NOTE = ("R1 and mAP in percent, mean ± std over seeds, without re-ranking (re-ranked rows, R10, R20, mINP "
                "and the papers' numbers are in the tables below).")


def format_markdown(board: dict) -> str:
    """leaderboard.md: a summary, a table per protocol, the papers' numbers in their own column, comparisons."""
    out = [f"# Leaderboard: {board['bench']}", ""]
    if board.get("description"):
        out += [board["description"].strip(), ""]
    out += _header_lines(board) + [""]
    out += ["## Summary", "", SUMMARY_NOTE, "", *summary_table(board), ""]
    for protocol, rows in _groups(board):
        first = rows[0]
        out += [f"## {protocol}", "",
                f"Dataset {first['dataset']}, protocol {first['protocol_name']} "
                f"({', '.join(f'{k}={v}' for k, v in first['options'].items()) or 'defaults'}); results key "
                f"`{first.get('results_key') or 'n/a'}`.", ""]
        out += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
        sources = [f"- {r['method']}: {r['reported']['label']} ({r['reported']['source']})"
                   for r in rows if r["reported"]]
        out += ["", f"The last column is the papers' own numbers for protocol {first['setting']}, on the real "
                "dataset with each paper's recipe: not measured by this bench, never averaged with its numbers; "
                "re-ranked rows have none." + (" Read from:" if sources else ""), *([""] + sources if sources else [])]
        if board.get("cmc_plots", {}).get(protocol):
            out += ["", f"![CMC, {protocol}]({board['cmc_plots'][protocol]})"]
        out.append("")
    lines = _comparison_lines(board)
    out += ["## Paired comparisons (mAP, same protocol, per seed)", ""]
    out += [*lines, "", FEW_SEEDS_NOTE] if lines else ["Fewer than 2 seeds in common: no paired comparison."]
    out.append("")
    if board["failed"]:
        out += ["## Failed cells", ""] + [f"- {f['cell']}: {f['error']}" for f in board["failed"]] + [""]
    if board["cells"]["missing"]:
        out += ["## Cells not run yet", ""] + [f"- {c}" for c in board["cells"]["missing"]] + [""]
    return "\n".join(out)


CSV_FIELDS = ("method", "method_name", "dataset", "protocol", "protocol_name", "setting", "results_key", "feature",
              "rerank", "flip", "distance", "model_selection", "seeds_done", "seeds_failed",
              *(f"{k}_{s}_pct" for k in METRICS for s in ("mean", "std", "trial_spread")),
              "input_height", "input_width", "epochs", "parameters", "train_seconds_mean", "train_seconds_std",
              "devices", "ms_per_image_mean",
              *(f"reported_{k}_pct" for k in METRICS), "reported_source")


def format_csv(board: dict) -> str:
    """leaderboard.csv: one line per row; measured and reported numbers in separate, named columns (percent)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in board["rows"]:
        line: dict[str, Any] = {k: r.get(k) for k in CSV_FIELDS if k in r}
        line["seeds_done"] = " ".join(map(str, r["seeds_done"]))
        line["seeds_failed"] = " ".join(r["seeds_failed"])
        for k in METRICS:
            for s in ("mean", "std", "trial_spread"):
                v = r["measured"][k][s]
                line[f"{k}_{s}_pct"] = "" if v is None else f"{100 * v:.4f}"
        size = r.get("input_size") or ["", ""]
        line["input_height"], line["input_width"] = size
        line["train_seconds_mean"] = r["train_seconds"]["mean"]
        line["train_seconds_std"] = r["train_seconds"]["std"]
        line["devices"] = "; ".join(r["devices"])
        line["ms_per_image_mean"] = r["ms_per_image"]["mean"]
        rep = r.get("reported") or {}
        for k in METRICS:
            v = (rep.get("values") or {}).get(k)
            line[f"reported_{k}_pct"] = "" if v is None else f"{100 * v:.2f}"
        line["reported_source"] = rep.get("source", "")
        writer.writerow(line)
    return buf.getvalue()


def format_html(board: dict) -> str:
    """leaderboard.html: the markdown's content as a self-contained page (the CMC plots beside it)."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Leaderboard: {e(board['bench'])}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}th{background:#eee}"
             "td.reported,th.reported{background:#fff8e1;font-style:italic}</style></head><body>",
             f"<h1>Leaderboard: {e(board['bench'])}</h1>"]
    parts += [f"<p>{e(line)}</p>" for line in _header_lines(board)]
    head, summary = _summary(board)
    parts.append(f"<h2>Summary</h2><p>{e(SUMMARY_NOTE)}</p><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in head)
                 + "</tr>" + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in line) + "</tr>" for line in summary)
                 + "</table>")
    for protocol, rows in _groups(board):
        parts.append(f"<h2>{e(protocol)}</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS[:-1])
                     + f"<th class='reported'>{e(REPORTED_HEAD)}</th></tr>")
        for r in rows:
            *measured, rep = _cells(r)
            title = e((r["reported"] or {}).get("source", ""))
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in measured)
                         + f"<td class='reported' title='{title}'>{e(rep)}</td></tr>")
        parts.append("</table>")
        if board.get("cmc_plots", {}).get(protocol):
            parts.append(f"<img src='{e(board['cmc_plots'][protocol])}' alt='CMC {e(protocol)}' width='480'>")
    lines = _comparison_lines(board)
    parts.append("<h2>Paired comparisons (mAP, same protocol, per seed)</h2><ul>"
                 + "".join(f"<li>{e(ln[2:].replace('**', ''))}</li>" for ln in lines) + "</ul>"
                 + (f"<p>{e(FEW_SEEDS_NOTE)}</p>" if lines else ""))
    if board["failed"]:
        parts.append("<h2>Failed cells</h2><ul>" + "".join(f"<li>{e(f['cell'])}: {e(str(f['error']))}</li>"
                                                           for f in board["failed"]) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_cmc_plots(board: dict, bench: BenchDir) -> set[str]:
    """One PNG per protocol with every method's mean CMC curve (plain rows); the protocols that got one."""
    done = set()
    for protocol, rows in _groups(board):
        curves = [(r["method"], r["cmc"]) for r in rows if not r["rerank"] and r["cmc"]]
        if not curves:
            continue
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: only a leaderboard draws
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(5, 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for name, cmc in curves:
            ax.plot(np.arange(1, len(cmc) + 1), 100 * np.asarray(cmc), marker="o", markersize=3, label=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("rank")
        ax.set_ylabel("matching rate (%)")
        ax.set_title(f"CMC, {protocol} (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(bench.cmc_plot(protocol), suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
        done.add(protocol)
    return done
