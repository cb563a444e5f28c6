"""Callbacks: observe training without editing `Trainer.fit` (reports, tests, custom logging).

A callback overrides any of the hooks below; each has a no-op default. The Trainer calls them on every
rank (check `trainer.dist.is_main` before writing files) in the order the callbacks were given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class of trainer callbacks; every hook is a no-op."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """After the method, optimizers and loader are built (and a resumed state restored), before epoch one."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, summary: dict[str, Any]) -> None:
        """After 0-based `epoch`: its schedulers stepped, validation done and checkpoints written.

        `summary` is the epoch record written to metrics.jsonl (mean losses, learning rates, speed)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, before `fit` returns the trained method."""
