"""The Stepper (backward, AMP scaling, clipping, optimizer steps, gradient averaging across ranks) and the training
iteration that runs a method through PyTorch's DistributedDataParallel when the method allows it.

Two ways keep the replicas of a torchrun run identical, chosen by `Method.data_parallel()`:

- DDP (`ddp=True`: baseline, MPANet, LbA): the iteration is one `training_loss`, one backward, one optimizer.
  `TrainIteration` calls `training_loss` inside the forward of a `DistributedDataParallel` wrapper
  (`LossForward`), so DDP's bucketed all-reduce runs while the backward goes on; the Stepper then only clips and
  steps.
- Explicit averaging (`ddp=False`: cmGAN, D2RL, JSIA-ReID, and any method that only writes `training_step`):
  the method steps several optimizers in its own order; the Stepper all-reduces each stepped optimizer's
  gradients in one flat buffer before its step (`average_gradients`), after the backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
from torch import nn

from ..core import Batch, NonFiniteLossError, TrainingError
from ..methods.base import Method, OptimizerEntry, Stepper, TrainingLoss

__all__ = ["LossForward", "NonFiniteLossError", "TrainIteration", "TrainStepper", "autocast", "resolve_amp",
           "wrap_ddp"]


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device` (None: full precision)."""
    if amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if device.type == "cpu" else (
            torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type == "cpu":
            raise TrainingError("train.amp=fp16 needs a CUDA device; use amp=bf16 on the CPU")
        return torch.float16
    raise TrainingError(f"train.amp must be off, bf16, fp16 or auto, got {amp!r}")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for `dtype`, or a no-op when None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class TrainStepper:
    """Implements the Stepper protocol the trainer hands to `Method.training_step`.

    `step(loss, name)`: checks the loss is finite, zeroes that optimizer's gradients, back-propagates
    (scaled under fp16), averages gradients across ranks when `distributed`, clips, steps. `distributed` means
    "average by hand": it is False under DDP, whose backward has averaged the gradients already.
    For methods whose iteration accumulates several losses into several optimizers before stepping them
    (JSIA-ReID), the three parts are available on their own: `zero_grad(*names)`, `backward(loss)` and
    `step_optimizers(*names)`; `step(loss, name)` is exactly `zero_grad(name); backward(loss);
    step_optimizers(name)`.
    """

    def __init__(self, optimizers: Mapping[str, OptimizerEntry], *, scaler: torch.amp.GradScaler | None = None,
                 grad_clip: float = 0.0, distributed: bool = False) -> None:
        self.optimizers = dict(optimizers)
        self.scaler = scaler
        self.grad_clip = float(grad_clip)
        self.distributed = distributed
        self.epoch = 0
        self.global_step = 0
        self.step_counts: dict[str, int] = {name: 0 for name in self.optimizers}

    def _optimizer(self, name: str) -> torch.optim.Optimizer:
        if name not in self.optimizers:
            raise TrainingError(
                f"the method stepped an optimizer named {name!r}; it declared {sorted(self.optimizers)}"
            )
        return self.optimizers[name][0]

    def __call__(self, loss: torch.Tensor, name: str = "main", *, retain_graph: bool = False,
                 parts: Mapping[str, torch.Tensor] | None = None) -> None:
        self._optimizer(name)
        self.zero_grad(name)
        self.backward(loss, retain_graph=retain_graph, parts=parts, what=f"the '{name}' objective")
        self.step_optimizers(name)

    def zero_grad(self, *names: str) -> None:
        """Clear the gradients of the named optimizers' parameters (all optimizers when none is named)."""
        for name in names or tuple(self.optimizers):
            self._optimizer(name).zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, *, retain_graph: bool = False,
                 parts: Mapping[str, torch.Tensor] | None = None, what: str = "the objective") -> None:
        """Back-propagate `loss` (scaled under fp16) into whatever it reaches, after the NaN guard; gradients add up."""
        if not torch.isfinite(loss.detach()).all():
            bad = [k for k, v in (parts or {}).items() if not torch.isfinite(torch.as_tensor(v).detach()).all()]
            which = f"loss part(s) {', '.join(bad)}" if bad else what
            raise NonFiniteLossError(
                f"{which} became {float(loss.detach())} at epoch {self.epoch}, step {self.global_step}"
            )
        if self.scaler is not None:
            self.scaler.scale(loss).backward(retain_graph=retain_graph)
        else:
            loss.backward(retain_graph=retain_graph)

    def step_optimizers(self, *names: str) -> None:
        """Average gradients across ranks, clip and step each named optimizer (then update the fp16 scale once)."""
        for name in names:
            opt = self._optimizer(name)
            params = [p for g in opt.param_groups for p in g["params"]]
            if self.distributed:
                average_gradients(params)
            if self.grad_clip > 0:
                if self.scaler is not None:
                    self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
            self.step_counts[name] += 1
        if self.scaler is not None and names:
            self.scaler.update()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of `params` over the process group, coalesced into one buffer."""
    import torch.distributed as dist

    world = dist.get_world_size()
    # every rank must take part with the same tensors: materialise missing grads as zeros
    grads: list[torch.Tensor] = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


class LossForward(nn.Module):
    """What `DistributedDataParallel` wraps: a forward that is `method.training_loss(batch, step)`.

    DDP arms its gradient hooks for the backward of whatever its forward computed, so the whole objective is
    computed inside this forward. Holds no state of its own; checkpoints save `method`, never this module, so
    their keys carry no `module.` prefix.
    """

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Batch, step: Stepper) -> TrainingLoss:
        """`method.training_loss(batch, step)`."""
        return self.method.training_loss(batch, step)


def check_ddp_method(method: Method) -> None:
    """TrainingError unless a method declaring `data_parallel().ddp` has the one-objective shape DDP needs."""
    name = type(method).__name__
    if type(method).training_loss is Method.training_loss:
        raise TrainingError(f"{name}.data_parallel() says ddp=True but {name} has no training_loss; implement "
                            "training_loss (one objective, one optimizer) or declare DataParallel(ddp=False)")
    if type(method).training_step is not Method.training_step:
        # under DDP the engine calls training_loss and apply_loss, so an overridden training_step would be skipped
        raise TrainingError(f"{name}.data_parallel() says ddp=True but {name} overrides training_step, which DDP "
                            "runs would skip; move its work into training_loss or declare DataParallel(ddp=False)")


def wrap_ddp(method: Method, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """`method` in a `DistributedDataParallel` (around `LossForward`) set as its `data_parallel()` declares.

    Buffers are synced once, at construction (the trainer has broadcast rank 0's already), not at each forward
    (`forward_sync_buffers=False`): every rank keeps its own BN statistics and the trainer averages them once per
    epoch, as on the explicit path (with `train.sync_bn` they agree anyway), and no step pays for a broadcast.
    """
    check_ddp_method(method)
    spec = method.data_parallel()
    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return nn.parallel.DistributedDataParallel(
        LossForward(method), device_ids=device_ids, forward_sync_buffers=False,
        find_unused_parameters=spec.find_unused_parameters, static_graph=spec.static_graph)


class TrainIteration:
    """One training iteration of `method` on a batch: `training_step`, or, under DDP, `training_loss` through the
    DDP wrapper then `apply_loss`. Returns the scalars to log; `path` says which ("single", "average" or "ddp")."""

    def __init__(self, method: Method, stepper: TrainStepper,
                 ddp: nn.parallel.DistributedDataParallel | None = None) -> None:
        self.method = method
        self.stepper = stepper
        self.ddp = ddp

    @property
    def path(self) -> str:
        """"ddp" (DistributedDataParallel), "average" (the Stepper averages by hand) or "single" (one process)."""
        if self.ddp is not None:
            return "ddp"
        return "average" if self.stepper.distributed else "single"

    def __call__(self, batch: Batch) -> dict[str, float]:
        """Train on `batch` once; the method's logged scalars."""
        if self.ddp is None:
            return self.method.training_step(batch, self.stepper)
        return self.method.apply_loss(self.ddp(batch, self.stepper), self.stepper)
