"""Train every registered method in turn for a few steps, run under torchrun by tests/test_ddp.py (one launch for the
whole registry: a launch costs tens of seconds). Each rank writes, per method, its final weights and which
data-parallel path the trainer took:

    torchrun --nproc_per_node=2 tests/ddp_train_all.py --data DATA --out DIR [--methods a,b] [key=value ...]

    DIR/methods.json                   the methods trained, in order
    DIR/<method>/run/                  the run directory (rank 0 writes it)
    DIR/<method>/rank<r>.pt            rank r's final state_dict
    DIR/<method>/rank<r>.json          {"path": "ddp" | "average", "sync_bn_layers": n}
    DIR/resume/{straight,resumed}/rank<r>.pt   baseline (DDP path) for 2 epochs, and for 1 epoch resumed to 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: make `tests.` importable

from tests.helpers import tiny_config  # noqa: E402
from vireid.engine.trainer import Trainer  # noqa: E402
from vireid.registry import METHODS  # noqa: E402
from vireid.utils.distributed import DistInfo, cleanup  # noqa: E402

#: per method: options that make two steps reach every optimizer (the presets start with a GAN-only phase)
EVERY_OPTIMIZER = {"d2rl": ["method.ti_pretrain_epochs=0"], "jsia": ["method.gan_warmup_epochs=0"]}


def run_overrides(data: Path, out: Path) -> list[str]:
    """A seconds-long run: 1 epoch of 2 steps at 32x16 (or the method's smallest size), a 2-trial evaluation."""
    return [f"data.root={data}", f"data.cache_dir={out / 'cache'}", "train.epochs=1", "train.max_steps_per_epoch=2",
            "train.deterministic=true", "train.log_every=1",
            "eval.options={mode: all, shots: 1, gallery_sampler: agw, trials: 2}", "eval.batch_size=16"]


def train_one(name: str, data: Path, out: Path, extra: list[str]) -> DistInfo:
    """Train `name` under the process group (set up by the first Trainer, reused by the next) and dump this rank's
    weights and path; where this process stands."""
    folder = out / name
    cfg = tiny_config(name, *run_overrides(data, folder), *EVERY_OPTIMIZER.get(name, []), *extra)
    trainer = Trainer(cfg, folder / "run", progress=False)
    trainer.fit()
    dump(trainer, folder)
    return trainer.dist


def dump(trainer: Trainer, folder: Path) -> None:
    """This rank's final weights and data-parallel path into `folder`."""
    rank = trainer.dist.rank
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(trainer.method.state_dict(), folder / f"rank{rank}.pt")
    layers = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.method.modules())
    (folder / f"rank{rank}.json").write_text(json.dumps({"path": trainer.iteration.path, "sync_bn_layers": layers}))


def resume_check(data: Path, out: Path, extra: list[str]) -> None:
    """The baseline for 2 epochs straight, and for 1 epoch then resumed to 2 (the weights must be equal)."""
    folder = out / "resume"
    two = tiny_config("baseline", *run_overrides(data, folder), "train.epochs=2", *extra)
    one = tiny_config("baseline", *run_overrides(data, folder), *extra)
    straight = Trainer(two, folder / "straight" / "run", progress=False)
    straight.fit()
    dump(straight, folder / "straight")
    Trainer(one, folder / "resumed" / "run", progress=False).fit()
    resumed = Trainer(two, folder / "resumed" / "run", resume="auto", progress=False)
    resumed.fit()
    dump(resumed, folder / "resumed")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--methods", default="", help="comma-separated (default: every registered method)")
    p.add_argument("--resume-check", action="store_true", help="also train the baseline straight and resumed")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    names = [m for m in args.methods.split(",") if m] or METHODS.names()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "methods.json").write_text(json.dumps(names))
    for name in names:
        dist = train_one(name, Path(args.data), Path(args.out), args.overrides)
    if args.resume_check:
        resume_check(Path(args.data), Path(args.out), args.overrides)
    cleanup(dist)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
