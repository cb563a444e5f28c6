"""Construct, then load weights (timm's `build_model_with_cfg` order): constructors never read files."""

from __future__ import annotations

from typing import Any

from .backbone import ResNetBackbone
from .pretrained import load_pretrained


def build_backbone(*args: Any, pretrained: str = "none", **kwargs: Any) -> ResNetBackbone:
    """`ResNetBackbone(*args, **kwargs)`, then `pretrained` ("none" | "imagenet" | a state-dict path) loaded into it."""
    net = ResNetBackbone(*args, **kwargs)
    if pretrained and pretrained != "none":
        load_pretrained(net, pretrained)
    return net
