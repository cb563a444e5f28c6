"""ResNet-50/18 backbone with per-modality stages, configurable last stride, non-local blocks.

Stage names: stem = conv1+bn1+relu+maxpool; layer1..layer4 = torchvision's layers (conv2_x..conv5_x).
A modality-specific stage holds one copy per modality (`stage["visible"]`, `stage["infrared"]`),
both starting from the same weights; a mixed batch is split by its modality codes, each part
goes through its own copy, and the outputs are put back in the batch's original order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torchvision
from torch import nn

from ..core import ConfigError, Modality
from ..utils.tensors import modality_codes
from .nonlocal_block import NonLocalBlock

if TYPE_CHECKING:
    from ..config import ModelConfig

STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
ARCHS: tuple[str, ...] = ("resnet50", "resnet18")
_CHANNELS = {
    "resnet50": {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
    "resnet18": {"stem": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
}
# AGW `no_local='on'`: non-local blocks after the last 2 blocks of layer2 and the last 3 of layer3.
NON_LOCAL_COUNTS: dict[str, int] = {"layer2": 2, "layer3": 3}
MODALITY_KEYS: tuple[str, ...] = (Modality.VISIBLE.value, Modality.INFRARED.value)


class Stem(nn.Module):
    """conv1 -> bn1 -> relu -> maxpool (the ResNet stem; attribute names match torchvision)."""

    def __init__(self, conv1: nn.Conv2d, bn1: nn.BatchNorm2d, relu: nn.Module, maxpool: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = conv1, bn1, relu, maxpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class ResStage(nn.Module):
    """The residual blocks of one layer; `non_local[str(i)]` runs right after block i."""

    def __init__(self, blocks: Iterable[nn.Module], non_local: dict[int, nn.Module] | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.non_local = nn.ModuleDict({str(i): m for i, m in (non_local or {}).items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            nl = self.non_local[str(i)] if str(i) in self.non_local else None
            if nl is not None:
                x = nl(x)
        return x


class ModalitySpecific(nn.ModuleDict):
    """One copy of a stage per modality, keyed "visible" / "infrared", same initial weights."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__({MODALITY_KEYS[0]: module, MODALITY_KEYS[1]: copy.deepcopy(module)})


def widen_conv1_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, 3, k, k) -> (O, in_channels, k, k): every extra input channel gets the mean RGB filter."""
    if weight.shape[1] == in_channels:
        return weight
    if weight.shape[1] != 3 or in_channels < 3:
        raise ValueError(
            f"can only widen a 3-channel conv1 to >= 3 channels, got {tuple(weight.shape)} -> {in_channels}"
        )
    extra = weight.mean(dim=1, keepdim=True).expand(-1, in_channels - 3, -1, -1)
    return torch.cat([weight, extra], dim=1)


class _Split:
    """Indices of each modality in a batch and the permutation that restores the batch order."""

    def __init__(self, codes: torch.Tensor) -> None:
        bad = (codes != Modality.VISIBLE.code) & (codes != Modality.INFRARED.code)
        if bool(bad.any()):
            raise ValueError(f"modality codes must be 0 (visible) or 1 (infrared), found {codes[bad][:5].tolist()}")
        self.visible = torch.nonzero(codes == Modality.VISIBLE.code).flatten()
        self.infrared = torch.nonzero(codes == Modality.INFRARED.code).flatten()
        order = torch.cat([self.visible, self.infrared])
        self.inverse = torch.empty_like(order)
        self.inverse[order] = torch.arange(order.numel(), device=order.device)

    def run(self, stage: ModalitySpecific, x: torch.Tensor) -> torch.Tensor:
        """Each part through its own copy; a modality absent from the batch is skipped."""
        if self.infrared.numel() == 0:
            return stage[MODALITY_KEYS[0]](x)
        if self.visible.numel() == 0:
            return stage[MODALITY_KEYS[1]](x)
        y = torch.cat([stage[MODALITY_KEYS[0]](x.index_select(0, self.visible)),
                       stage[MODALITY_KEYS[1]](x.index_select(0, self.infrared))])
        return y.index_select(0, self.inverse)


class ResNetBackbone(nn.Module):
    """x (B, in_channels, H, W) + modality codes (B,) -> layer4 map (B, out_channels, H/s, W/s).

    s = 16 with last_stride=1, 32 with last_stride=2. `modality_specific` names the stages that
    get one copy per modality (empty = one-stream). `in_channels` > 3 widens conv1; the extra
    input channels start as the mean of the RGB filters (also when loading pretrained weights).
    With `non_local`, AGW's non-local blocks (width `non_local_inter`) follow the last 2 blocks of
    layer2 and the last 3 of layer3; ResNet-18 has 2 blocks per layer, so it gets them after
    both blocks of layer2 and of layer3. `non_local_reduction` r > 0 makes each block channels // r
    wide instead (the current AGW model.py: in_channels // 2); 0 keeps `non_local_inter`.
    Weights start from torchvision's init (torch's global RNG, seeded by the caller); the
    constructor reads no file: `models.build.build_backbone` or `models.pretrained.load_pretrained`
    load ImageNet or file weights afterwards.
    """

    stages: tuple[str, ...] = STAGES

    def __init__(self, arch: str = "resnet50", last_stride: int = 1,
                 modality_specific: Sequence[str] = ("stem",), in_channels: int = 3,
                 non_local: bool = False, non_local_inter: int = 1, non_local_reduction: int = 0) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"config key 'model.arch' is {arch!r}, an unknown backbone: expected one of "
                             f"{', '.join(ARCHS)}; set e.g. model.arch={ARCHS[0]}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r} (config key model.last_stride)")
        unknown = [s for s in modality_specific if s not in STAGES]
        if unknown:
            raise ValueError(f"modality_specific has unknown stage(s) {unknown}: valid stages are {STAGES} "
                             "(config key model.modality_specific; [] = one-stream)")
        if non_local_reduction < 0:
            raise ValueError(f"non_local_reduction must be >= 0 (0: every block non_local_inter wide), got "
                             f"{non_local_reduction} (config key model.non_local_reduction)")
        if in_channels < 3:
            raise ValueError(f"in_channels must be >= 3 (3 = RGB, 4 = D2RL), got {in_channels}")
        self.arch = arch
        self.last_stride = int(last_stride)
        self.modality_specific = tuple(s for s in STAGES if s in modality_specific)
        self.in_channels = int(in_channels)
        self.non_local_inter = int(non_local_inter)
        self.has_non_local = bool(non_local)

        net = getattr(torchvision.models, arch)(weights=None)
        if last_stride == 1:
            first = net.layer4[0]
            strided = first.conv2 if arch == "resnet50" else first.conv1  # v1.5 Bottleneck / BasicBlock
            strided.stride = (1, 1)
            first.downsample[0].stride = (1, 1)
        conv1 = net.conv1
        if in_channels != 3:
            conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            with torch.no_grad():
                conv1.weight.copy_(widen_conv1_weight(net.conv1.weight, in_channels))

        modules: dict[str, nn.Module] = {"stem": Stem(conv1, net.bn1, net.relu, net.maxpool)}
        for name in STAGES[1:]:
            blocks = list(getattr(net, name))
            nl: dict[int, nn.Module] = {}
            if non_local and name in NON_LOCAL_COUNTS:
                count = min(NON_LOCAL_COUNTS[name], len(blocks))
                channels = _CHANNELS[arch][name]
                width = channels // non_local_reduction if non_local_reduction else non_local_inter
                nl = {i: NonLocalBlock(channels, width) for i in range(len(blocks) - count, len(blocks))}
            modules[name] = ResStage(blocks, nl)
        for name in STAGES:
            module = modules[name]
            setattr(self, name, ModalitySpecific(module) if name in self.modality_specific else module)

    @classmethod
    def from_config(cls, cfg: ModelConfig, **overrides) -> ResNetBackbone:
        """Build from the `model:` config section (weights are not loaded); keyword overrides win."""
        kwargs: dict[str, Any] = dict(arch=cfg.arch, last_stride=cfg.last_stride,
                                      modality_specific=tuple(cfg.modality_specific), in_channels=cfg.in_channels,
                                      non_local=cfg.non_local, non_local_inter=cfg.non_local_inter,
                                      non_local_reduction=cfg.non_local_reduction)
        kwargs.update(overrides)
        try:
            return cls(**kwargs)
        except ValueError as exc:  # a config mistake: say so the way every config error does
            raise ConfigError(str(exc)) from None

    # ---- structure
    @property
    def out_channels(self) -> int:
        """Channels of the layer4 map: 2048 (ResNet-50) or 512 (ResNet-18)."""
        return _CHANNELS[self.arch]["layer4"]

    def channels(self, stage: str) -> int:
        """Channels of the map after `stage`."""
        return _CHANNELS[self.arch][self._check_stage(stage)]

    def is_modality_specific(self, stage: str) -> bool:
        """Whether `stage` holds one copy per modality."""
        return self._check_stage(stage) in self.modality_specific

    def branch(self, stage: str, modality: Modality | str) -> nn.Module:
        """The module that processes `modality` images at `stage` (the shared one if not specific)."""
        module = getattr(self, self._check_stage(stage))
        if isinstance(module, ModalitySpecific):
            return module[Modality.parse(modality).value]
        return module

    def _check_stage(self, stage: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}: expected one of {STAGES}")
        return stage

    # ---- forward
    def run_stages(self, x: torch.Tensor, modalities: torch.Tensor | Modality, first: str, last: str) -> torch.Tensor:
        """Run the stages `first`..`last` (both included) on x."""
        i, j = STAGES.index(self._check_stage(first)), STAGES.index(self._check_stage(last))
        if j < i:
            raise ValueError(f"stage {last!r} comes before {first!r}; order is {STAGES}")
        split: _Split | None = None
        codes: torch.Tensor | None = None
        if not isinstance(modalities, (Modality, str)):
            codes = modality_codes(modalities, x.shape[0], x.device,
                                   what=f"a batch of {x.shape[0]} images; pass one Modality.code per image or "
                                        "a single Modality")
        for name in STAGES[i:j + 1]:
            module = getattr(self, name)
            if isinstance(module, ModalitySpecific):
                if codes is None:  # one modality for the whole batch: no split needed
                    assert isinstance(modalities, (Modality, str))  # codes is None only then
                    x = module[Modality.parse(modalities).value](x)
                    continue
                if split is None:
                    split = _Split(codes)
                x = split.run(module, x)
            else:
                x = module(x)
        return x

    def forward_until(self, x: torch.Tensor, modalities: torch.Tensor | Modality, stage: str) -> torch.Tensor:
        """Input -> map after `stage` (stem..stage included)."""
        return self.run_stages(x, modalities, STAGES[0], stage)

    def forward_from(self, x: torch.Tensor, modalities: torch.Tensor | Modality, after_stage: str,
                     until: str = "layer4") -> torch.Tensor:
        """Map after `after_stage` -> map after `until` (the stages strictly after `after_stage`)."""
        i = STAGES.index(self._check_stage(after_stage))
        if i + 1 >= len(STAGES):
            raise ValueError(f"nothing runs after {after_stage!r}: it is the last stage")
        return self.run_stages(x, modalities, STAGES[i + 1], until)

    def forward(self, x: torch.Tensor, modalities: torch.Tensor | Modality) -> torch.Tensor:
        """Input (B, C, H, W) -> layer4 map."""
        return self.run_stages(x, modalities, STAGES[0], STAGES[-1])
