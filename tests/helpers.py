"""Shared test helpers: tiny configs and hand-built batches (no disk, no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from vireid.config import Config, load_config
from vireid.core import Batch, Modality

REPO = Path(__file__).resolve().parents[1]

TINY_OVERRIDES = ["model.arch=resnet18", "model.pretrained=none", "data.height=32", "data.width=16",
                  "train.device=cpu", "train.progress=false", "data.num_workers=0",
                  "sampler.num_ids=4", "sampler.num_pos=2"]


def builtin_methods() -> list[str]:
    """The methods vireid ships (defined in the `vireid` package), whatever else a test module registered first:
    registry-wide parametrisations use this, so their test ids do not depend on which files ran before."""
    from vireid.methods import available_methods
    from vireid.registry import METHODS

    return [name for name in available_methods() if METHODS.get(name).__module__.startswith("vireid.")]


def tiny_config(method: str, *overrides: str) -> Config:
    """The method's synthetic preset shrunk to a tiny ResNet-18 on 32x16 images; a method without a preset
    (a user's) gets the config defaults and its own Options() defaults, shrunk the same way."""
    from vireid.registry import METHODS

    path = REPO / "configs" / "synthetic" / f"{method}.yaml"
    head = [] if path.is_file() else [f"method.name={method}"]
    cfg = load_config(path if path.is_file() else None, [*head, *TINY_OVERRIDES, *overrides])
    low = METHODS.get(method).min_input_size(cfg)  # a method whose networks need larger images gets them
    if cfg.data.height < low[0] or cfg.data.width < low[1]:
        size = [f"data.height={max(low[0], cfg.data.height)}", f"data.width={max(low[1], cfg.data.width)}"]
        cfg = load_config(path if path.is_file() else None, [*head, *TINY_OVERRIDES, *size, *overrides])
    return cfg


def tiny_batch(cfg: Config, num_classes: int = 6, seed: int = 0) -> Batch:
    """One batch laid out the way the config's sampler lays batches out, with random pixels."""
    from vireid.data.sampler import CrossModalSampler

    g = torch.Generator().manual_seed(seed)
    per_mod = max(cfg.sampler.num_pos * 2, 4)
    labels, mods = [], []
    for pid in range(num_classes):
        for m in (Modality.VISIBLE, Modality.INFRARED):
            labels += [pid] * per_mod
            mods += [m] * per_mod
    sampler = CrossModalSampler(labels, mods, num_ids=cfg.sampler.num_ids, num_pos=cfg.sampler.num_pos,
                                kind=cfg.sampler.kind, seed=seed)
    sampler.set_epoch(0)
    first = next(iter(sampler))
    idx = [int(i[0]) if isinstance(i, (tuple, list)) else int(i) for i in first]
    n = len(idx)
    return Batch(  # the loader yields RGB images whatever the network takes (D2RL builds its 4 channels itself)
        images=torch.randn(n, 3, cfg.data.height, cfg.data.width, generator=g),
        labels=torch.tensor([labels[i] for i in idx], dtype=torch.long),
        modalities=torch.tensor([mods[i].code for i in idx], dtype=torch.int8),
        camids=torch.tensor([1 if mods[i] is Modality.VISIBLE else 3 for i in idx], dtype=torch.long),
        indices=torch.tensor(idx, dtype=torch.long),
    )
