"""DDP is real: torchrun with 2 CPU ranks (gloo) trains identical replicas of every registered method, and evaluates
like one process. One torchrun launch trains the whole registry (a launch costs tens of seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine_fixtures import make_tiny_sysu

pytestmark = pytest.mark.slow

TRAIN_ALL = str(Path(__file__).with_name("ddp_train_all.py"))
#: the data-parallel path each built-in method declares (docs/training.md, "Several GPUs"); the torchrun script
#: trains the registry of a fresh process, which is these methods (a new built-in method must be added here)
EXPECTED_PATH = {"baseline": "ddp", "mpanet": "ddp", "lba": "ddp", "cmgan": "average", "d2rl": "average",
                 "jsia": "average"}


def _torchrun(*args: str, env: dict) -> subprocess.CompletedProcess:
    """torchrun with 2 ranks of `vireid ARGS`, or of a script when ARGS start with a .py file."""
    target = list(args) if args and args[0].endswith(".py") else ["-m", "vireid", *args]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env) -> Path:
    """Every registered method trained for 2 steps on 2 gloo ranks, in one launch: <out>/<method>/..."""
    base = tmp_path_factory.mktemp("ddp")
    data = make_tiny_sysu(base / "sysu")
    out = base / "out"
    _torchrun(TRAIN_ALL, "--data", str(data), "--out", str(out), "--resume-check", env=env)
    return out


def test_the_launch_trained_every_registered_method(trained):
    assert json.loads((trained / "methods.json").read_text()) == sorted(EXPECTED_PATH)


@pytest.mark.parametrize("name", sorted(EXPECTED_PATH))
def test_both_ranks_end_with_identical_weights(trained, name):
    folder = trained / name
    r0, r1 = torch.load(folder / "rank0.pt"), torch.load(folder / "rank1.pt")
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{name}: ranks disagree on {k}"
    saved = torch.load(folder / "run" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert saved.keys() == r0.keys(), "checkpoint keys changed (a DDP 'module.' prefix?)"
    assert all(torch.equal(saved[k], r0[k]) for k in r0)
    paths = {json.loads((folder / f"rank{r}.json").read_text())["path"] for r in (0, 1)}
    assert paths == {EXPECTED_PATH[name]}
    epochs = [json.loads(x) for x in (folder / "run" / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    assert epochs


def test_a_resumed_ddp_run_ends_where_the_uninterrupted_one_does(trained):
    folder = trained / "resume"
    straight, resumed = (torch.load(folder / kind / "rank0.pt") for kind in ("straight", "resumed"))
    assert json.loads((folder / "resumed" / "rank0.json").read_text())["path"] == "ddp"
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), f"the resumed run differs on {k}"
    assert all(torch.equal(resumed[k], v) for k, v in torch.load(folder / "resumed" / "rank1.pt").items())


def test_torchrun_evaluation_equals_one_process(trained, tmp_path, env):
    run = trained / "baseline" / "run"
    _torchrun("eval", str(run), "--device", "cpu", "--out", str(tmp_path / "ddp_eval"), env=env)
    single = subprocess.run([sys.executable, "-m", "vireid", "eval", str(run), "--device", "cpu",
                             "--out", str(tmp_path / "one_eval")], env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    a = json.loads((tmp_path / "ddp_eval" / "results.json").read_text())
    b = json.loads((tmp_path / "one_eval" / "results.json").read_text())
    assert a["protocols"].keys() == b["protocols"].keys()
    for key, pa in a["protocols"].items():
        pb = b["protocols"][key]
        assert pa["features"].keys() == pb["features"].keys() == {"bn", "pool"}
        for kind, fa in pa["features"].items():
            fb = pb["features"][kind]
            # features come from differently sized batches on 2 ranks: equal up to float rounding
            for ta, tb in zip(fa["trials"], fb["trials"], strict=True):
                assert ta["num_query"] == tb["num_query"] and ta["num_gallery"] == tb["num_gallery"]
                for metric in ("rank1", "rank5", "mAP", "mINP"):
                    assert abs(ta[metric] - tb[metric]) < 1e-6, (key, kind, metric, ta[metric], tb[metric])
