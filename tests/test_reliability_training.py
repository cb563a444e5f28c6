"""Reliability of training, resuming and evaluating (issue 13): no code runs from a checkpoint file, a resume keeps
its hyper-parameters, a torn metrics line or a kill before the first checkpoint never blocks a run, an evaluation
writes galleries/ and results.json as one unit, and a full disk is named instead of a traceback."""

from __future__ import annotations

import builtins
import errno
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine_fixtures import config_args, make_tiny_sysu, tiny_train_config
from vireid.cli import main
from vireid.core import CheckpointError, EvalTrial, Modality, Sample
from vireid.runs import read_checkpoint


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_sysu(tmp_path_factory.mktemp("data") / "sysu")


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """A run trained for one epoch by `vireid train` (copy it before changing it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *config_args(data_root, "train.epochs=1"), "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _train(data_root: Path, run: Path, *args: str) -> int:
    overrides = [a for a in args if not a.startswith("--")]
    options = [a for a in args if a.startswith("--")]
    return main(["train", *config_args(data_root, *overrides), "--out", str(run), "--no-progress", *options])


# ---------------------------------------------------------------------- A: no code runs from a checkpoint


class _RunsCode:
    """Unpickling this calls open(marker, "w"): the file appears if the loader runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_file_that_would_run_code_is_refused_by_name(tmp_path, capsys, how):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "model.pt"
    payload = {"model": _RunsCode(marker), "method": "baseline", "num_classes": 2, "config": {}}
    if how == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match=rf"{evil}.*not a vireid checkpoint|cannot read checkpoint {evil}"):
        read_checkpoint(evil)
    assert main(["eval", str(evil)]) == 2
    err = capsys.readouterr().err
    assert str(evil) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists(), "loading the file ran its code"


@pytest.mark.parametrize("payload, missing", [
    ("state_dict", "'model', 'method', 'num_classes', 'config'"),
    ({"model": {}, "method": "baseline", "num_classes": 2}, "'config'"),
    ({"model": {}, "method": "baseline", "config": {}}, "'num_classes'"),
])
def test_a_file_that_is_not_a_vireid_checkpoint_is_refused_by_name(tmp_path, payload, missing):
    path = tmp_path / "weights.pth"
    if payload == "state_dict":
        import torchvision

        payload = torchvision.models.resnet18().state_dict()
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=rf"{path} is not a vireid checkpoint: it has no {missing}"):
        read_checkpoint(path)


def test_what_vireid_saves_loads_with_weights_only(trained):
    path = trained / "checkpoints" / "last.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert data["format_version"] == 2 and data["label_map"] and data["config"]["train"]["epochs"] == 1


def test_a_format_1_checkpoint_with_a_numpy_rng_state_still_loads_and_restores(tmp_path):
    """Checkpoints of vireid <= 0.2 held np.random.get_state() (a numpy array): allowed, exactly restored."""
    import random

    from vireid.runs import set_rng_state

    np.random.seed(3)
    random.seed(3)
    torch.manual_seed(3)
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "cuda": None}
    expected = (np.random.rand(4), random.random(), torch.rand(3))
    path = tmp_path / "old.pt"
    torch.save({"format_version": 1, "model": {}, "method": "baseline", "num_classes": 2, "config": {},
                "rng": state}, path)
    set_rng_state(read_checkpoint(path)["rng"])
    again = (np.random.rand(4), random.random(), torch.rand(3))
    assert np.array_equal(expected[0], again[0]) and expected[1] == again[1] and torch.equal(expected[2], again[2])


# ---------------------------------------------------------------------- B: resume


def test_a_resume_with_changed_hyper_parameters_is_refused(data_root, run_copy, capsys):
    before = (run_copy / "config.yaml").read_text()
    assert _train(data_root, run_copy, "train.epochs=2", "optim.lr=0.5", "--resume=auto") == 2
    err = capsys.readouterr().err
    assert "optim.lr (0.001 -> 0.5)" in err and "drop those overrides" in err and len(err.strip().splitlines()) == 1
    # another optimiser: named, not a KeyError 'momentum' from the optimizer state
    assert _train(data_root, run_copy, "train.epochs=2", "optim.name=sgd", "--resume=auto") == 2
    assert "optim.name ('adam' -> 'sgd')" in capsys.readouterr().err
    assert (run_copy / "config.yaml").read_text() == before
    assert read_checkpoint(run_copy / "checkpoints" / "last.pt")["epoch"] == 0


@pytest.mark.slow
def test_a_resume_may_extend_training_and_config_yaml_says_what_ran(data_root, run_copy):
    assert _train(data_root, run_copy, "train.epochs=2", "train.log_every=2", "--resume=auto") == 0
    from vireid.config import load_config

    ran = load_config(run_copy / "config.yaml")
    assert ran.train.epochs == 2 and ran.train.log_every == 2 and ran.optim.lr == 0.001
    assert read_checkpoint(run_copy / "checkpoints" / "last.pt")["epoch"] == 1
    # fewer epochs than trained: nothing runs, and config.yaml still says what ran
    assert _train(data_root, run_copy, "train.epochs=1", "--resume=auto") == 0
    assert load_config(run_copy / "config.yaml").train.epochs == 2


def test_truncate_metrics_drops_a_torn_last_line_with_a_warning(tmp_path, caplog):
    from vireid.runs import RunDir

    run = RunDir(tmp_path)
    good = [{"kind": "train", "epoch": 0, "step": 1}, {"kind": "epoch", "epoch": 0, "step": 2},
            {"kind": "train", "epoch": 1, "step": 3}]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"kind": "train", "epoch": 1, "st')
    with caplog.at_level(logging.WARNING, logger="vireid"):
        run.truncate_metrics(0)
    assert [json.loads(line) for line in run.metrics.read_text().splitlines()] == good[:2]
    assert f"{run.metrics}: dropped 1 unreadable line(s) (line 4)" in caplog.text


def test_the_training_time_is_the_epochs_the_run_is_made_of_torn_lines_skipped(tmp_path):
    from vireid.runs import RunDir, training_time

    run = RunDir(tmp_path)
    assert run.read_metrics() == [] and training_time([]) == (0, 0.0)
    first = [{"kind": "train", "epoch": 0}, {"kind": "epoch", "epoch": 0, "seconds": 10.0},
             {"kind": "epoch", "epoch": 1, "seconds": 12.0}]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in first) + '{"kind": "epoch", "epoch": 2, "sec')
    assert run.read_metrics() == first  # the torn record of a killed writer is skipped
    assert training_time(run.read_metrics()) == (2, 22.0)
    run.truncate_metrics(0)  # resumed from epoch 0's checkpoint: epoch 1 runs again and counts once
    with run.metrics.open("a") as f:
        f.write(json.dumps({"kind": "epoch", "epoch": 1, "seconds": 11.0}) + "\n")
    assert training_time(run.read_metrics()) == (2, 21.0)


@pytest.mark.slow
def test_a_torn_last_metrics_line_does_not_stop_a_resume(data_root, run_copy, caplog):
    with (run_copy / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "epoch": 0, "st')  # the disk filled up in the middle of a record
    with caplog.at_level(logging.WARNING, logger="vireid"):
        assert _train(data_root, run_copy, "train.epochs=2", "--resume=auto") == 0
    assert "dropped 1 unreadable line" in caplog.text
    records = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1]


def test_resume_auto_without_a_checkpoint_says_there_is_nothing_to_resume(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "train", "epoch": 0, "step": 1, "loss": 9.9}\n')
    assert _train(data_root, run, "--resume=auto") == 2
    err = capsys.readouterr().err
    assert f"nothing to resume in {run}" in err and "without --resume" in err
    assert "evaluate" not in err


def test_a_fresh_start_after_a_kill_before_the_first_checkpoint_starts_a_clean_metrics_log(data_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = {"kind": "train", "epoch": 0, "step": 1, "loss": 9.9}
    (run / "metrics.jsonl").write_text(json.dumps(stale) + "\n")
    assert _train(data_root, run, "train.epochs=1", "train.max_steps_per_epoch=1") == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert stale not in records
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1), ("epoch", 1)]


def _full_disk(monkeypatch, target: Path) -> None:
    """Writing `target` fails as on a full disk: torch.save to a file raises a RuntimeError (what torch does, not an
    OSError); writing the bytes of its temporary file raises OSError ENOSPC."""
    real_save, real_write = torch.save, Path.write_bytes

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, Path)):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    def write_bytes(self, data):
        if self.name.startswith(f".{target.name}."):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, data)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_a_full_disk_during_a_checkpoint_save_is_a_storage_error_naming_the_file(tmp_path, monkeypatch):
    from vireid.core import StorageError
    from vireid.runs import save_checkpoint

    last = tmp_path / "checkpoints" / "last.pt"
    payload = {"model": {"w": torch.ones(3)}, "method": "baseline", "num_classes": 2, "config": {}}
    save_checkpoint(last, payload)
    before = last.read_bytes()
    _full_disk(monkeypatch, last)
    with pytest.raises(StorageError, match=rf"cannot write {last}: the disk is full.*{last} was left as it was"):
        save_checkpoint(last, {**payload, "model": {"w": torch.zeros(3)}})
    assert last.read_bytes() == before
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_a_full_disk_while_training_stops_with_one_line_and_keeps_the_last_checkpoint(data_root, run_copy,
                                                                                      monkeypatch, capsys):
    last = run_copy / "checkpoints" / "last.pt"
    before = last.read_bytes()
    _full_disk(monkeypatch, last)
    assert _train(data_root, run_copy, "train.epochs=2", "--resume=auto") == 2
    err = capsys.readouterr().err
    assert f"cannot write {last}: the disk is full" in err and len(err.strip().splitlines()) == 1
    assert last.read_bytes() == before
    assert not list(run_copy.rglob("*.tmp"))


# ---------------------------------------------------------------------- B: eval --checkpoint of another run


def _checkpointed_run(run: Path, data_root: Path, seed: int) -> Path:
    from vireid.config import config_to_dict
    from vireid.methods import build_method
    from vireid.runs import save_checkpoint

    cfg = tiny_train_config(data_root, "eval.options={mode: all, shots: 1, gallery_sampler: agw, trials: 1}",
                            "eval.features=[bn]")
    torch.manual_seed(seed)
    method = build_method(cfg, 6)
    return save_checkpoint(run / "checkpoints" / "last.pt", {"config": config_to_dict(cfg), "num_classes": 6,
                                                              "model": method.state_dict(), "method": "baseline"})


def test_eval_with_another_runs_checkpoint_does_not_touch_the_run(data_root, tmp_path, capsys):
    mine, other = tmp_path / "mine", tmp_path / "other"
    _checkpointed_run(mine, data_root, 0)
    theirs = _checkpointed_run(other, data_root, 1)
    assert main(["eval", str(mine), "--checkpoint", str(theirs), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint {theirs} is not one of {mine}'s checkpoints" in err and "--out" in err
    assert len(err.strip().splitlines()) == 1
    assert not (mine / "results.json").exists() and not (mine / "galleries").exists()


@pytest.mark.slow
def test_eval_of_another_runs_checkpoint_writes_where_it_is_told_or_beside_that_run(data_root, tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    _checkpointed_run(mine, data_root, 0)
    theirs = _checkpointed_run(other, data_root, 1)
    # with --out the results go there, and say which checkpoint they are of
    assert main(["eval", str(mine), "--checkpoint", str(theirs), "--device", "cpu", "--out", str(tmp_path / "x")]) == 0
    assert json.loads((tmp_path / "x" / "results.json").read_text())["meta"]["checkpoint"] == str(theirs)
    assert not (mine / "results.json").exists()
    # a checkpoint file on its own: the results go to its run, not into checkpoints/
    assert main(["eval", str(theirs), "--device", "cpu"]) == 0
    assert (other / "results.json").is_file() and not (other / "checkpoints" / "results.json").exists()


# ---------------------------------------------------------------------- B: galleries/ and results.json as one unit


def _trials(label: str) -> list[EvalTrial]:
    rng = np.random.default_rng(0)
    query = [Sample(f"/i/{i}.jpg", i % 5, 3, Modality.INFRARED) for i in range(10)]
    pool = [Sample(f"/v/{i}.jpg", i % 5, 1, Modality.VISIBLE) for i in range(20)]
    return [EvalTrial(f"toy/{label}/trial{t}", query, [pool[j] for j in sorted(rng.choice(20, 12, replace=False))],
                      "none", "identity", {"protocol": f"toy/{label}"}) for t in range(2)]


def _extract(samples):
    centers = np.random.default_rng(1).normal(size=(5, 8))
    return {"bn": np.stack([centers[s.pid] + 0.5 * np.random.default_rng(len(s.path)).normal(size=8)
                            for s in samples])}


def _snapshot(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def test_galleries_describe_the_same_evaluation_as_results_json(tmp_path):
    from vireid.engine.evaluator import Evaluator

    Evaluator(_trials("all"), features=("bn",)).run(_extract, out_dir=tmp_path)
    Evaluator(_trials("indoor"), features=("bn",)).run(_extract, out_dir=tmp_path)
    listed = sorted(str(p.relative_to(tmp_path / "galleries")) for p in (tmp_path / "galleries").rglob("*.txt"))
    assert listed == ["toy/indoor/trial0.txt", "toy/indoor/trial1.txt"]
    assert list(json.loads((tmp_path / "results.json").read_text())["protocols"]) == ["toy/indoor"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fail_at", ["scoring", "second gallery list", "results.json"])
def test_a_failed_evaluation_leaves_the_previous_galleries_and_results(tmp_path, monkeypatch, fail_at):
    from vireid.core import EvaluationError, StorageError
    from vireid.engine.evaluator import Evaluator

    Evaluator(_trials("all"), features=("bn",)).run(_extract, out_dir=tmp_path)
    before = _snapshot(tmp_path)
    real_write = Path.write_text
    written: list[Path] = []

    def write_text(self, data, *args, **kwargs):
        written.append(self)
        gallery_lists = [p for p in written if ".txt" in p.name]
        if (fail_at == "second gallery list" and ".txt" in self.name and len(gallery_lists) == 2) or \
                (fail_at == "results.json" and self.name.startswith(".results.json.")):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    extract = _extract
    if fail_at == "scoring":
        def extract(samples):
            return {"bn": np.full((len(samples), 8), np.nan)}
    with pytest.raises((StorageError, EvaluationError)) as info:
        Evaluator(_trials("indoor"), features=("bn",)).run(extract, out_dir=tmp_path)
    if fail_at != "scoring":
        assert isinstance(info.value, StorageError) and "the disk is full" in str(info.value)
        assert str(tmp_path / ("results.json" if fail_at == "results.json" else "galleries")) in str(info.value)
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------- B: the demo's epochs


@pytest.mark.parametrize("epochs", ["0", "-2"])
def test_the_demo_refuses_fewer_than_one_epoch(tmp_path, monkeypatch, capsys, epochs):
    import vireid.data.synthetic as synthetic

    def generate(*args, **kwargs):
        raise AssertionError("the demo went on to synthesise data and train")

    monkeypatch.setattr(synthetic, "generate", generate)
    assert main(["demo", "--epochs", epochs, "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--epochs must be >= 1, got {epochs}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
