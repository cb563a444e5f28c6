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


@dataclass
class TrainingLoss:
    """One batch's objective as `Method.training_loss` returns it: what to back-propagate and what to log.

    `loss` goes into `optimizer` in one backward; `parts` (its terms) name a non-finite loss; `logs` are the
    scalars `training_step` returns, read (`.item()`) only after the step. Tensors in `logs` must not change in
    the step (losses, accuracies of this batch: never a parameter).
    """

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    logs: dict[str, torch.Tensor | float]
    optimizer: str = "main"

    def scalars(self) -> dict[str, float]:
        """`logs` as plain floats."""
        return {k: float(v.item()) if isinstance(v, torch.Tensor) else float(v) for k, v in self.logs.items()}


@dataclass(frozen=True)
class DataParallel:
    """How a multi-process (torchrun) run keeps a method's replicas identical; `Method.data_parallel` declares it.

    `ddp=True`: the method's iteration is one `training_loss` (one objective, one optimizer, one backward), so the
    engine runs `training_loss` inside the forward of a `DistributedDataParallel` wrapper and its bucketed
    all-reduce overlaps the backward. `ddp=False`: the method steps several optimizers in its own order (GAN
    alternation, gradients of several losses added up), so the Stepper averages each optimizer's gradients in one
    flat all-reduce before stepping it. `find_unused_parameters`: some trained parameter may get no gradient in an
    iteration (DDP then searches the graph every step, which costs time); `static_graph`: the set of parameters
    used is the same every iteration (DDP may then skip work); both as `DistributedDataParallel` takes them.
    """

    ddp: bool = False
    find_unused_parameters: bool = False
    static_graph: bool = False


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

    Subclasses set `Options` (a MethodOptions dataclass) and implement `embed` and either `training_loss` (one
    objective for one optimizer; `data_parallel` may then declare DDP) or `training_step` (several optimizers in
    the method's own order). `optimizers` has a default for single-optimizer methods built from `cfg.optim`.
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
        """Compute the losses of one batch, call `step(loss, name)`, return scalars to log.

        Default: `training_loss`, then `apply_loss` (one step of its optimizer). A method that steps several
        optimizers in its own order overrides this instead of implementing `training_loss`.
        """
        return self.apply_loss(self.training_loss(batch, step), step)

    def training_loss(self, batch: Batch, step: Stepper) -> TrainingLoss:
        """One batch's objective for one optimizer, computed without stepping (`step` tells the epoch and step).

        Everything that makes gradients must happen here: under DDP (`data_parallel().ddp`) the engine calls this
        inside the wrapper's forward and `apply_loss` after it returns, never `training_step`.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither training_loss nor training_step")

    def apply_loss(self, out: TrainingLoss, step: Stepper) -> dict[str, float]:
        """Back-propagate `out.loss` and step `out.optimizer` (`step(loss, name, parts=...)`); the logged scalars."""
        step(out.loss, out.optimizer, parts=out.parts)
        return out.scalars()

    def data_parallel(self) -> DataParallel:
        """How torchrun runs keep replicas identical (see `DataParallel`); default: explicit gradient averaging,
        right for any `training_step`. A method whose iteration is one `training_loss` declares `ddp=True`."""
        return DataParallel()

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


__all__ = ["DataParallel", "InferenceSpec", "Method", "MethodOptions", "OptimizerEntry", "Stepper", "TrainingLoss",
           "modality_codes"]
