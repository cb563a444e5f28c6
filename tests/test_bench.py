"""`vireid bench`: the spec, the papers' numbers, the statistics, and benchmarks/tiny.yaml run to a leaderboard
(checked by hand against the cells' results.json), killed and resumed, and run through submitit's local executor."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import REPO
from vireid.bench import BenchDir, load_spec, paired_comparison, read_reported, run_bench, setting_of
from vireid.bench.leaderboard import _pct, summary_table
from vireid.bench.publish import seeds_complete
from vireid.bench.reported import parse_reported
from vireid.bench.stats import FEW_SEEDS_NOTE, bootstrap_ci
from vireid.core import ConfigError, StorageError

TINY = REPO / "benchmarks" / "tiny.yaml"
METRICS = ("rank1", "rank10", "rank20", "mAP", "mINP")


def tiny_raw() -> dict:
    return yaml.safe_load(TINY.read_text())


def write_spec(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def measured(board: dict) -> dict:
    """The measured numbers of each row: what must not depend on how (or in how many goes) the bench ran."""
    return {(r["method"], r["protocol"], r["rerank"]): {k: r["measured"][k]["per_seed"] for k in METRICS}
            for r in board["rows"]}


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> tuple[Path, dict, float]:
    """benchmarks/tiny.yaml run once, uninterrupted, in this process: (bench dir, leaderboard, wall seconds)."""
    out = tmp_path_factory.mktemp("bench") / "tiny"
    start = time.perf_counter()
    board = run_bench(TINY, out)
    return out, board, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ the spec


def test_tiny_spec_has_two_methods_one_protocol_two_seeds():
    spec = load_spec(TINY)
    assert [m.name for m in spec.methods] == ["baseline", "mpanet"] and spec.seeds == (0, 1)
    assert [p.name for _, p in spec.protocols()] == ["sysu-all-single"]
    # seed first: every method's first seed runs before any second seed
    assert [c.id for c in spec.cells()] == ["baseline/synth-sysu/seed0", "mpanet/synth-sysu/seed0",
                                            "baseline/synth-sysu/seed1", "mpanet/synth-sysu/seed1"]
    cfg = spec.cell_config(spec.cells()[2], "/tmp/b")
    assert cfg.train.seed == 1 and cfg.train.epochs == 1 and cfg.data.root == "/tmp/b/data/synth-sysu"
    assert cfg.eval.rerank is True and cfg.eval.options == {"mode": "all", "shots": 1, "gallery_sampler": "agw",
                                                              "trials": 2}


def test_the_synthetic_spec_runs_every_registered_method_at_two_infrared_consistencies():
    from vireid.registry import METHODS

    spec = load_spec(REPO / "benchmarks" / "synthetic.yaml")
    # every built-in method through its synthetic preset (other tests may register a user method meanwhile)
    presets = sorted(p.stem for p in (REPO / "configs" / "synthetic").glob("*.yaml"))
    assert sorted(m.method for m in spec.methods) == presets and set(presets) <= set(METHODS.names())
    assert spec.seeds == (0, 1, 2)
    assert [d.data["synthesize"].get("ir_consistency", 1.0) for d in spec.datasets] == [1.0, 0.25]
    assert {p.options["mode"] for _, p in spec.protocols()} == {"all", "indoor"} and len(spec.cells()) == 36


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(colour="red"), r"unknown key\(s\) 'colour'; valid keys here: name, description"),
    (lambda r: r.pop("seeds"), r"'seeds' is missing or empty"),
    (lambda r: r["overrides"].append("train.seed=3"), r"sets train.seed, which the bench sets for every cell"),
    (lambda r: r["overrides"].append("eval.flip=true"), r"sets eval.flip, which the bench sets"),
    (lambda r: r["methods"].append({"config": "configs/synthetic/baseline.yaml"}),
     r"methods named 'baseline' more than once; give each its own 'name:'"),
    (lambda r: r["methods"].append({"config": "configs/nowhere.yaml", "name": "x"}),
     r"methods\[2\]\.config configs/nowhere.yaml not found"),
    (lambda r: r["datasets"][0]["protocols"][0]["options"].update(mode="outdoor"), r"mode"),
    (lambda r: r["datasets"][0]["protocols"][0]["options"].update(trails=2), r"unknown config key"),
    (lambda r: r["datasets"][0]["data"].pop("synthesize"), r"needs root: DIR .* or synthesize:"),
    (lambda r: r["datasets"][0]["data"]["synthesize"].update(ir_consistency=2), r"--ir-consistency must be in"),
    (lambda r: r.update(seeds=[0, 0]), r"repeat a seed"),
    (lambda r: r.update(name="my bench"), r"name 'my bench' must be letters"),
    (lambda r: r.update(launcher={"jobs": 0}), r"launcher.jobs must be >= 1"),
])
def test_spec_errors_name_the_file_the_key_and_the_fix(tmp_path, change, message):
    raw = tiny_raw()
    change(raw)
    path = write_spec(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError, match=message) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ reported numbers


def test_the_papers_numbers_come_from_the_method_pages():
    reported = read_reported()
    mpanet = reported["mpanet"]["sysu/all/single"]
    assert mpanet.values == {"rank1": 70.58, "rank10": 96.21, "rank20": 98.8, "mAP": 68.24}
    assert mpanet.source.startswith("docs/methods/mpanet.md, Reported numbers")
    assert reported["mpanet"]["sysu/indoor/multi"].values["mAP"] == 75.11  # the paper's table, not the re-run's
    assert reported["cmgan"]["sysu/all/single"].values == {"rank1": 26.97, "rank10": 67.51, "rank20": 80.56,
                                                            "mAP": 27.8}
    assert reported["lba"]["regdb/thermal_to_visible"].values == {"mAP": 65.46, "rank1": 72.43}
    assert reported["d2rl"]["regdb/visible_to_thermal"].values["rank1"] == 43.4
    jsia = reported["jsia"]
    assert jsia["sysu/all/single"].values == {"rank1": 38.1, "rank10": 80.7, "rank20": 89.9, "mAP": 36.9}
    assert jsia["sysu/indoor/single"].values == {"rank1": 43.8, "mAP": 52.9}  # the AAAI row (the first)
    assert "baseline" not in reported


def test_three_table_shapes_and_the_first_row_of_a_setting_wins():
    page = """# X\n\n## Reported numbers (the paper's)\n\nSYSU-MM01, R1 / mAP:\n
| setting | full model |\n|---|---|\n| indoor single-shot | 50.0 / 40.0 |\n
| source | RegDB visible→thermal | all-search R1/mAP |\n|---|---|---|\n| paper | 1.5 / 2.5 | 3 / 4 |\n
| setting | mAP | R1 |\n|---|---|---|\n| SYSU-MM01 indoor | 9 | 9 |\n| LLCM IR→visible | 5 | 6 |\n
## Something else\n\n| setting | R1 |\n|---|---|\n| all-search multi-shot | 1 |\n"""
    found = parse_reported(page, "x", "docs/methods/x.md")
    assert {k: v.values for k, v in found.items()} == {
        "sysu/indoor/single": {"rank1": 50.0, "mAP": 40.0}, "regdb/visible_to_thermal": {"rank1": 1.5, "mAP": 2.5},
        "sysu/all/single": {"rank1": 3.0, "mAP": 4.0}, "llcm/ir_to_visible": {"mAP": 5.0, "rank1": 6.0}}
    assert setting_of("sysu", {"mode": "indoor", "shots": 10}) == "sysu/indoor/multi"
    assert setting_of("regdb", {"trial": 2}) == "regdb/visible_to_thermal"
    assert setting_of("llcm", {"direction": "visible_to_ir_transposed"}) == "llcm/visible_to_ir"


# ------------------------------------------------------------------------------------------------ statistics


def test_paired_comparison_per_seed_differences_and_a_seeded_bootstrap():
    a, b = {0: 0.30, 1: 0.34, 2: 0.31, 3: 0.36}, {0: 0.28, 1: 0.30, 2: 0.32, 3: 0.31, 9: 0.9}
    out = paired_comparison(a, b, resamples=5000, seed=[0, 1])
    assert out["seeds"] == [0, 1, 2, 3] and out["per_seed"] == pytest.approx([0.02, 0.04, -0.01, 0.05])
    assert out["mean"] == pytest.approx(0.025) and out["a_wins"] == 3 and out["b_wins"] == 1
    lo, hi = out["ci"]
    assert -0.01 <= lo < 0.025 < hi <= 0.05
    assert paired_comparison(a, b, resamples=5000, seed=[0, 1])["ci"] == out["ci"]  # seeded: reproducible
    assert paired_comparison({0: 0.3}, {0: 0.2}, resamples=100, seed=0)["ci"] is None  # one seed: no interval


def test_the_few_seeds_note_says_what_the_bootstrap_can_do():
    assert bootstrap_ci([0.04, -0.01], resamples=10000, seed=3) == pytest.approx((-0.01, 0.04))  # spans the two
    d = np.array([0.01, 0.02, 0.07])
    means = d[np.random.default_rng(0).integers(0, 3, size=(20000, 3))].mean(axis=1)
    assert len(np.unique(means.round(12))) == 10  # 3 seeds: the multisets of 3 draws from 3
    assert "over 2 seeds it spans exactly those two and over 3 it can take at most 10 values" in FEW_SEEDS_NOTE


# ------------------------------------------------------------------------------------------------ the tiny bench


@pytest.mark.slow
def test_tiny_leaderboard_matches_the_cells_results_by_hand(tiny_bench):
    out, board, seconds = tiny_bench
    print(f"tiny bench: {seconds:.1f} s")
    bench = BenchDir(out)
    for fmt in ("md", "csv", "html", "json"):
        assert bench.leaderboard(fmt).is_file()
    assert json.loads(bench.leaderboard("json").read_text())["rows"] == board["rows"]
    assert board["cells"] == {"total": 4, "done": 4, "failed": 0, "missing": []}
    rows = board["rows"]
    assert sorted((r["method"], r["rerank"]) for r in rows) == [("baseline", False), ("baseline", True),
                                                                 ("mpanet", False), ("mpanet", True)]
    for row in rows:  # mean and std over seeds of each cell's results.json trial mean, by hand
        label = row["feature"] + ("+rerank" if row["rerank"] else "")
        cells = [json.loads(bench.run(f"{row['method']}/synth-sysu/seed{s}").results.read_text()) for s in (0, 1)]
        for cell in cells:
            assert cell["protocols"]["sysu/all/single/agw"]["features"][label]["rerank"] is row["rerank"]
        for k in METRICS:
            values = [c["protocols"]["sysu/all/single/agw"]["features"][label]["mean"][k] for c in cells]
            assert row["measured"][k]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert row["measured"][k]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert row["input_size"] == [32, 16] and row["epochs"] == 1 and row["model_selection"] == "last epoch"
        assert row["parameters"] > 1e6 and row["ms_per_image"]["mean"] > 0 and row["train_seconds"]["mean"] > 0
    # the papers' numbers: only in their own column, only for the method that has them, never on re-ranked rows
    paper = {(r["method"], r["rerank"]): r["reported"] for r in rows}
    assert paper[("mpanet", False)]["values"]["mAP"] == pytest.approx(0.6824)
    assert paper[("baseline", False)] is None and paper[("mpanet", True)] is None
    lines = list(csv.DictReader(bench.leaderboard("csv").read_text().splitlines()))
    by = {(ln["method"], ln["rerank"]): ln for ln in lines}
    assert by[("mpanet", "False")]["reported_mAP_pct"] == "68.24"
    assert by[("mpanet", "True")]["reported_mAP_pct"] == "" and by[("baseline", "False")]["reported_mAP_pct"] == ""
    assert float(by[("mpanet", "False")]["mAP_mean_pct"]) != 68.24
    md = bench.leaderboard("md").read_text()
    assert "| re-ranking |" in md and "yes (k1=20" in md and "R1 70.58 · R10 96.21 · R20 98.80 · mAP 68.24" in md
    comparisons = [c for c in board["comparisons"] if not c["rerank"]]
    assert len(comparisons) == 1 and len(comparisons[0]["mAP"]["per_seed"]) == 2
    assert comparisons[0]["mAP"]["ci"] is not None and "bootstrap CI" in md and FEW_SEEDS_NOTE in md
    assert html.escape(FEW_SEEDS_NOTE) in bench.leaderboard("html").read_text()
    assert bench.cmc_plot("sysu-all-single").read_bytes()[:4] == b"\x89PNG"


def test_the_summary_table_gives_each_method_r1_and_map_per_protocol(tiny_bench):
    out, board, _ = tiny_bench
    lines = summary_table(board)
    assert lines[0] == "| method | sysu-all-single R1 | sysu-all-single mAP | seeds | train time / cell |"
    plain = [r for r in board["rows"] if not r["rerank"]]
    assert [ln.split(" | ")[0] for ln in lines[2:]] == [f"| {r['method']}" for r in plain]  # by mAP, best first
    for r in plain:
        m = r["measured"]
        minutes = r["train_seconds"]["mean"] / 60
        assert (f"| {r['method']} | {100 * m['rank1']['mean']:.2f} ± {100 * m['rank1']['std']:.2f} | "
                f"{100 * m['mAP']['mean']:.2f} ± {100 * m['mAP']['std']:.2f} | 2/2 | {minutes:.1f} min |") in lines
    assert "\n".join(lines) in BenchDir(out).leaderboard("md").read_text()
    assert "<h2>Summary</h2>" in BenchDir(out).leaderboard("html").read_text()
    assert board["generated"]["cell_revisions"] == [board["generated"]["git_revision"]]


def test_one_seed_shows_its_mean_without_a_std():
    assert _pct({"mean": 0.271, "std": 0.0}, 1) == "27.10"
    assert _pct({"mean": 0.271, "std": 0.01}, 2) == "27.10 ± 1.00"
    assert _pct({"mean": None, "std": None}, 0) == "n/a"


README_TEXT = ("# A project\n\nProse above.\n\n<!-- leaderboard:begin -->\nold table\n<!-- leaderboard:end -->\n"
               "\nBelow.\n")


def test_publish_copies_the_leaderboard_and_the_readme_block_is_replaced(tiny_bench, tmp_path, capsys):
    from vireid.cli import main

    out = tmp_path / "bench"
    shutil.copytree(tiny_bench[0], out)  # --leaderboard-only rewrites the files: not the shared fixture's
    readme, docs = tmp_path / "README.md", tmp_path / "docs" / "board"
    readme.write_text(README_TEXT)
    (docs).mkdir(parents=True)
    (docs / "cmc-gone.png").write_bytes(b"old")  # a protocol an earlier publish had
    (docs / "notes.txt").write_text("mine")  # not the leaderboard's: left alone
    args = ["bench", str(TINY), "--out", str(out), "--leaderboard-only", "--publish", str(docs), "--readme",
            str(readme)]
    assert main(args) == 0
    bench = BenchDir(out)
    board = json.loads(bench.leaderboard("json").read_text())
    assert sorted(p.name for p in docs.iterdir()) == sorted(["cells", "cmc-sysu-all-single.png", "leaderboard.csv",
                                                            "leaderboard.html", "leaderboard.json",
                                                            "leaderboard.md", "notes.txt", "runs"])
    published = BenchDir(docs)
    for cell in load_spec(TINY).cells():  # each done cell's record and small run files, never a checkpoint
        assert published.read_record(cell.id) == {**bench.read_record(cell.id), "run": f"runs/{cell.id}"}
        files = sorted(p.name for p in published.run(cell.id).path.iterdir())
        assert files == ["config.yaml", "env.json", "metrics.jsonl", "results.json"]
        assert published.run(cell.id).results.read_bytes() == bench.run(cell.id).results.read_bytes()
    for name in ("leaderboard.md", "leaderboard.json", "cmc-sysu-all-single.png"):
        assert (docs / name).read_bytes() == (bench.path / name).read_bytes()
    text = readme.read_text()
    head, block = text.split("<!-- leaderboard:begin -->\n")
    block, tail = block.split("\n<!-- leaderboard:end -->")
    assert head == "# A project\n\nProse above.\n\n" and tail == "\n\nBelow.\n"
    assert "\n".join(summary_table(board)) in block and "old table" not in block
    assert "All 4 cells are done." in block and "In progress" not in block
    first, second = [r for r in board["rows"] if not r["rerank"]]  # by mAP, best first
    diffs = [x - y for x, y in zip(first["measured"]["mAP"]["per_seed"], second["measured"]["mAP"]["per_seed"],
                                   strict=True)]  # seeds 0 and 1 both
    # two seeds: the resampled means are d0, d1 and their mean, so the 95% interval is [min, max]
    assert (f"- sysu-all-single: {first['method']} − {second['method']}, mAP {100 * np.mean(diffs):+.2f} points "
            f"(95% bootstrap CI [{100 * min(diffs):+.2f}, {100 * max(diffs):+.2f}] over 2 seeds; {first['method']} "
            f"higher in {sum(d > 0 for d in diffs)} of them)") in block and FEW_SEEDS_NOTE in block
    g = board["generated"]
    seconds = sum(bench.read_record(c.id)["train_seconds"] for c in load_spec(TINY).cells())
    assert g["cells_train_seconds"] == pytest.approx(seconds)
    assert f"training loops {seconds:.0f} s summed over cells" in (docs / "leaderboard.md").read_text()
    hours = seconds / 3600
    assert f"Summed over cells, their training loops took {hours:.1f} h" in block
    assert f"at commit {g['git_revision'][:7]}" in block and g["date"] in block
    assert "[`docs/board/leaderboard.md`](docs/board/leaderboard.md)" in block
    with bench.lock():  # a driver still running: a partial leaderboard can be written (and published) meanwhile
        assert main(args) == 0
    assert readme.read_text().count("<!-- leaderboard:begin -->") == 1  # replaced, not added to
    assert measured(json.loads(bench.leaderboard("json").read_text())) == measured(board)
    capsys.readouterr()


def test_a_bench_in_progress_says_which_seeds_every_method_has():
    unscored = {"rerank": False, "protocol": "p", "measured": {"mAP": {"mean": None}}}  # no pair to compare
    rows = [{"seeds_done": [0, 1], "method": "a", **unscored}, {"seeds_done": [0], "method": "b", **unscored}]
    board = {"rows": rows, "cells": {"total": 6, "done": 3, "failed": 1, "missing": ["a", "b"]}}
    assert seeds_complete(board) == [0]
    board["generated"] = {"date": "today", "vireid": "0", "git_revision": "0123456789abc-dirty",
                          "cell_revisions": ["abcdef0123"], "host": "h", "machine": "m", "devices": [],
                          "cells_train_seconds": 7200.0, "cells_eval_seconds": 360.0,
                          "cells_wall_seconds": 10800.0}
    from vireid.bench import publish

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(publish, "summary_table", lambda b: ["| table |"])  # the table is tested with a real board
        block = publish.readme_block(board, "x.md")
        rows[1]["seeds_done"] = []
        none_yet = publish.readme_block(board, "x.md")
    assert ("**In progress: 3 of 6 cells are done** (every method and dataset is done at seed 0). A std needs "
            "two seeds") in block
    assert "1 cell(s) failed" in block and "paired seed by seed" not in block  # no two scored methods
    assert "at commit 0123456-dirty from cells trained at commit abcdef0" in block
    assert "training loops took 2.0 h" in block and "evaluation 0.1 h, and their wall time was 3.0 h" in block
    assert "no seed is done for every method and dataset yet" in none_yet


@pytest.mark.parametrize("text, found", [("no markers\n", "found 0 and 0"),
                                         ("<!-- leaderboard:end -->\n<!-- leaderboard:begin -->\n", "found 1 and 1"),
                                         ("<!-- leaderboard:begin -->\n" * 2 + "<!-- leaderboard:end -->\n",
                                          "found 2 and 1")])
def test_a_readme_without_one_block_is_refused_before_the_bench_runs(tmp_path, capsys, text, found):
    from vireid.cli import main

    readme = tmp_path / "README.md"
    readme.write_text(text)
    out = tmp_path / "never"
    assert main(["bench", str(TINY), "--out", str(out), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--readme {readme}: expected one '<!-- leaderboard:begin -->' line" in err
    assert found in err and not out.exists() and readme.read_text() == text
    assert main(["bench", str(TINY), "--out", str(out), "--readme", str(tmp_path / "nope.md")]) == 2
    assert "nope.md: no such file" in capsys.readouterr().err
    assert main(["bench", str(TINY), "--out", str(out), "--cell", "baseline/synth-sysu/seed0", "--readme",
                 str(readme)]) == 2
    assert "not with --cell" in capsys.readouterr().err and not out.exists()
    assert main(["bench", str(TINY), "--out", str(out), "--status", "--restore", str(tmp_path)]) == 2
    assert "--restore go with a run of the bench" in capsys.readouterr().err and not out.exists()


def test_published_cells_restore_a_lost_bench_and_are_never_unpublished(tiny_bench, tmp_path, capsys):
    from vireid.cli import main

    spec = load_spec(TINY)
    ids = [c.id for c in spec.cells()]
    out, docs = tmp_path / "bench", tmp_path / "docs" / "board"
    shutil.copytree(tiny_bench[0], out)
    stale = BenchDir(docs).record("gone/synth-sysu/seed7")  # a cell an older spec had: unpublished
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    assert main(["bench", str(TINY), "--out", str(out), "--leaderboard-only", "--publish", str(docs)]) == 0
    assert not stale.exists() and sorted(p.relative_to(docs / "cells").as_posix()
                                         for p in docs.glob("cells/**/*.json")) == sorted(f"{i}.json" for i in ids)
    board = json.loads((docs / "leaderboard.json").read_text())
    capsys.readouterr()

    # the bench folder is lost; a new one has started one cell of its own (killed mid-way: no record)
    fresh = BenchDir(tmp_path / "fresh")
    own = fresh.run(ids[1])
    own.path.mkdir(parents=True)
    (own.path / "config.yaml").write_text("mine")
    # publishing from it would unpublish the cells it lacks: refused in one line, nothing touched
    before = sorted((p.as_posix(), p.read_bytes()) for p in docs.rglob("*") if p.is_file())
    assert main(["bench", str(TINY), "--out", str(fresh.path), "--leaderboard-only", "--publish", str(docs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--publish {docs} holds 4 done cell(s) that {fresh.path} does not" in err
    assert f"--restore {docs}" in err
    assert sorted((p.as_posix(), p.read_bytes()) for p in docs.rglob("*") if p.is_file()) == before

    # --restore brings back the done cells it has not started, and the leaderboard is the published one
    assert main(["bench", str(TINY), "--out", str(fresh.path), "--leaderboard-only", "--restore", str(docs)]) == 0
    assert "restored 3 done cell(s)" in capsys.readouterr().out
    assert (own.path / "config.yaml").read_text() == "mine" and fresh.read_record(ids[1]) is None
    for cell_id in (ids[0], *ids[2:]):
        record = fresh.read_record(cell_id)
        assert record["run"] == str(fresh.run(cell_id).path) and record["restored_from"] == str(docs)
        assert not fresh.run(cell_id).checkpoints.exists()
    rebuilt = json.loads(fresh.leaderboard("json").read_text())
    assert rebuilt["cells"]["done"] == 3 and rebuilt["cells"]["missing"] == [ids[1]]
    mine = {k: v for k, v in measured(rebuilt).items() if k[0] == "baseline"}
    assert mine == {k: v for k, v in measured(board).items() if k[0] == "baseline"}  # both seeds restored

    # with the stray cell gone, a restore into an empty folder and a run train nothing: the same leaderboard
    again = tmp_path / "again"
    assert main(["bench", str(TINY), "--out", str(again), "--restore", str(docs), "--no-progress"]) == 0
    assert "restored 4 done cell(s)" in capsys.readouterr().out
    assert measured(json.loads(BenchDir(again).leaderboard("json").read_text())) == measured(board)
    assert not any(again.glob("runs/**/checkpoints"))  # nothing was trained
    from vireid.bench.status import cell_states

    assert [(s["state"], s["epochs"]) for s in cell_states(spec, again)] == [("done", 1)] * 4
    # the published records name their run relative to the folder and not where a bench restored them from,
    # so the restored bench republishes them byte for byte
    published = sorted((p.as_posix(), p.read_bytes()) for p in docs.rglob("cells/**/*.json"))
    assert all(json.loads(b)["run"] == f"runs/{Path(p).relative_to(docs / 'cells').with_suffix('').as_posix()}"
               and b"restored_from" not in b for p, b in published)
    assert main(["bench", str(TINY), "--out", str(again), "--leaderboard-only", "--publish", str(docs)]) == 0
    assert sorted((p.as_posix(), p.read_bytes()) for p in docs.rglob("cells/**/*.json")) == published
    assert main(["bench", str(TINY), "--out", str(again), "--restore", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert f"--restore {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_status_tells_each_cells_state_without_writing(tiny_bench, tmp_path, capsys):
    from vireid.cli import main

    out = tmp_path / "bench"
    shutil.copytree(tiny_bench[0], out)
    bench = BenchDir(out)
    ids = [c.id for c in load_spec(TINY).cells()]
    done, running, failed, partial = ids
    record = bench.read_record(failed)
    bench.write_record(failed, {**record, "status": "failed", "error": "ValueError: broken"})
    bench.record(partial).unlink()  # killed mid-way: its epochs are logged, it has no record
    shutil.rmtree(bench.run(partial).path / "checkpoints")
    with bench.cell_lock(running):
        before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file())
        assert main(["bench", str(TINY), "--out", str(out), "--status"]) == 0
        assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()) == before  # wrote nothing
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("left: about ")  # 2 cells not done
    assert lines[-1].startswith("no vireid bench driver is running on it")
    lines = lines[:-2]
    state = {ln.split()[0]: ln.split()[1:] for ln in lines[1:-1]}
    assert state[done][:2] == ["done", "1/1"] and state[running][:2] == ["done", "1/1"]  # done wins over a lock
    assert state[failed][0] == "failed" and lines[1 + ids.index(failed)].endswith("ValueError: broken")
    assert state[partial][:2] == ["partial", "1/1"]
    assert lines[-1] == "2 done, 1 failed, 1 partial (of 4 cells)"
    bench.record(running).unlink()
    with bench.cell_lock(running):
        main(["bench", str(TINY), "--out", str(out), "--status"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(running))
    assert line.split()[1] == "running" and line.endswith(f"pid {os.getpid()}")
    shutil.rmtree(bench.run(partial).path)
    with bench.lock():
        main(["bench", str(TINY), "--out", str(out), "--status"])
    assert f"a vireid bench driver is running on it (pid {os.getpid()})" in capsys.readouterr().out
    main(["bench", str(TINY), "--out", str(out), "--status"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(partial))
    assert line.split()[1:3] == ["pending", "0/1"]
    assert main(["bench", str(TINY), "--out", str(tmp_path / "none"), "--status"]) == 2
    assert "does not exist: no cell of this bench has run there" in capsys.readouterr().err


def test_select_cells_matches_shell_patterns_in_run_order_and_names_a_pattern_that_matches_none():
    spec = load_spec(TINY)
    assert [c.id for c in spec.select_cells(["*/*/seed1"])] == ["baseline/synth-sysu/seed1", "mpanet/synth-sysu/seed1"]
    assert [c.id for c in spec.select_cells(["mpanet/*/seed1", "baseline/*"])] == [
        "baseline/synth-sysu/seed0", "baseline/synth-sysu/seed1", "mpanet/synth-sysu/seed1"]
    with pytest.raises(ConfigError, match=r"--only 'lba/\*' matches no cell of .*tiny.yaml: cells are named "
                                          r"METHOD/DATASET/seedN \(e.g. baseline/synth-sysu/seed0\)"):
        spec.select_cells(["mpanet/*", "lba/*"])


def test_only_trains_the_chosen_cells_and_the_leaderboard_counts_every_done_one(tiny_bench, tmp_path, capsys):
    from vireid.cli import main

    out = tmp_path / "bench"
    shutil.copytree(tiny_bench[0], out)
    bench = BenchDir(out)
    for cell in [c for c in load_spec(TINY).cells() if c.seed == 1]:
        shutil.rmtree(bench.run(cell.id).path)
        bench.record(cell.id).unlink()
    assert main(["bench", str(TINY), "--out", str(out), "--print-commands", "--only", "mpanet/*/seed1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith("--cell mpanet/synth-sysu/seed1 --no-progress")
    assert main(["bench", str(TINY), "--out", str(out), "--only", "mpanet/*/seed1", "--no-progress"]) == 0
    assert bench.read_record("mpanet/synth-sysu/seed1")["status"] == "done"
    assert bench.read_record("baseline/synth-sysu/seed1") is None
    assert not bench.run("baseline/synth-sysu/seed1").path.exists()  # not trained
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["cells"]["done"] == 3
    mpanet = {k: v for k, v in measured(board).items() if k[0] == "mpanet"}
    assert mpanet == {k: v for k, v in measured(tiny_bench[1]).items() if k[0] == "mpanet"}
    for other in (["--status"], ["--leaderboard-only"], ["--cell", "baseline/synth-sysu/seed1"]):
        assert main(["bench", str(TINY), "--out", str(out), *other, "--only", "baseline/*"]) == 2
        assert f"--only chooses the cells a run (or --print-commands) trains, not with {other[0]}" in \
            capsys.readouterr().err
    assert main(["bench", str(TINY), "--out", str(out), "--only", "lba/*"]) == 2
    assert "--only 'lba/*' matches no cell" in capsys.readouterr().err


def test_time_left_is_each_cells_method_mean_wall_times_its_epochs_to_run():
    from vireid.bench.status import format_status, time_left

    def cell(method: str, state: str, epochs: int, wall: float | None = None) -> dict:
        return {"cell": f"{method}/d/seed0", "method": method, "state": state, "epochs": epochs, "of": 4,
                "wall_seconds": wall, "train_seconds": 0.0, "pid": None, "error": None}

    states = [cell("a", "done", 4, 1000.0), cell("a", "done", 4, 2000.0), cell("a", "partial", 1),
              cell("a", "pending", 0), cell("b", "pending", 0)]
    assert time_left(states) == (1500.0 * 0.75 + 1500.0, 1)
    assert format_status(states).splitlines()[-2].startswith("left: about 0.7 h of cell time")
    assert format_status(states).splitlines()[-2].endswith("; 1 cell(s) of methods with no done cell not counted")
    assert "left:" not in format_status(states[:2])


def test_lock_holder_sees_a_held_lock_and_takes_nothing(tmp_path):
    from vireid.utils.atomic import file_lock, lock_holder

    path = tmp_path / "x.lock"
    assert lock_holder(path) is None  # no file
    with file_lock(path):
        assert lock_holder(path) == os.getpid()
    assert lock_holder(path) is None  # released (the file stays)
    with file_lock(path), pytest.raises(StorageError):
        with file_lock(path, timeout=0):
            pass


@pytest.mark.slow
def test_a_rerun_skips_finished_cells_and_another_writer_is_refused(tiny_bench):
    out, board, _ = tiny_bench
    bench = BenchDir(out)
    cells = [c.id for c in load_spec(TINY).cells()]
    before = {c: (bench.read_record(c), bench.run(c).checkpoint("last").stat().st_mtime_ns) for c in cells}
    again = run_bench(TINY, out)
    assert measured(again) == measured(board)
    assert {c: (bench.read_record(c), bench.run(c).checkpoint("last").stat().st_mtime_ns) for c in cells} == before
    with bench.lock(), pytest.raises(StorageError, match=r"another vireid bench is running on .* choose another"):
        run_bench(TINY, out)


@pytest.mark.slow
def test_killed_mid_way_the_bench_resumes_to_the_same_leaderboard(tiny_bench, tmp_path):
    _, board, _ = tiny_bench
    out = tmp_path / "killed"
    bench = BenchDir(out)
    first = "baseline/synth-sysu/seed0"
    log = tmp_path / "bench.log"
    with log.open("wb") as printed:
        proc = subprocess.Popen([sys.executable, "-m", "vireid", "bench", str(TINY), "--out", str(out),
                                 "--no-progress"], stdout=printed, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # generous: the suite runs two workers on two cores
        while (bench.read_record(first) or {}).get("status") != "done":
            assert proc.poll() is None and time.monotonic() < deadline, \
                f"the bench ended or stalled before its first cell: {log.read_text()[-2000:]}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = {c.id for c in load_spec(TINY).cells() if (bench.read_record(c.id) or {}).get("status") == "done"}
    assert first in done and len(done) < 4, done
    kept = {c: (bench.read_record(c), bench.run(c).checkpoint("last").stat().st_mtime_ns) for c in done}
    resumed = run_bench(TINY, out)
    assert {c: (bench.read_record(c), bench.run(c).checkpoint("last").stat().st_mtime_ns) for c in done} == kept
    assert resumed["cells"]["done"] == 4
    assert measured(resumed) == measured(board)


@pytest.mark.slow
def test_the_submitit_local_executor_runs_the_tiny_bench_to_the_same_leaderboard(tiny_bench, tmp_path):
    pytest.importorskip("submitit")
    _, board, _ = tiny_bench
    raw = tiny_raw()
    raw["launcher"] = {"kind": "submitit", "submitit": {"cluster": "local", "timeout_min": 10}}
    spec = write_spec(tmp_path / "tiny.yaml", raw)
    out = tmp_path / "submitit"
    result = run_bench(spec, out)
    assert result["cells"]["done"] == 4
    assert measured(result) == measured(board)
    assert list((out / "submitit").glob("*_log.out"))  # each cell ran as a job of its own


@pytest.mark.slow
def test_two_jobs_side_by_side_give_the_same_leaderboard(tiny_bench, tmp_path, caplog):
    _, board, _ = tiny_bench
    out = tmp_path / "jobs"
    with caplog.at_level("INFO", logger="vireid"):
        result = run_bench(TINY, out, jobs=2)
    assert result["cells"]["done"] == 4
    assert measured(result) == measured(board)
    assert sorted(p.name for p in (out / "logs").rglob("*.log")) == ["seed0.log", "seed0.log", "seed1.log",
                                                                      "seed1.log"]
    assert "(slot 2 of 2)" in caplog.text  # two cells did run at once
    assert re.search(r"\[bench\] \d\d:\d\d:\d\d \S+/seed\d: done after \d+\.\d min \(4 of 4 finished\)", caplog.text)
    with pytest.raises(ConfigError, match="--jobs 2 is for the local launcher"):
        run_bench(TINY, out, jobs=2, launcher="submitit")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cells die with the driver through PR_SET_PDEATHSIG")
def test_a_killed_driver_of_side_by_side_cells_leaves_no_cell_running_and_resumes(tiny_bench, tmp_path):
    _, board, _ = tiny_bench
    out = tmp_path / "jobs-killed"
    log = tmp_path / "bench.log"

    def cells_running() -> list[str]:
        """The pids of this bench's cell processes (from /proc: their command lines name --out and --cell)."""
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().split(b"\0")
            except OSError:  # ended meanwhile
                continue
            if b"--cell" in args and str(out).encode() in args:
                found.append(cmdline.parent.name)
        return found

    with log.open("wb") as printed:
        proc = subprocess.Popen([sys.executable, "-m", "vireid", "bench", str(TINY), "--out", str(out), "--jobs", "2"],
                                stdout=printed, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while len(cells_running()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, \
                f"the bench ended or stalled before two cells ran: {log.read_text()[-2000:]}"
            time.sleep(0.05)
        proc.kill()  # the driver alone: its two cells, both starting up, must follow it at once
    finally:
        proc.wait()
    deadline = time.monotonic() + 5
    while cells_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not cells_running()
    bench = BenchDir(out)  # killed mid-run, not left to finish on their own
    assert not [c.id for c in load_spec(TINY).cells() if (bench.read_record(c.id) or {}).get("status") == "done"]
    resumed = run_bench(TINY, out, jobs=2)
    assert resumed["cells"]["done"] == 4 and measured(resumed) == measured(board)


def test_side_by_side_cells_share_the_threads_and_get_their_own_gpus():
    from vireid.bench.launch import slot_environment

    env = slot_environment(1, 2, 1, cpus=16, cuda_devices=0, environ={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "8"}
    assert slot_environment(0, 3, 1, cpus=2, cuda_devices=0, environ={})["OMP_NUM_THREADS"] == "1"
    assert slot_environment(0, 2, 1, cpus=16, cuda_devices=0, environ={"OMP_NUM_THREADS": "3"})[
        "OMP_NUM_THREADS"] == "3"  # the user's setting wins
    assert [slot_environment(k, 4, 1, cpus=8, cuda_devices=4, environ={})["CUDA_VISIBLE_DEVICES"]
            for k in range(4)] == ["0", "1", "2", "3"]
    assert [slot_environment(k, 2, 2, cpus=8, cuda_devices=8, environ={"CUDA_VISIBLE_DEVICES": "4,5,6,7"})[
        "CUDA_VISIBLE_DEVICES"] for k in range(2)] == ["4,5", "6,7"]
    with pytest.raises(ConfigError, match="--jobs 3 with launcher.gpus_per_cell 2 needs 6 GPUs, 4 are visible"):
        slot_environment(0, 3, 2, cpus=8, cuda_devices=4, environ={})


@pytest.mark.slow
def test_a_failed_cell_is_recorded_and_the_others_finish(tmp_path, capsys):
    from vireid.cli import main

    raw = tiny_raw()
    raw["seeds"] = [0]
    raw["methods"] = [{"config": "configs/synthetic/baseline.yaml"},
                      {"config": "configs/synthetic/baseline.yaml", "name": "broken",
                       "overrides": ["sampler.num_ids=500"]}]  # more identities per batch than the set has
    spec = write_spec(tmp_path / "spec.yaml", raw)
    out = tmp_path / "bench"
    assert main(["bench", str(spec), "--out", str(out), "--print-commands"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert [c.split("--cell ")[-1].split()[0] for c in commands[:-1]] == ["baseline/synth-sysu/seed0",
                                                                          "broken/synth-sysu/seed0"]
    assert commands[-1].endswith("--leaderboard-only") and commands[0].startswith("vireid bench ")
    assert main(["bench", str(spec), "--out", str(out), "--no-progress"]) == 1  # a failure says so in the exit code
    bench = BenchDir(out)
    assert bench.read_record("baseline/synth-sysu/seed0")["status"] == "done"
    failed = bench.read_record("broken/synth-sysu/seed0")
    assert failed["status"] == "failed" and failed["error"] and failed["attempts"] == 1
    board = json.loads(bench.leaderboard("json").read_text())
    assert board["failed"][0]["cell"] == "broken/synth-sysu/seed0"
    md = bench.leaderboard("md").read_text()
    assert "## Failed cells" in md
    # a re-ranked row with no finished seed has no parameters to show: "yes", never "k1=None"
    assert "| broken | n/a | yes | " in md and "None" not in md
    row = next(r for r in board["rows"] if r["method"] == "broken" and not r["rerank"])
    assert row["measured"]["mAP"]["mean"] is None and row["seeds_failed"] == ["broken/synth-sysu/seed0"]
    capsys.readouterr()
    assert main(["bench", str(spec), "--out", str(out), "--print-commands"]) == 0
    assert "--cell broken/synth-sysu/seed0" in capsys.readouterr().out  # a failed cell is tried again
    assert main(["bench", str(spec), "--out", str(out), "--cell", "broken/synth-sysu/seed0"]) == 1
    assert bench.read_record("broken/synth-sysu/seed0")["attempts"] == 2
    assert main(["bench", str(spec), "--out", str(out), "--leaderboard-only"]) == 1
