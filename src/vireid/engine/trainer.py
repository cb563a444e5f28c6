"""The Trainer: epochs, AMP, DDP via torchrun, atomic checkpoints, exact resume, NaN guard, logs, callbacks."""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import (
    RESUME_MAY_CHANGE,
    Config,
    TrainConfig,
    check_eval_options,
    config_differences,
    config_from_dict,
    config_to_dict,
    options_dict,
    upgrade_saved_config,
)
from ..core import CheckpointError, ConfigError, DatasetError, NonFiniteLossError, TrainingError
from ..data.datasets import ReIDDataset, load_dataset
from ..data.loading import build_train_loader
from ..methods import Method, build_method
from ..runs import MetricsLog, RunDir, load_model_state, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..runs.checkpoint import RESUME_KEYS
from ..utils import distributed as D
from ..utils.seed import seed_everything
from .callbacks import Callback
from .stepper import TrainIteration, TrainStepper, autocast, resolve_amp, wrap_ddp

log = logging.getLogger(__name__)


def ensure_dataset(cfg: Config, progress: bool = True) -> ReIDDataset:
    """Load the training dataset; synthesise it first when `data.synthesize` says how and it is missing."""
    root = Path(cfg.data.root).expanduser()
    if not root.exists():
        if cfg.data.synthesize:
            from ..data.synthetic import generate

            generate(out=root, progress=progress, **cfg.data.synthesize)
        else:
            hint = ""
            if "synthetic" in str(root):
                hint = f" Make it with: vireid synth --layout {cfg.data.name} --out {root}"
            raise DatasetError(f"dataset root {root} does not exist (data.name={cfg.data.name}).{hint} "
                               "Or point data.root=DIR at your copy.")
    return load_dataset(cfg.data.name, root, **options_dict(cfg.data.options))


def prepare_network(method: Method, train: TrainConfig, dist: D.DistInfo, device: torch.device) -> None:
    """Apply `train.sync_bn` (distributed runs only), `train.channels_last` and `train.compile` to `method` in place.

    None of them changes a state_dict key: SyncBatchNorm layers keep the BatchNorm layers' parameters and buffers,
    channels_last only changes the strides of 4-d weights, and `nn.Module.compile` compiles `method.forward` (the
    network) without the `_orig_mod.` wrapper `torch.compile(module)` would add.
    """
    if train.sync_bn and dist.initialized:
        D.use_sync_batchnorm(method, device)
    if train.channels_last:
        method.to(memory_format=torch.channels_last)
    if train.compile:
        method.compile()


class Trainer:
    """Trains `cfg.method` on `cfg.data`, writing everything into the run directory.

    Args:
        cfg: the resolved config (`vireid.config.load_config`).
        run_dir: the run directory (a `RunDir` or a path); refused when it already holds a trained run
            unless `resume` is given.
        resume: "auto" (the run's last checkpoint) or a checkpoint path.
        progress: progress bars and epoch lines (default: cfg.train.progress).
        dataset: an already loaded dataset (default: read cfg.data, synthesising it when configured).
        callbacks: objects observing training (see `engine.callbacks.Callback`).

    Examples::

        cfg = load_config("configs/synthetic/baseline.yaml", ["train.epochs=2"])
        method = Trainer(cfg, "runs/quick").fit()
    """

    def __init__(self, cfg: Config, run_dir: str | Path | RunDir, *, resume: str | None = None,
                 progress: bool | None = None, dataset: ReIDDataset | None = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.cfg = cfg
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.run_dir = self.run.path
        self.resume = resume
        self.progress = cfg.train.progress if progress is None else progress
        self.callbacks = list(callbacks)
        self.dist = D.init_distributed(cfg.train.device)
        self.device = D.resolve_device(cfg.train.device, self.dist)
        self._dataset = dataset
        self.last_validation_epoch: int | None = None  # the 0-based epoch of the last validation
        if cfg.train.tensorboard_figures:
            from .callbacks import ValidationFigures

            self.callbacks.append(ValidationFigures())
        if resume is None and self.run.is_trained:
            raise TrainingError(f"{self.run_dir} already holds a trained run ({self.run.checkpoint('last')}); pass "
                                "--resume auto to continue it, or choose another --out")

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        cfg = self.cfg
        check_eval_options(cfg)  # a wrong eval option fails now, not after training
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        self.dataset = self._dataset or ensure_dataset(cfg, self.progress and self.dist.is_main)
        self.method: Method = build_method(cfg, self.dataset.num_classes).to(self.device)
        prepare_network(self.method, cfg.train, self.dist, self.device)
        if self.dist.initialized:
            D.broadcast_module(self.method)
        self.optimizers = self.method.optimizers()
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        scaler = None
        if self.amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
        use_ddp = self.dist.initialized and self.method.data_parallel().ddp
        # the Stepper averages gradients by hand only where DDP does not (the methods that declare ddp=False)
        self.stepper = TrainStepper(self.optimizers, scaler=scaler, grad_clip=cfg.train.grad_clip,
                                    distributed=self.dist.initialized and not use_ddp)
        self.iteration = TrainIteration(self.method, self.stepper,
                                        wrap_ddp(self.method, self.device) if use_ddp else None)
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.run.default_cache
        self.loader, self.sampler = build_train_loader(
            self.dataset, cfg.data, cfg.sampler, cfg.augment, cache_dir=cache_dir, seed=cfg.train.seed,
            rank=self.dist.rank, world_size=self.dist.world_size, progress=self.progress and self.dist.is_main)

    def _state(self, epoch: int, best: float | None) -> dict[str, Any]:
        return {
            "method": self.cfg.method.name,
            "num_classes": self.method.num_classes,
            "config": config_to_dict(self.cfg),
            "model": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, (o, _) in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, (_, s) in self.optimizers.items() if s is not None},
            "scaler": self.stepper.scaler.state_dict() if self.stepper.scaler is not None else None,
            "epoch": epoch,
            "global_step": self.stepper.global_step,
            "step_counts": dict(self.stepper.step_counts),
            "rng": rng_state(),
            "best": best,
            "label_map": {int(k): int(v) for k, v in self.dataset.label_map.items()},
        }

    def _resume_checkpoint(self) -> tuple[Path, dict[str, Any]]:
        """The checkpoint to resume from, read and checked: a resume state, and the config it was trained with
        (only the keys in `config.RESUME_MAY_CHANGE` may differ: the run keeps its hyper-parameters)."""
        assert self.resume is not None
        if self.resume == "auto":
            path = self.run.checkpoint("last")
            if not path.is_file():
                raise CheckpointError(
                    f"nothing to resume in {self.run_dir}: it holds no checkpoint ({path} is missing; training there "
                    "stopped before its first epoch ended, or never started); start it again without --resume")
        else:
            path = self.run.find_checkpoint(self.resume)
        data = read_checkpoint(path)
        missing = [k for k in RESUME_KEYS if k not in data]
        if missing:
            raise CheckpointError(f"{path} cannot be resumed: it has no {', '.join(map(repr, missing))} (a checkpoint "
                                  "written by vireid train holds them); resume from <run>/checkpoints/last.pt")
        try:
            saved = config_from_dict(upgrade_saved_config(data["config"]))
        except ConfigError as exc:
            raise CheckpointError(f"{path}: the config it was trained with cannot be read ({exc})") from None
        differ = config_differences(saved, self.cfg, allowed=RESUME_MAY_CHANGE)
        if differ:
            may = ", ".join(k if "." in k else f"{k}.*" for k in RESUME_MAY_CHANGE)
            raise ConfigError(
                f"cannot resume {path} with a changed config: {'; '.join(differ)}. A resumed run keeps the "
                f"settings it was trained with (only {may} may change): drop those overrides, or train a new run "
                "with another --out")
        return path, data

    def _restore(self, path: Path, data: dict[str, Any]) -> tuple[int, float | None]:
        load_model_state(self.method, data["model"], source=str(path), method=data["method"],
                         expected_method=self.cfg.method.name)
        for k, (opt, sched) in self.optimizers.items():
            if k not in data["optimizers"]:
                raise CheckpointError(f"{path} has no state for optimizer {k!r}")
            opt.load_state_dict(data["optimizers"][k])
            if sched is not None and k in data.get("schedulers", {}):
                sched.load_state_dict(data["schedulers"][k])
        if self.stepper.scaler is not None and data.get("scaler"):
            self.stepper.scaler.load_state_dict(data["scaler"])
        self.stepper.global_step = int(data["global_step"])
        self.stepper.step_counts.update(data.get("step_counts", {}))
        set_rng_state(data["rng"])
        return int(data["epoch"]) + 1, data.get("best")

    # ------------------------------------------------------------------ loop
    def fit(self) -> Method:
        """Train for `cfg.train.epochs` (or the remainder when resuming); returns the trained method."""
        resume = self._resume_checkpoint() if self.resume else None  # refused before any data is read
        self._build()
        cfg = self.cfg
        start_epoch, best = 0, None
        if resume is not None:
            start_epoch, best = self._restore(*resume)
            self.loader.seed_workers_privately(cfg.train.seed)  # the global RNG goes on as if never stopped
            if start_epoch >= cfg.train.epochs:
                log.info("%s has trained %d epoch(s) already, train.epochs=%d: nothing to do (raise train.epochs "
                         "to train longer)", self.run_dir, start_epoch, cfg.train.epochs)
            elif self.dist.is_main:
                self.run.truncate_metrics(start_epoch - 1)
        elif self.dist.is_main and self.run.reset_metrics():
            log.info("%s: removed the metrics of an earlier attempt that wrote no checkpoint", self.run_dir)
        if self.dist.is_main and start_epoch < cfg.train.epochs:
            # config.yaml says what runs now (a resume may change the RESUME_MAY_CHANGE keys)
            self.run.write_run_files(cfg)
        metrics = MetricsLog(self.run) if self.dist.is_main else None
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            for epoch in range(start_epoch, cfg.train.epochs):
                self._run_epoch(epoch, metrics)
                with warnings.catch_warnings():
                    # an optimizer a method did not step this epoch (a GAN warm-up phase, an alternation) makes
                    # torch warn that the schedule moved first; the per-epoch schedule is meant to move anyway
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                    for _, sched in self.optimizers.values():
                        if sched is not None:
                            sched.step()
                if self.dist.initialized:  # BN statistics differ by rank (but for SyncBatchNorm layers): average
                    D.average_buffers(self.method)
                best = self._end_of_epoch(epoch, best, metrics)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, dict(self.last_epoch_summary))
        except NonFiniteLossError as exc:
            last = self.run.checkpoint("last")
            where = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainingError(f"{exc}; training stopped, {where}. Lower the learning rate, set train.grad_clip, "
                                "or turn off train.amp.") from None
        finally:
            if metrics is not None:
                metrics.close()
        for cb in self.callbacks:
            cb.on_fit_end(self)
        D.barrier(self.dist)
        return self.method

    def _run_epoch(self, epoch: int, metrics: MetricsLog | None) -> None:
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        self.method.train()
        self.method.on_epoch_start(epoch)
        self.stepper.epoch = epoch
        total = len(self.sampler)
        if cfg.train.max_steps_per_epoch:
            total = min(total, cfg.train.max_steps_per_epoch)
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True)
        sums: dict[str, float] = {}
        images = 0
        t0 = time.perf_counter()
        for i, batch in enumerate(self.loader):
            if i >= total:
                break
            batch = batch.to(self.device, non_blocking=True)
            if cfg.train.channels_last:
                batch = dataclasses.replace(batch, images=batch.images.contiguous(memory_format=torch.channels_last))
            with autocast(self.device, self.amp_dtype):
                scalars = self.iteration(batch)
            self.stepper.global_step += 1
            images += len(batch) * self.dist.world_size
            for k, v in scalars.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if bar is not None:
                bar.update(1)
                rate = images / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in list(scalars.items())[:4]}, "img/s": f"{rate:.0f}"})
            if metrics is not None and cfg.train.log_every and self.stepper.global_step % cfg.train.log_every == 0:
                metrics.log({"kind": "train", "epoch": epoch, "step": self.stepper.global_step,
                         **{k: float(v) for k, v in scalars.items()}}, self.stepper.global_step)
        if bar is not None:
            bar.close()
        steps = max(min(total, i + 1) if total else 0, 1)
        seconds = time.perf_counter() - t0
        lrs = {f"lr_{k}": o.param_groups[-1]["lr"] for k, (o, _) in self.optimizers.items()}
        self.last_epoch_summary = {"kind": "epoch", "epoch": epoch, "step": self.stepper.global_step,
                                   **{k: v / steps for k, v in sums.items()}, **lrs,
                                   "images_per_s": images / max(seconds, 1e-9), "seconds": seconds}
        if metrics is not None:
            metrics.log(self.last_epoch_summary, self.stepper.global_step)
            extra = self.method.epoch_summary()
            if extra:
                metrics.log({"kind": "method", "epoch": epoch, "step": self.stepper.global_step, **extra},
                            self.stepper.global_step)
            if self.progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in self.last_epoch_summary.items()
                                  if k not in ("kind", "epoch", "step", "seconds"))
                log.info("epoch %d/%d: %s (%.1fs)", epoch + 1, self.cfg.train.epochs, shown, seconds)

    def _end_of_epoch(self, epoch: int, best: float | None, metrics: MetricsLog | None) -> float | None:
        cfg = self.cfg
        score = None
        if cfg.train.select_best == "val" and cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0:
            score = self._validate(epoch, metrics)
        if not self.dist.is_main:
            return best if score is None else max(best or -1.0, score)
        improved = score is not None and (best is None or score > best)
        new_best = score if improved else best
        state = self._state(epoch, new_best)
        save_checkpoint(self.run.checkpoint("last"), state)
        if cfg.train.checkpoint_every and (epoch + 1) % cfg.train.checkpoint_every == 0:
            save_checkpoint(self.run.checkpoint(epoch + 1), state)
        if improved:
            save_checkpoint(self.run.checkpoint("best"), state)
        return new_best

    def _validate(self, epoch: int, metrics: MetricsLog | None) -> float:
        """Rank-1 of the bn feature on the held-out validation identities (infrared query, visible gallery)."""
        from .evaluate import run_trials, validation_trial

        if not self.dataset.val:
            raise ConfigError("train.select_best=val needs validation identities: set data.train_split=train (the "
                              "sysu reader's option), or use a dataset with a validation split")
        results = run_trials(self.method, self.cfg, [validation_trial(self.dataset.val)], self.device, self.dist,
                             features=("bn",), progress=False)
        r1 = float(results["bn"]["rank1"])
        self.last_validation_epoch = epoch
        if metrics is not None:
            metrics.log({"kind": "val", "epoch": epoch, "step": self.stepper.global_step, "rank1": r1},
                        self.stepper.global_step)
        return r1
