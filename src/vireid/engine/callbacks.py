"""Callbacks: observe training without editing `Trainer.fit` (reports, tests, custom logging).

A callback overrides any of the hooks below; each has a no-op default. The Trainer calls them on every
rank (check `trainer.dist.is_main` before writing files) in the order the callbacks were given.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

log = logging.getLogger(__name__)

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


class ValidationFigures(Callback):
    """Logs a rank-list and a t-SNE figure of the validation set to TensorBoard after each validation
    (`train.tensorboard_figures`); the trainer adds it when the switch is on. Main process only."""

    def __init__(self) -> None:
        self._writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        import importlib.util

        from ..core import ConfigError

        cfg = trainer.cfg
        if not all(importlib.util.find_spec(m) for m in ("matplotlib", "sklearn")):  # fail now, not after hours
            raise ConfigError("train.tensorboard_figures=true needs matplotlib and scikit-learn (the t-SNE); run "
                              "`pip install 'vireid[viz]'` or set train.tensorboard_figures=false")
        if cfg.train.select_best != "val" or not cfg.train.eval_every:
            log.warning("train.tensorboard_figures is on but no validation runs (it needs train.select_best=val and "
                        "train.eval_every > 0): no figures will be logged")

    def on_epoch_end(self, trainer: Trainer, epoch: int, summary: dict[str, Any]) -> None:
        if not trainer.dist.is_main or trainer.last_validation_epoch != epoch:
            return
        from ..viz.validation import validation_figures
        from .evaluate import validation_trial

        trial = validation_trial(trainer.dataset.val)
        images = validation_figures(trainer.method, trial.query, trial.gallery, height=trainer.cfg.data.height,
                                    width=trainer.cfg.data.width, rule=trial.rule, device=trainer.device,
                                    seed=trainer.cfg.train.seed, batch_size=trainer.cfg.eval.batch_size)
        trainer.method.train()
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(trainer.run.tensorboard))
        step = int(summary.get("step", epoch))
        for name, image in images.items():
            self._writer.add_image(f"val/{name}", image, step, dataformats="HWC")
        self._writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
