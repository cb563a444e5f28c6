"""cmGAN (Dai et al., IJCAI 2018): shared ResNet + ID head vs a modality discriminator, docs/methods/cmgan.md.

The generator (backbone + two-layer ID head) minimises l_gen - gamma * l_dis with
l_gen = alpha * cross-modality triplet + beta * ID cross-entropy; the modality discriminator
minimises gamma * l_dis. Steps alternate with period K: step e is a discriminator step when
e mod K == 0 (Algorithm 1), where e counts iterations or epochs (`alternate_over`).

Modes:
  split   (default): two optimizers. G-steps update backbone + ID head on l_gen - gamma * l_dis with
          the discriminator frozen; D-steps update only the discriminator on eta * gamma * l_dis,
          computed on detached features. This is the minimax of Eq. 7-8.
  literal: Algorithm 1 read literally: one optimizer "main" over every parameter, G-step total
          l_gen - gamma * l_dis, D-step total eta * (gamma * l_dis - l_gen). The D-steps then push the
          backbone to *increase* l_gen and the G-steps push the discriminator to increase its own CE;
          kept to reproduce the unofficial code, not recommended.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Batch, ConfigError, Modality, TrainingError
from ..losses import cross_entropy, cross_modality_triplet
from ..losses.cmgan import (
    generator_loss,
    generator_objective,
    literal_discriminator_objective,
    modality_accuracy,
    modality_cross_entropy,
    split_discriminator_objective,
)
from ..models import ResNetBackbone, build_pooling
from ..models.discriminator import ACTIVATIONS as ID_ACTIVATIONS
from ..models.discriminator import IdHead, ModalityDiscriminator
from ..optim import build_optimizer, build_scheduler
from ..registry import register_method
from ..utils.seed import numpy_rng
from .base import DataParallel, Method, MethodOptions, OptimizerEntry, Stepper, modality_codes

MODES = ("split", "literal")
ALTERNATE_OVER = ("iterations", "epochs")
MININGS = ("hard", "random")
BN_FEATURES = ("pool", "hidden")


@dataclass
class CmGANOptions(MethodOptions):
    """cmGAN's options; paper values unless marked (docs/reference/methods.md#cmgan-6-3, #cmgan-6-4)."""

    name: str = "cmgan"
    mode: str = "split"  # split | literal (see the module docstring)
    alternate_every: int = 5  # K: step e is a discriminator step when e % K == 0
    alternate_over: str = "iterations"  # iterations (step.global_step) | epochs (step.epoch) [unspec]
    margin: float = 1.4  # xi of the squared-Euclidean cross-modality triplet
    mining: str = "hard"  # hard: batch-hard within the batch [vireid default] | random: the paper's random triplets
    alpha: float = 1.0  # triplet weight
    beta: float = 1.0  # ID weight (alpha : beta = 1 : 1)
    gamma: float = 0.05  # weight of the discriminator CE in the minimax
    eta: float = 1.0  # scale of the D-step objective [unspec; 1 in the unofficial code]
    disc_lr: float = 1.0e-3  # discriminator lr (the generator's is optim.lr = 1e-4)
    id_hidden: int = 512  # ID head: GAP -> id_hidden -> ReLU -> N [unofficial]
    id_activation: str = "relu"  # relu [unofficial] | leaky_relu (cannot die; see docs/methods/cmgan.md)
    disc_hidden: list = field(default_factory=lambda: [1000, 500])  # discriminator hidden widths [unofficial]
    bn_feature: str = "pool"  # what embed() calls "bn" (cmGAN has no BN-neck): pool | hidden


def is_discriminator_step(counter: int, every: int) -> bool:
    """True when `counter` mod K == 0: with K = 5, e = 0, 5, 10, ... are D-steps.

    See docs/reference/methods.md#cmgan-6-8-2.
    """
    if every < 1:
        raise ConfigError(f"method.alternate_every (K) must be >= 1, got {every}")
    return int(counter) % int(every) == 0


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Turn off requires_grad of `module`'s parameters inside the block (gradients still flow to its inputs)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _validate(opts: CmGANOptions) -> None:
    choices = {"mode": (opts.mode, MODES), "alternate_over": (opts.alternate_over, ALTERNATE_OVER),
               "mining": (opts.mining, MININGS), "bn_feature": (opts.bn_feature, BN_FEATURES),
               "id_activation": (opts.id_activation, ID_ACTIVATIONS)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"method.{key} must be one of {allowed}, got {value!r}")
    if opts.alternate_every < 1:
        raise ConfigError(f"method.alternate_every (K) must be >= 1, got {opts.alternate_every}")
    if opts.disc_lr <= 0:
        raise ConfigError(f"method.disc_lr must be > 0, got {opts.disc_lr}")
    if opts.margin < 0 or opts.gamma < 0 or opts.eta < 0:
        raise ConfigError(f"method.margin, gamma and eta must be >= 0, got {opts.margin}, {opts.gamma}, {opts.eta}")


@register_method("cmgan")
class CmGAN(Method):
    """Shared ResNet (GAP features) + 2-layer ID head, trained against a 3-layer modality discriminator."""

    Options = CmGANOptions

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        opts: CmGANOptions = cfg.method
        _validate(opts)
        self.backbone = ResNetBackbone.from_config(cfg.model)
        dim = self.backbone.out_channels
        self.pool = build_pooling(cfg.model.pooling, cfg.model.gem_p)
        self.id_head = IdHead(dim, num_classes, hidden_dim=opts.id_hidden, activation=opts.id_activation)
        self.discriminator = ModalityDiscriminator(dim, hidden=opts.disc_hidden, num_modalities=2)
        self.dim = dim
        self._acc_sum = 0.0
        self._acc_steps = 0
        self._disc_updates = 0

    # ---- parameters and optimizers
    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.id_head.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        """theta_gen: backbone + ID head (everything but the discriminator)."""
        disc = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in disc]

    def param_groups(self) -> list[dict]:
        """The generator's groups: backbone at lr x backbone_lr_mult, ID head at lr (no discriminator)."""
        head = {id(p) for p in self.head_parameters()}
        gen = [p for p in self.generator_parameters() if p.requires_grad]
        return [{"params": [p for p in gen if id(p) not in head], "lr_mult": self.cfg.optim.backbone_lr_mult},
                {"params": [p for p in gen if id(p) in head], "lr_mult": 1.0}]

    def data_parallel(self) -> DataParallel:
        """Explicit gradient averaging, not DDP: split mode alternates two optimizers (a D-step updates only the
        discriminator, on detached features; a G-step freezes it by requires_grad), so which parameters get
        gradients changes from step to step; each step averages the stepped optimizer's gradients."""
        return DataParallel(ddp=False)

    def optimizers(self) -> dict[str, OptimizerEntry]:
        """split: {"gen": lr = optim.lr, "disc": lr = method.disc_lr}; literal: {"main"} over all parameters."""
        opts: CmGANOptions = self.cfg.method
        disc_params = list(self.discriminator.parameters())
        if opts.mode == "literal":
            groups = self.param_groups() + [{"params": disc_params, "lr_mult": opts.disc_lr / self.cfg.optim.lr}]
            opt = build_optimizer(groups, self.cfg.optim)
            return {"main": (opt, build_scheduler(opt, self.cfg.optim))}
        gen = build_optimizer(self.param_groups(), self.cfg.optim)
        disc_cfg = dataclasses.replace(self.cfg.optim, lr=opts.disc_lr)
        disc = build_optimizer([{"params": disc_params, "lr_mult": 1.0}], disc_cfg)
        return {"gen": (gen, build_scheduler(gen, self.cfg.optim)), "disc": (disc, build_scheduler(disc, disc_cfg))}

    # ---- forward
    def forward(self, images: torch.Tensor,
                modalities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(GAP feature (B, dim), ID-head hidden layer (B, id_hidden), ID logits (B, N))."""
        feat = self.pool(self.backbone(images, modalities))
        hidden, logits = self.id_head(feat)
        return feat, hidden, logits

    # ---- training
    @staticmethod
    def _check_batch(batch: Batch) -> None:
        vis, ir = batch.visible_mask, batch.infrared_mask
        if not bool(vis.any()) or not bool(ir.any()):
            raise TrainingError(
                f"cmGAN needs both modalities in every batch (its triplet and discriminator compare them); got "
                f"{int(vis.sum())} visible and {int(ir.sum())} infrared images. Use sampler.kind=agw")
        shared = set(batch.labels[vis].tolist()) & set(batch.labels[ir].tolist())
        if not shared:
            raise TrainingError(
                "cmGAN's cross-modality triplet needs at least one identity with images in both modalities in the "
                "batch; this batch has none. Use sampler.kind=agw (P ids x K visible + K infrared)")

    def _triplet_generator(self, step: Stepper) -> torch.Generator | None:
        """For mining=random: a generator seeded by (train.seed, global step).

        So a resumed run draws the same triplets.
        """
        if self.cfg.method.mining != "random":
            return None
        seed = int(numpy_rng(self.cfg.train.seed, 7, int(step.global_step)).integers(2**62))
        return torch.Generator().manual_seed(seed)

    def _generator_terms(self, batch: Batch, step: Stepper) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """GAP features and the generator's losses: triplet, ide, gen = alpha * triplet + beta * ide."""
        opts: CmGANOptions = self.cfg.method
        feat, _, logits = self(batch.images, batch.modalities)
        # mean CE over the mixed batch = half the paper's sum of per-modality means when the halves are equal,
        # like the triplet (mean of the two directions) and l_dis: the ratios alpha : beta : gamma are the paper's.
        ide = cross_entropy(logits, batch.labels)
        tri = cross_modality_triplet(feat, batch.labels, batch.modalities, margin=opts.margin, squared=True,
                                     mining=opts.mining, generator=self._triplet_generator(step))
        with torch.no_grad():
            id_acc = (logits.argmax(1) == batch.labels).float().mean()
        return feat, {"triplet": tri, "ide": ide, "gen": generator_loss(tri, ide, opts.alpha, opts.beta),
                      "id_acc": id_acc}

    def training_step(self, batch: Batch, step: Stepper) -> dict[str, float]:
        """One G-step or D-step (docs/reference/methods.md#cmgan-6-3).

        Returns the same scalar keys on every step.
        """
        opts: CmGANOptions = self.cfg.method
        self._check_batch(batch)
        counter = step.global_step if opts.alternate_over == "iterations" else step.epoch
        d_step = is_discriminator_step(counter, opts.alternate_every)

        if opts.mode == "literal":
            feat, terms = self._generator_terms(batch, step)
            d_logits = self.discriminator(feat)
            dis = modality_cross_entropy(d_logits, batch.modalities)
            total = (literal_discriminator_objective(terms["gen"], dis, opts.gamma, opts.eta) if d_step
                     else generator_objective(terms["gen"], dis, opts.gamma))
            step(total, "main", parts={"triplet": terms["triplet"], "ide": terms["ide"], "disc": dis})
        elif d_step:
            with torch.no_grad():  # the generator is not updated on a D-step
                feat, terms = self._generator_terms(batch, step)
            d_logits = self.discriminator(feat.detach())
            dis = modality_cross_entropy(d_logits, batch.modalities)
            total = split_discriminator_objective(dis, opts.gamma, opts.eta)
            step(total, "disc", parts={"disc": dis})
        else:
            feat, terms = self._generator_terms(batch, step)
            with frozen(self.discriminator):  # gradients reach the features, never theta_D
                d_logits = self.discriminator(feat)
            dis = modality_cross_entropy(d_logits, batch.modalities)
            total = generator_objective(terms["gen"], dis, opts.gamma)
            step(total, "gen", parts={"triplet": terms["triplet"], "ide": terms["ide"], "disc": dis})

        acc = float(modality_accuracy(d_logits.detach(), batch.modalities))
        self._acc_sum += acc
        self._acc_steps += 1
        self._disc_updates += int(d_step)
        return {"objective": float(total.detach()), "gen": float(terms["gen"].detach()),
                "triplet": float(terms["triplet"].detach()), "ide": float(terms["ide"].detach()),
                "disc": float(dis.detach()), "disc_acc": acc, "id_acc": float(terms["id_acc"]),
                "d_step": float(d_step)}

    def on_epoch_start(self, epoch: int) -> None:
        self._acc_sum, self._acc_steps, self._disc_updates = 0.0, 0, 0

    def epoch_summary(self) -> dict[str, float]:
        """disc_acc: the discriminator's modality accuracy averaged over this epoch's steps; disc_updates: D-steps."""
        if self._acc_steps == 0:
            return {}
        return {"disc_acc": self._acc_sum / self._acc_steps, "disc_updates": float(self._disc_updates)}

    # ---- inference
    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        """pool: the GAP feature (the paper's test feature); hidden: the ID head's hidden layer (pre-ReLU);
        bn: whichever `method.bn_feature` names (cmGAN has no BN-neck). All L2-normalised."""
        codes = modality_codes(modality, images.shape[0], images.device)
        feat, hidden, _ = self(images, codes)
        out = {"pool": F.normalize(feat.float(), dim=1), "hidden": F.normalize(hidden.float(), dim=1)}
        out["bn"] = out[self.cfg.method.bn_feature]
        return out

    def feature_dims(self) -> dict[str, int]:
        hidden = self.id_head.hidden_dim
        return {"bn": self.dim if self.cfg.method.bn_feature == "pool" else hidden, "pool": self.dim,
                "hidden": hidden}
