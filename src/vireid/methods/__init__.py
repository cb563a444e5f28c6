"""VI-ReID methods, registered by name in `registry.METHODS`: baseline (AGW/CAJ), mpanet, lba, cmgan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import METHODS, register_method
from .base import InferenceSpec, Method, MethodOptions, Stepper

if TYPE_CHECKING:
    from ..config import Config


def available_methods() -> list[str]:
    """Names of every registered method."""
    return METHODS.names()


def build_method(cfg: Config, num_classes: int, *, pretrained: bool = True) -> Method:
    """Construct the method named by `cfg.method.name`, then (with `pretrained`) load `cfg.model.pretrained`.

    Construction reads no file; pass pretrained=False when a checkpoint's weights follow anyway.
    """
    method = METHODS.get(cfg.method.name)(cfg, num_classes)
    if pretrained:
        method.load_pretrained()
    return method


__all__ = ["InferenceSpec", "Method", "MethodOptions", "Stepper", "available_methods", "build_method",
           "register_method"]
