"""The Method contract every VI-ReID method implements, and the Stepper the trainer hands in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from ..core import Batch, Modality

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
    `global_step` tell where training is.
    """

    epoch: int
    global_step: int

    def __call__(self, loss: torch.Tensor, name: str = "main", *, retain_graph: bool = False,
                 parts: "dict[str, torch.Tensor] | None" = None) -> None: ...


OptimizerEntry = tuple[torch.optim.Optimizer, Any]  # (optimizer, per-epoch LR scheduler or None)


class Method(nn.Module):
    """A VI-ReID method: builds its network, trains one batch at a time, embeds images.

    Subclasses set `Options` (a MethodOptions dataclass) and implement `training_step` and
    `embed`. `optimizers` has a default for single-optimizer methods built from `cfg.optim`.
    """

    Options: type = MethodOptions

    def __init__(self, cfg: "Config", num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = int(num_classes)

    # ---- training
    def optimizers(self) -> dict[str, OptimizerEntry]:
        """Named (optimizer, scheduler) pairs; default: one "main" from cfg.optim and its schedule."""
        from ..engine.optim import build_optimizer, build_scheduler

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

    def on_epoch_start(self, epoch: int) -> None:
        """Hook for per-epoch state (EMA factors, alternation counters)."""

    # ---- inference
    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: "Modality | torch.Tensor") -> dict[str, torch.Tensor]:
        """Eval-mode, L2-normalised features of `images`: at least "bn" and "pool"."""
        raise NotImplementedError

    def feature_dims(self) -> dict[str, int]:
        """The dimension of each feature kind `embed` returns."""
        raise NotImplementedError

    @property
    def input_channels(self) -> int:
        """Channels the network expects (3, or 4 for D2RL)."""
        return int(self.cfg.model.in_channels)


def modality_codes(modality: "Modality | torch.Tensor", n: int, device: torch.device) -> torch.Tensor:
    """A (n,) int8 tensor of modality codes from a Modality or a per-image tensor."""
    if isinstance(modality, Modality):
        return torch.full((n,), modality.code, dtype=torch.int8, device=device)
    if isinstance(modality, str):
        return torch.full((n,), Modality.parse(modality).code, dtype=torch.int8, device=device)
    codes = torch.as_tensor(modality, device=device).to(torch.int8).reshape(-1)
    if codes.numel() != n:
        raise ValueError(f"got {codes.numel()} modality codes for {n} images")
    return codes
