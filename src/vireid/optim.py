"""Optimisers and per-epoch learning-rate schedules built from `OptimConfig`."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import torch

from .config import OptimConfig
from .core import ConfigError


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at 0-based `epoch`.

    warmup_step: (e+1)/W for e < W, then gamma ** (number of milestones <= e)  (AGW/LbA schedule);
    step: gamma ** (number of milestones <= e); constant: 1.
    """
    decay = cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), epoch)
    if cfg.schedule == "warmup_step":
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / cfg.warmup_epochs
        return decay
    if cfg.schedule == "step":
        return decay
    if cfg.schedule == "constant":
        return 1.0
    raise ConfigError(f"optim.schedule must be warmup_step, step or constant, got {cfg.schedule!r}")


def build_optimizer(param_groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam over groups whose lr = cfg.lr * group['lr_mult']."""
    groups = []
    for g in param_groups:
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        mult = float(g.get("lr_mult", 1.0))
        groups.append({"params": params, "lr": cfg.lr * mult, "lr_mult": mult,
                       **({"weight_decay": g["weight_decay"]} if "weight_decay" in g else {})})
    if not groups:
        raise ConfigError("the method has no trainable parameters for its optimizer")
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name must be 'sgd' or 'adam', got {cfg.name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch LambdaLR applying `lr_factor`; the trainer steps it once at the end of each epoch."""
    lr_factor(0, cfg)  # validates the schedule name early
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg))
