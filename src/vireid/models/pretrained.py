"""Load torchvision-format ResNet weights ("imagenet" V1 or a state-dict file) into a ResNetBackbone.

The file's keys (`conv1.weight`, `layer2.3.bn1.running_mean`, ...) are mapped onto the backbone's
structure: a modality-specific stage receives the same weights in each modality's copy, a conv1
wider than 3 channels receives the RGB filters plus their mean for every extra channel, and the
classifier (`fc.*`) is dropped. Everything else is checked strictly. Non-local blocks are not
part of a ResNet, so they keep their initialisation (identity at start).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
import torchvision

from ..core import CheckpointError, as_path
from ..utils.state_dicts import key_problems, shape_mismatch
from .backbone import widen_conv1_weight

if TYPE_CHECKING:
    from .backbone import ResNetBackbone

# Older releases of the same V1 weights under their original file names; accepted from the cache.
_LEGACY_V1_FILES = {"resnet50": "resnet50-19c8e357.pth", "resnet18": "resnet18-5c106cde.pth"}


@dataclass
class PretrainedReport:
    """What `load_pretrained` did: where the weights came from and which backbone keys kept their init."""

    source: str
    loaded: int  # backbone state-dict entries written
    kept_init: list[str] = field(default_factory=list)  # non-ResNet entries (non-local blocks)


def imagenet_weights(arch: str) -> torchvision.models.WeightsEnum:
    """torchvision's IMAGENET1K_V1 weights enum of `arch` (V1 as in every reference code, not V2)."""
    table = {"resnet50": torchvision.models.ResNet50_Weights, "resnet18": torchvision.models.ResNet18_Weights}
    if arch not in table:
        raise CheckpointError(f"no ImageNet weights known for arch {arch!r}; expected one of {sorted(table)}")
    return table[arch].IMAGENET1K_V1


def imagenet_cache_path(arch: str) -> Path:
    """Where torch hub keeps the V1 file of `arch`: <torch.hub.get_dir()>/checkpoints/<file name of the url>."""
    name = os.path.basename(urlparse(imagenet_weights(arch).url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def read_imagenet_state_dict(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """The V1 state dict of `arch` from the hub cache, else downloaded; CheckpointError when offline."""
    path = imagenet_cache_path(arch)
    for candidate in (path, path.parent / _LEGACY_V1_FILES[arch]):
        if candidate.is_file():
            return read_state_dict_file(candidate), str(candidate)
    url = imagenet_weights(arch).url
    try:
        # weights_only: tensors and plain values only, never code (torch.hub's default is False)
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except Exception as exc:  # offline, proxy, disk full: all end in the same instruction
        raise CheckpointError(
            f"cannot get the ImageNet weights of {arch}: downloading {url} failed "
            f"({type(exc).__name__}: {exc}). Download {path.name} on a machine with network access and "
            f"place it in {path.parent} (the torch hub cache; set TORCH_HOME to move it), or set "
            f"model.pretrained to the path of a torchvision {arch} state dict, or model.pretrained=none."
        ) from None
    return _as_state_dict(state, url), url


def _as_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors) of a torchvision "
                              f"ResNet, found a {kind}. Save one with torch.save(resnet.state_dict(), path).")
    return {str(k): v for k, v in obj.items()}


def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torchvision-format ResNet state dict from `path` (tensors only, loaded on the CPU)."""
    p = as_path(path)
    if not p.is_file():
        raise CheckpointError(f"pretrained weights file not found: {p}. Expected a torchvision-format ResNet "
                              "state dict (.pth); fix model.pretrained, or use 'imagenet' or 'none'.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{p}: cannot be read as a torch state dict ({type(exc).__name__}: {exc}); "
                              "the file may be truncated or not a .pth file.") from None
    return _as_state_dict(obj, str(p))


def torchvision_key(backbone: ResNetBackbone, key: str) -> str | None:
    """The torchvision ResNet key of backbone state-dict entry `key`, or None if it is not ResNet (non-local)."""
    stage, *rest = key.split(".")
    if backbone.is_modality_specific(stage):
        rest = rest[1:]  # drop the "visible"/"infrared" level
    if stage == "stem":
        return ".".join(rest)
    if rest[0] == "blocks":
        return ".".join([stage, *rest[1:]])
    if rest[0] == "non_local":
        return None
    raise ValueError(f"unexpected backbone state-dict key {key!r}")  # a structure change not handled here


def load_state_dict_into(backbone: ResNetBackbone, state: Mapping[str, torch.Tensor], source: str) -> PretrainedReport:
    """Copy a torchvision ResNet state dict into `backbone`, strictly (fc.* dropped, non-local kept)."""
    ours = backbone.state_dict()
    targets: dict[str, list[str]] = {}
    kept: list[str] = []
    for key in ours:
        tv = torchvision_key(backbone, key)
        if tv is None:
            kept.append(key)
        else:
            targets.setdefault(tv, []).append(key)
    given = {k: v for k, v in state.items() if not k.startswith("fc.")}
    # files saved before PyTorch 0.4.1 (the original V1 release) have no num_batches_tracked
    missing = sorted(k for k in targets if k not in given and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in given if k not in targets)
    mismatched = []
    for tv, value in given.items():
        if tv not in targets:
            continue
        want = tuple(ours[targets[tv][0]].shape)
        widenable = tv == "conv1.weight" and value.dim() == 4 and value.shape[1] == 3 and want[1] > 3 \
            and tuple(value.shape[:1] + value.shape[2:]) == want[:1] + want[2:]
        if tuple(value.shape) != want and not widenable:
            mismatched.append(shape_mismatch(tv, value.shape, want))
    if missing or unexpected or mismatched:
        parts = key_problems(missing, unexpected, mismatched)
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = " The keys start with 'module.' (a DataParallel/DDP save): strip that prefix first."
        raise CheckpointError(
            f"{source} does not fit a torchvision {backbone.arch} with in_channels={backbone.in_channels}: "
            + "; ".join(parts) + ". Expected a torchvision-format ResNet state dict (keys like 'conv1.weight', "
            "'layer1.0.conv1.weight'); a whole vireid checkpoint is resumed with the trainer, not model.pretrained."
            + hint
        )
    loaded = 0
    with torch.no_grad():
        for tv, value in given.items():
            if tv == "conv1.weight":
                value = widen_conv1_weight(value, backbone.in_channels)
            for key in targets[tv]:
                ours[key].copy_(value)  # state_dict() tensors share storage with the parameters
                loaded += 1
    return PretrainedReport(source=source, loaded=loaded, kept_init=kept)


def load_pretrained(backbone: ResNetBackbone, spec: str) -> PretrainedReport:
    """Load `spec` ("imagenet" = torchvision V1 weights, or a path to a torchvision ResNet state dict)."""
    if spec in ("", "none", None):
        return PretrainedReport(source="none", loaded=0, kept_init=list(backbone.state_dict()))
    if spec == "imagenet":
        state, source = read_imagenet_state_dict(backbone.arch)
    else:
        state, source = read_state_dict_file(spec), str(as_path(spec))
    return load_state_dict_into(backbone, state, source)
