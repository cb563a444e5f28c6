"""DDP is real: torchrun with 2 CPU ranks (gloo) trains identical replicas and evaluates like one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine_fixtures import config_args, make_tiny_sysu

pytestmark = pytest.mark.slow


SCRIPT = str(Path(__file__).with_name("train_with_callbacks.py"))


def _torchrun(*args: str, env: dict) -> subprocess.CompletedProcess:
    """torchrun with 2 ranks of `vireid ARGS`, or of the callback script when ARGS start with it."""
    target = list(args) if args and args[0] == SCRIPT else ["-m", "vireid", *args]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_rank_training_and_evaluation(tmp_path):
    data = make_tiny_sysu(tmp_path / "sysu")
    run = tmp_path / "run"
    dump = tmp_path / "ranks"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    _torchrun(SCRIPT, "--dump-rank-state", str(dump), *config_args(data, "train.device=cpu"), "--out", str(run),
              "--no-progress", env=env)

    r0, r1 = torch.load(dump / "rank0.pt"), torch.load(dump / "rank1.pt")
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(saved[k], r0[k]) for k in r0)
    # the sampler gave each rank its own batches: two ranks saw twice the images per step
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    assert epochs

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
