"""`vireid train` with test-only callbacks, run as a script (also under torchrun) by tests/test_engine.py and
tests/test_ddp.py. Product code has no test switches: the tests install these callbacks here.

    python tests/train_with_callbacks.py [--kill-after-epoch E] [--dump-rank-state DIR] CONFIG --out DIR [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch

from vireid.config import load_config
from vireid.engine.callbacks import Callback
from vireid.engine.trainer import Trainer
from vireid.utils.distributed import cleanup


class KillAfterEpoch(Callback):
    """SIGKILL the (main) process right after epoch `epoch`'s checkpoint: a crash at the worst moment."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, summary) -> None:
        if epoch == self.epoch and trainer.dist.is_main:
            os.kill(os.getpid(), signal.SIGKILL)


class DumpRankState(Callback):
    """Each rank saves its final weights to <dir>/rank<r>.pt (replicas must be identical)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_fit_end(self, trainer) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save(trainer.method.state_dict(), self.directory / f"rank{trainer.dist.rank}.pt")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", required=True)
    p.add_argument("--resume")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--kill-after-epoch", type=int)
    p.add_argument("--dump-rank-state")
    args, extra = p.parse_known_args(argv)
    callbacks: list[Callback] = []
    if args.kill_after_epoch is not None:
        callbacks.append(KillAfterEpoch(args.kill_after_epoch))
    if args.dump_rank_state:
        callbacks.append(DumpRankState(args.dump_rank_state))
    cfg = load_config(args.config, [*args.overrides, *extra])
    trainer = Trainer(cfg, args.out, resume=args.resume, progress=not args.no_progress, callbacks=callbacks)
    trainer.fit()
    cleanup(trainer.dist)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
