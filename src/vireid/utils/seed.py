"""Seeded randomness helpers: every random choice flows from a generator the caller controls."""

from __future__ import annotations

import random

import numpy as np


def numpy_rng(seed: int, *streams: int) -> np.random.Generator:
    """A numpy Generator for `seed`, optionally split into an independent sub-stream by `streams`."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, streams)]))


def python_rng(seed: int) -> random.Random:
    """A private stdlib Random (never the global one)."""
    return random.Random(seed)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch global RNGs (for third-party code that uses them)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
