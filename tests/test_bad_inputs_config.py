"""Bad values given to `vireid train` / `vireid eval` end in one line that names the key or file, what was expected
and the fix, with exit code 2: never a traceback, never a run that silently does something else."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.engine_fixtures import config_args, make_tiny_sysu
from vireid.cli import main

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tiny_sysu(tmp_path_factory.mktemp("data") / "sysu")


@pytest.fixture
def no_config_checkpoint(tmp_path) -> Path:
    """A checkpoint-like file with weights, method and classes but no 'config'."""
    path = tmp_path / "no_config.pt"
    torch.save({"model": {"w": torch.ones(2)}, "method": "baseline", "num_classes": 6}, path)
    return path


def train(*overrides: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda data, tmp, ck: ["train", *config_args(data, *overrides), "--out", str(tmp / "run"), "--no-progress"]


# (id, argv from (data root, tmp dir, checkpoint without config), expected message: a regex; {ck}: that checkpoint)
CASES: list[tuple[str, Callable[[Path, Path, Path], list[str]], str]] = [
    ("lr negative", train("optim.lr=-0.1"), r"config key 'optim\.lr' must be > 0, got -0\.1; set e\.g\. optim\.lr="),
    ("weight decay negative", train("optim.weight_decay=-1"),
     r"config key 'optim\.weight_decay' must be >= 0, got -1\.0; set e\.g\. optim\.weight_decay="),
    ("num_workers negative", train("data.num_workers=-1"),
     r"config key 'data\.num_workers' must be >= 0, got -1; set e\.g\. data\.num_workers=0"),
    ("zero epochs", train("train.epochs=0"),
     r"config key 'train\.epochs' must be >= 1, got 0; set e\.g\. train\.epochs="),
    ("negative epochs", train("train.epochs=-2"), r"config key 'train\.epochs' must be >= 1, got -2"),
    ("unknown arch", train("model.arch=resnet999"),
     r"config key 'model\.arch' is 'resnet999', an unknown backbone: expected one of resnet50, resnet18; "
     r"set e\.g\. model\.arch=resnet50"),
    ("cuda without a GPU", train("train.device=cuda"),
     r"train\.device=cuda: no CUDA GPU is usable here .*use train\.device=cpu, or train\.device=auto"),
    ("cuda index beyond the GPUs", train("train.device=cuda:99"),
     r"train\.device=cuda:99: (no CUDA GPU is usable here|this machine has \d+ CUDA device)"),
    ("eval on cuda without a GPU", lambda data, tmp, ck: ["eval", str(tmp), "--device", "cuda"],
     r"--device=cuda: no CUDA GPU is usable here .*use --device=cpu"),
    ("eval a checkpoint without config", lambda data, tmp, ck: ["eval", str(ck), "--device", "cpu"],
     r"{ck} is not a vireid checkpoint: it has no 'config'; pass a checkpoint written by vireid train"),
    ("resume from a checkpoint without config", lambda data, tmp, ck: [*train()(data, tmp, ck), "--resume", str(ck)],
     r"{ck} is not a vireid checkpoint: it has no 'config'"),
]


@pytest.mark.parametrize("argv, expected", [
    pytest.param(argv, expected, id=name, marks=[NO_GPU] if name in ("cuda without a GPU",
                                                                      "eval on cuda without a GPU") else [])
    for name, argv, expected in CASES])
def test_a_bad_input_is_one_line_naming_the_key_and_the_fix(data_root, tmp_path, no_config_checkpoint, capsys,
                                                             argv, expected):
    rc = main(argv(data_root, tmp_path, no_config_checkpoint))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(expected.replace("{ck}", re.escape(str(no_config_checkpoint))), err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained
