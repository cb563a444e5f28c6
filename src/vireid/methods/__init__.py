"""VI-ReID methods, registered by name: baseline (AGW/CAJ), mpanet, lba, cmgan, ..."""

from __future__ import annotations

import importlib

from ..registry import METHODS, register_method
from .base import Method, MethodOptions, Stepper

_BUILTIN = ("baseline", "mpanet", "lba", "cmgan")

for _name in _BUILTIN:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:  # a method module not written yet
        if exc.name != f"{__name__}.{_name}":
            raise


def available_methods() -> list[str]:
    """Names of every registered method."""
    return METHODS.names()


def build_method(cfg, num_classes: int) -> Method:
    """Instantiate the method named by `cfg.method.name`."""
    return METHODS.get(cfg.method.name)(cfg, num_classes)


__all__ = ["Method", "MethodOptions", "Stepper", "available_methods", "build_method", "register_method"]
