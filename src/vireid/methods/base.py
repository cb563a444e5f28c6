"""The Method contract every VI-ReID method implements, and the Stepper the trainer hands in.

A method declares everything the engine and the inference path ask of it: its options (`Options`),
its optimizers, the hooks the trainer calls (each with a no-op default here), and what it needs at
test time (`inference_spec`: input channels and normalisation, modality-specific parts, its reported
feature). Callers never probe with `hasattr` and never assume 3-channel ImageNet input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from ..core import Batch, Modality
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..models.backbone import ModalitySpecific, ResNetBackbone
from ..models.pretrained import PretrainedReport, load_pretrained
from ..optim import build_optimizer, build_scheduler
from ..utils.tensors import modality_codes

if TYPE_CHECKING:
    from ..config import Config


@dataclass
class MethodOptions:
    """Options every method has; a method subclasses this with its own fields."""

    name: str = "baseline"


class Stepper(Protocol):
    """Owns backward, AMP scaling, gradient clipping, optimizer steps and DDP details.

    `step(loss, "main", parts={...})` back-propagates `loss` and steps the optimizer registered as
    "main"; a method calls it once per optimizer in its own order (adversarial methods alternate).
    `parts` (the loss terms) lets a non-finite loss be reported by name. `epoch` (0-based) and
    `global_step` tell where training is. A method whose iteration adds several losses' gradients
    before stepping several optimizers (JSIA-ReID) uses the parts on their own: `zero_grad(*names)`,
    `backward(loss)` (NaN guard, AMP scaling; gradients accumulate) and `step_optimizers(*names)`.
    """

    epoch: int
    global_step: int

    def __call__(self, loss: torch.Tensor, name: str = "main", *, retain_graph: bool = False,
                 parts: dict[str, torch.Tensor] | None = None) -> None: ...

    def zero_grad(self, *names: str) -> None: ...

    def backward(self, loss: torch.Tensor, *, retain_graph: bool = False,
                 parts: dict[str, torch.Tensor] | None = None, what: str = "the objective") -> None: ...

    def step_optimizers(self, *names: str) -> None: ...


OptimizerEntry = tuple[torch.optim.Optimizer, Any]  # (optimizer, per-epoch LR scheduler or None)


@dataclass(frozen=True)
class InferenceSpec:
    """What a method needs at test time; `vireid.inference` prepares images by it and nothing else.

    `channels`, `mean`, `std`: the image tensor `embed` takes, (x / 255 - mean) / std per channel of
    the RGB image (a method whose network wants other input, e.g. an image translated first, does that
    inside `embed`). `modality_specific`: `embed` depends on the modality (two stems): an exported graph
    runs one branch per modality and picks each row's. `feature`: the reported test-time feature.
    """

    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    modality_specific: bool = False
    feature: str = "bn"


class Method(nn.Module):
    """A VI-ReID method: builds its network, trains one batch at a time, embeds images.

    Subclasses set `Options` (a MethodOptions dataclass) and implement `training_step` and
    `embed`. `optimizers` has a default for single-optimizer methods built from `cfg.optim`.
    """

    Options: type = MethodOptions

    def __init__(self, cfg: Config, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = int(num_classes)

    # ---- weights
    def load_pretrained(self) -> list[PretrainedReport]:
        """Load `cfg.model.pretrained` (none | imagenet | a state-dict path) into every ResNet backbone.

        Called once by `build_method(..., pretrained=True)` after construction, never by a constructor:
        a model rebuilt to receive a checkpoint reads no other weights file.
        """
        spec = self.cfg.model.pretrained
        if not spec or spec == "none":
            return []
        return [load_pretrained(m, spec) for m in self.modules() if isinstance(m, ResNetBackbone)]

    # ---- training
    def optimizers(self) -> dict[str, OptimizerEntry]:
        """Named (optimizer, scheduler) pairs; default: one "main" from cfg.optim and its schedule."""
        opt = build_optimizer(self.param_groups(), self.cfg.optim)
        return {"main": (opt, build_scheduler(opt, self.cfg.optim))}

    def param_groups(self) -> list[dict]:
        """Parameter groups for the default optimizer; head parameters get the full lr."""
        head = set(id(p) for p in self.head_parameters())
        backbone = [p for p in self.parameters() if p.requires_grad and id(p) not in head]
        heads = [p for p in self.parameters() if p.requires_grad and id(p) in head]
        mult = self.cfg.optim.backbone_lr_mult
        return [{"params": backbone, "lr_mult": mult}, {"params": heads, "lr_mult": 1.0}]

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the head learning rate (BN-neck, classifiers); default none."""
        return []

    def training_step(self, batch: Batch, step: Stepper) -> dict[str, float]:
        """Compute the losses of one batch, call `step(loss, name)`, return scalars to log."""
        raise NotImplementedError

    # ---- hooks the trainer calls (no-op defaults)
    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of 0-based `epoch` (set EMA factors, reset per-epoch counters)."""

    def epoch_summary(self) -> dict[str, float]:
        """Called after the last step of an epoch; the scalars returned are logged as a "method" record."""
        return {}

    def image_translations(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        """Images a generative method makes from `images` (e.g. {"to_infrared": ...}), for reports; none by default."""
        return {}

    # ---- inference
    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        """Eval-mode, L2-normalised features of `images`: at least "bn" and "pool"."""
        raise NotImplementedError

    def feature_dims(self) -> dict[str, int]:
        """The dimension of each feature kind `embed` returns."""
        raise NotImplementedError

    @classmethod
    def min_input_size(cls, cfg: Config) -> tuple[int, int]:
        """The smallest (height, width) of input images this method's networks accept under `cfg` (the contract
        tests use it to shrink the config); no constraint by default."""
        return (1, 1)

    def inference_spec(self) -> InferenceSpec:
        """What `embed` needs: by default RGB with ImageNet normalisation, the "bn" feature, and
        modality-specific when some module keeps one copy per modality."""
        return InferenceSpec(modality_specific=any(isinstance(m, ModalitySpecific) for m in self.modules()))


__all__ = ["InferenceSpec", "Method", "MethodOptions", "OptimizerEntry", "Stepper", "modality_codes"]
