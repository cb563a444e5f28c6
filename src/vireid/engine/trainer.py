"""The Trainer: epochs, AMP, DDP via torchrun, atomic checkpoints, exact resume, NaN guard, logs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from ..config import Config, config_to_dict
from ..core import CheckpointError, ConfigError, DatasetError, TrainingError
from ..data.datasets import ReIDDataset, load_dataset
from ..methods import Method, build_method
from ..utils.seed import seed_everything
from . import distributed as D
from .checkpoint import find_checkpoint, load_model_state, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .run_dir import MetricsLog, write_run_files
from .stepper import NonFiniteLossError, TrainStepper, autocast, resolve_amp


def dataset_options(cfg: Config) -> dict[str, Any]:
    """Reader options implied by the data config."""
    if cfg.data.name == "sysu":
        return {"train_split": cfg.data.train_split}
    if cfg.data.name == "regdb":
        return {"trial": cfg.data.trial}
    return {}


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
    return load_dataset(cfg.data.name, root, **dataset_options(cfg))


class Trainer:
    """Trains `cfg.method` on `cfg.data`, writing everything into `run_dir`."""

    def __init__(self, cfg: Config, run_dir: "str | Path", *, resume: str | None = None, progress: bool | None = None,
                 dataset: ReIDDataset | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.progress = cfg.train.progress if progress is None else progress
        self.dist = D.init_distributed(cfg.train.device)
        self.device = D.resolve_device(cfg.train.device, self.dist)
        self._dataset = dataset
        ck = self.run_dir / "checkpoints" / "last.pt"
        if resume is None and ck.exists():
            raise TrainingError(f"{self.run_dir} already holds a trained run ({ck}); pass --resume auto to continue it, "
                                "or choose another --out")

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        self.dataset = self._dataset or ensure_dataset(cfg, self.progress and self.dist.is_main)
        self.method: Method = build_method(cfg, self.dataset.num_classes).to(self.device)
        if self.dist.initialized:
            D.broadcast_module(self.method)
        self.optimizers = self.method.optimizers()
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        scaler = None
        if self.amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
        self.stepper = TrainStepper(self.optimizers, scaler=scaler, grad_clip=cfg.train.grad_clip,
                                    distributed=self.dist.initialized)
        from ..data.loading import build_train_loader

        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.run_dir.parent / ".cache"
        self.loader, self.sampler = build_train_loader(
            self.dataset, cfg, cache_dir=cache_dir, seed=cfg.train.seed, rank=self.dist.rank,
            world_size=self.dist.world_size, progress=self.progress and self.dist.is_main)

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

    def _restore(self, path: Path) -> tuple[int, float | None]:
        data = read_checkpoint(path)
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

    def _truncate_metrics(self, upto_epoch: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("epoch", -1) <= upto_epoch]
        path.write_text("".join(ln + "\n" for ln in keep))

    # ------------------------------------------------------------------ loop
    def fit(self) -> Method:
        """Train for `cfg.train.epochs` (or the remainder when resuming); returns the trained method."""
        self._build()
        cfg = self.cfg
        start_epoch, best = 0, None
        if self.resume:
            path = find_checkpoint(self.run_dir, "last" if self.resume == "auto" else self.resume)
            start_epoch, best = self._restore(path)
            if self.dist.is_main:
                self._truncate_metrics(start_epoch - 1)
        if self.dist.is_main:
            write_run_files(self.run_dir, cfg)
        log = MetricsLog(self.run_dir) if self.dist.is_main else None
        kill_after = os.environ.get("VIREID_TEST_KILL_AFTER_EPOCH")  # test hook: simulate a crash after a checkpoint
        try:
            for epoch in range(start_epoch, cfg.train.epochs):
                self._run_epoch(epoch, log)
                for _, sched in self.optimizers.values():
                    if sched is not None:
                        sched.step()
                if self.dist.initialized:
                    D.average_buffers(self.method)
                best = self._end_of_epoch(epoch, best, log)
                if kill_after is not None and int(kill_after) == epoch and self.dist.is_main:
                    os.kill(os.getpid(), signal.SIGKILL)
        except NonFiniteLossError as exc:
            last = self.run_dir / "checkpoints" / "last.pt"
            where = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainingError(f"{exc}; training stopped, {where}. Lower the learning rate, set train.grad_clip, "
                                "or turn off train.amp.") from None
        finally:
            if log is not None:
                log.close()
        dump = os.environ.get("VIREID_TEST_DUMP_RANK_STATE")  # test hook: each rank's final weights
        if dump:
            Path(dump).mkdir(parents=True, exist_ok=True)
            torch.save(self.method.state_dict(), Path(dump) / f"rank{self.dist.rank}.pt")
        D.barrier(self.dist)
        return self.method

    def _run_epoch(self, epoch: int, log: MetricsLog | None) -> None:
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
            with autocast(self.device, self.amp_dtype):
                scalars = self.method.training_step(batch, self.stepper)
            self.stepper.global_step += 1
            images += len(batch) * self.dist.world_size
            for k, v in scalars.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if bar is not None:
                bar.update(1)
                rate = images / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in list(scalars.items())[:4]}, "img/s": f"{rate:.0f}"})
            if log is not None and cfg.train.log_every and self.stepper.global_step % cfg.train.log_every == 0:
                log.log({"kind": "train", "epoch": epoch, "step": self.stepper.global_step,
                         **{k: float(v) for k, v in scalars.items()}}, self.stepper.global_step)
        if bar is not None:
            bar.close()
        steps = max(min(total, i + 1) if total else 0, 1)
        seconds = time.perf_counter() - t0
        lrs = {f"lr_{k}": o.param_groups[-1]["lr"] for k, (o, _) in self.optimizers.items()}
        self.last_epoch_summary = {"kind": "epoch", "epoch": epoch, "step": self.stepper.global_step,
                                   **{k: v / steps for k, v in sums.items()}, **lrs,
                                   "images_per_s": images / max(seconds, 1e-9), "seconds": seconds}
        if log is not None:
            log.log(self.last_epoch_summary, self.stepper.global_step)
            extra = self.method.epoch_summary() if hasattr(self.method, "epoch_summary") else {}
            if extra:
                log.log({"kind": "method", "epoch": epoch, "step": self.stepper.global_step, **extra},
                        self.stepper.global_step)
            if self.progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in self.last_epoch_summary.items()
                                  if k not in ("kind", "epoch", "step", "seconds"))
                print(f"epoch {epoch + 1}/{self.cfg.train.epochs}: {shown} ({seconds:.1f}s)", flush=True)

    def _end_of_epoch(self, epoch: int, best: float | None, log: MetricsLog | None) -> float | None:
        cfg = self.cfg
        score = None
        if cfg.train.select_best == "val" and cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0:
            score = self._validate(epoch, log)
        if not self.dist.is_main:
            return best if score is None else max(best or -1.0, score)
        ckdir = self.run_dir / "checkpoints"
        improved = score is not None and (best is None or score > best)
        new_best = score if improved else best
        state = self._state(epoch, new_best)
        save_checkpoint(ckdir / "last.pt", state)
        if cfg.train.checkpoint_every and (epoch + 1) % cfg.train.checkpoint_every == 0:
            save_checkpoint(ckdir / f"epoch_{epoch + 1:04d}.pt", state)
        if improved:
            save_checkpoint(ckdir / "best.pt", state)
        return new_best

    def _validate(self, epoch: int, log: MetricsLog | None) -> float:
        """Rank-1 of the bn feature on the held-out validation identities (infrared query, visible gallery)."""
        from .evaluate import validation_trial, run_trials

        if not self.dataset.val:
            raise ConfigError("train.select_best=val needs validation identities: set data.train_split=train (SYSU)")
        results = run_trials(self.method, self.cfg, [validation_trial(self.dataset.val)], self.device, self.dist,
                             features=("bn",), progress=False)
        r1 = float(results["bn"]["rank1"])
        if log is not None:
            log.log({"kind": "val", "epoch": epoch, "step": self.stepper.global_step, "rank1": r1},
                    self.stepper.global_step)
        return r1
