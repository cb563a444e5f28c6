"""Run a loss in float32 even inside an autocast region."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def _up(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
        return value.float()
    return value


def float32_math(fn: F) -> F:
    """Decorator: disable autocast and cast floating tensor arguments to float32 (float64 kept)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*map(_up, args), **{k: _up(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
