"""Checkpoints: atomic save, strict load with precise mismatch messages, RNG state for exact resume."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import CheckpointError
from ..utils.atomic import atomic_path

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (plus the format version) to `path` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file on the CPU; damaged or foreign files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for damaged files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}. The file is damaged or not a vireid checkpoint."
        ) from None
    if not isinstance(data, dict) or "model" not in data or "method" not in data:
        raise CheckpointError(f"{path} is not a vireid checkpoint (expected keys 'model' and 'method')")
    return data


def _summarise(keys: list[str], n: int = 8) -> str:
    head = ", ".join(keys[:n])
    return head + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str,
                     method: str | None = None, expected_method: str | None = None) -> None:
    """Load `state` into `model` strictly: other method, missing, unexpected or mis-shaped keys are refused."""
    if method is not None and expected_method is not None and method != expected_method:
        raise CheckpointError(f"{source} was trained with method {method!r}, but the model is {expected_method!r}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if mismatched:
        problems.append("shape mismatch: " + _summarise(
            [f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})" for k in mismatched], 4))
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems)
                              + ". Was it trained with another config or number of classes?")
    model.load_state_dict(state, strict=True)


def rng_state() -> dict[str, Any]:
    """Global RNG states (python, numpy, torch) for exact resume."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
