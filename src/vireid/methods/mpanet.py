"""MPANet (Wu et al., CVPR 2021): modality alleviation + pattern alignment + mutual mean learning.

docs/reference/methods.md#mpanet-4. One-stream ResNet, MAM after layer3 and layer4, PAM with l pattern maps,
a BN-neck over the (l + 1) * C feature, a shared identity classifier, one classifier per modality and
an EMA ("mean") copy of each. `faithful_to` picks the official code's loss formulas (default, they
produced the published numbers) or the paper's where the two disagree; docs/methods/mpanet.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Batch, ConfigError, Modality, TrainingError
from ..losses import cross_entropy
from ..losses.mpanet import center_cluster_terms, mutual_mean_kl, separation_loss
from ..models import BNNeck, Classifier, ResNetBackbone
from ..models.backbone import STAGES
from ..models.mpanet_modules import MAM, PAM
from ..registry import register_method
from .base import DataParallel, Method, MethodOptions, Stepper, TrainingLoss, modality_codes

FAITHFUL_TO = ("code", "paper")
LOSS_PARTS = ("sep", "cc", "ce", "ce_v", "ce_r", "kl")


@dataclass
class MPANetOptions(MethodOptions):
    """Options of MPANet; defaults are the official SYSU config (docs/reference/methods.md#mpanet-4-2)."""

    name: str = "mpanet"
    faithful_to: str = "code"  # code | paper: KL direction/normalisation, L_sid weight, L_id averaging
    mam_stages: list = field(default_factory=lambda: ["layer3", "layer4"])  # MAM after these stages
    mam_reduction: int = 16
    num_parts: int = 6  # PAM pattern maps l; 0 disables PAM (feature = GAP(F), no separation loss)
    weight_sep: float = 0.5  # lambda_1
    weight_cc: float = 1.0
    margin: float = 0.7  # rho of the center-cluster loss
    weight_id: float = 1.0
    weight_sid: float = 0.5  # lambda_2; the code adds L_sid twice (effective 1.0), the paper once
    weight_kl: float = 2.5  # lambda_3
    update_rate: float = 0.2  # EMA alpha of the mean classifiers
    update_decay_start: int = 100  # alpha_e = min(start / (e + 1), 1) * update_rate, e 1-based; <= 0: constant


def sid_weight(opts: MPANetOptions) -> float:
    """Effective weight of L_sid_v + L_sid_r.

    2 * weight_sid in the code (added twice, issue #6), weight_sid in the paper.
    """
    return float(opts.weight_sid) if opts.faithful_to == "paper" else 2.0 * float(opts.weight_sid)


def total_loss(parts: dict[str, torch.Tensor | float], opts: MPANetOptions) -> torch.Tensor | float:
    """L = w_sep L_sep + w_cc L_cc + w_id L_id + sid_weight (L_sid_v + L_sid_r) + w_kl L_KL.

    See docs/reference/methods.md#mpanet-4-2.
    """
    missing = [k for k in LOSS_PARTS if k not in parts]
    if missing:
        raise ValueError(f"total_loss needs the parts {LOSS_PARTS}, missing {missing}")
    return (opts.weight_sep * parts["sep"] + opts.weight_cc * parts["cc"] + opts.weight_id * parts["ce"]
            + sid_weight(opts) * (parts["ce_v"] + parts["ce_r"]) + opts.weight_kl * parts["kl"])


@register_method("mpanet")
class MPANet(Method):
    """One-stream ResNet + MAM + PAM; CE, modality-specific CE, mutual-mean KL, center cluster, separation."""

    Options = MPANetOptions
    mean_weight_v: torch.Tensor  # buffers, registered in __init__
    mean_weight_r: torch.Tensor

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        opts: MPANetOptions = cfg.method
        if opts.faithful_to not in FAITHFUL_TO:
            raise ConfigError(f"method.faithful_to must be one of {FAITHFUL_TO}, got {opts.faithful_to!r}")
        bad = [s for s in opts.mam_stages if s not in STAGES]
        if bad:
            raise ConfigError(f"method.mam_stages has unknown stage(s) {bad}; valid stages are {STAGES} "
                              "(MPANet uses [layer3, layer4])")
        if opts.num_parts == 1 or opts.num_parts < 0:
            raise ConfigError(f"method.num_parts must be 0 (no PAM) or >= 2 (the separation loss needs two maps), "
                              f"got {opts.num_parts}")
        if not 0.0 <= opts.update_rate <= 1.0:
            raise ConfigError(f"method.update_rate must be in [0, 1], got {opts.update_rate}")
        self.backbone = ResNetBackbone.from_config(cfg.model)
        self.mam = nn.ModuleDict({s: MAM(self.backbone.channels(s), opts.mam_reduction)
                                  for s in STAGES if s in opts.mam_stages})
        channels = self.backbone.out_channels
        self.pam = PAM(channels, opts.num_parts) if opts.num_parts > 0 else None
        self.dim = self.pam.out_dim if self.pam is not None else channels
        self.neck = BNNeck(self.dim, bias_frozen=True, weight_init="ones")
        # torch's default Linear init, as the reference
        self.classifier = Classifier(self.dim, num_classes, bias=False, init_std=None)
        self.classifier_v = Classifier(self.dim, num_classes, bias=False, init_std=None)
        self.classifier_r = Classifier(self.dim, num_classes, bias=False, init_std=None)
        # Mean classifiers: EMA copies of C_v and C_r, buffers so they are saved and restored exactly.
        self.register_buffer("mean_weight_v", self.classifier_v.fc.weight.detach().clone())
        self.register_buffer("mean_weight_r", self.classifier_r.fc.weight.detach().clone())
        self.update_rate = self.update_rate_at(0)

    # ---- schedule
    def update_rate_at(self, epoch: int) -> float:
        """EMA alpha at 0-based `epoch`: min(start / (e + 1), 1) * update_rate with e = epoch + 1 (ignite)."""
        opts: MPANetOptions = self.cfg.method
        if opts.update_decay_start <= 0:
            return float(opts.update_rate)
        return min(opts.update_decay_start / (epoch + 2), 1.0) * float(opts.update_rate)

    def on_epoch_start(self, epoch: int) -> None:
        self.update_rate = self.update_rate_at(epoch)

    def epoch_summary(self) -> dict[str, float]:
        return {"ema_rate": self.update_rate}

    @torch.no_grad()
    def update_mean_classifiers(self) -> None:
        """E <- (1 - alpha) E + alpha theta for both modality classifiers (before they are used)."""
        a = self.update_rate
        self.mean_weight_v.mul_(1.0 - a).add_(self.classifier_v.fc.weight.detach(), alpha=a)
        self.mean_weight_r.mul_(1.0 - a).add_(self.classifier_r.fc.weight.detach(), alpha=a)

    def head_parameters(self):
        return [p for m in (self.neck, self.classifier, self.classifier_v, self.classifier_r) for p in m.parameters()]

    # ---- network
    def feature_map(self, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """images -> layer4 map, with a MAM after each stage named in method.mam_stages."""
        x = images
        for stage in STAGES:
            x = self.backbone.run_stages(x, codes, stage, stage)
            if stage in self.mam:
                x = self.mam[stage](x)
        return x

    def forward(self, images: torch.Tensor, modalities: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(pre-BN feature f (B, dim), BN-neck feature (B, dim), pattern maps (B, l, h, w) or None)."""
        fmap = self.feature_map(images, modalities)
        if self.pam is not None:
            pooled, masks = self.pam(fmap)
        else:
            pooled, masks = fmap.mean(dim=(2, 3)), None
        return pooled, self.neck(pooled), masks

    @torch.no_grad()
    def pattern_maps(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> torch.Tensor:
        """PAM's pattern maps M (B, l, h, w) of `images` (for visualisation)."""
        if self.pam is None:
            raise ConfigError("this MPANet has no PAM (method.num_parts=0), so it has no pattern maps")
        codes = modality_codes(modality, images.shape[0], images.device)
        return self.pam.maps(self.feature_map(images, codes))

    # ---- training
    def data_parallel(self) -> DataParallel:
        """One objective, one optimizer: DDP. Every parameter gets a gradient each step (the classifiers, C_v on the
        visible and C_r on the infrared images, which every batch holds); the EMA classifiers are buffers."""
        return DataParallel(ddp=True)

    def training_loss(self, batch: Batch, step: Stepper) -> TrainingLoss:
        opts: MPANetOptions = self.cfg.method
        labels = batch.labels
        vis, ir = batch.visible_mask, batch.infrared_mask
        n_vis, n_ir = int(vis.sum()), int(ir.sum())
        n_ids = int(torch.unique(labels).numel())
        if n_vis == 0 or n_ir == 0 or n_ids < 2:
            raise TrainingError(
                f"MPANet needs visible and infrared images of at least 2 identities in every batch, got "
                f"{n_vis} visible, {n_ir} infrared, {n_ids} identities; use sampler.kind: mpanet (or agw) "
                "with sampler.num_ids >= 2")
        paper = opts.faithful_to == "paper"

        pooled, feat, masks = self(batch.images, batch.modalities)
        zero = pooled.new_zeros((), dtype=torch.float32)
        sep = separation_loss(masks) if masks is not None else zero
        pull, push = center_cluster_terms(pooled, labels, opts.margin)
        cc = pull + push

        logits = self.classifier(feat)
        if paper:  # Eq. 12: per-modality means, summed
            ce = cross_entropy(logits[vis], labels[vis]) + cross_entropy(logits[ir], labels[ir])
        else:
            ce = cross_entropy(logits, labels)
        logits_v = self.classifier_v(feat[vis])
        logits_r = self.classifier_r(feat[ir])
        ce_v = cross_entropy(logits_v, labels[vis])
        ce_r = cross_entropy(logits_r, labels[ir])

        self.update_mean_classifiers()
        with torch.no_grad():
            mean_v = F.linear(feat[vis], self.mean_weight_r.to(feat.dtype))  # IR mean classifier on visible
            mean_r = F.linear(feat[ir], self.mean_weight_v.to(feat.dtype))  # visible mean classifier on IR
        kl = mutual_mean_kl(torch.cat([logits_v, logits_r]), torch.cat([mean_v, mean_r]),
                            torch.cat([batch.modalities[vis], batch.modalities[ir]]), faithful_to=opts.faithful_to)

        parts = {"sep": sep, "cc": cc, "ce": ce, "ce_v": ce_v, "ce_r": ce_r, "kl": kl}
        loss = total_loss(parts, opts)
        assert isinstance(loss, torch.Tensor)  # every part is a tensor here
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean()
        return TrainingLoss(loss, parts, {"loss": loss, "sep": sep, "cc": cc, "cc_pull": pull, "cc_push": push,
                                          "ce": ce, "ce_v": ce_v, "ce_r": ce_r, "kl": kl, "acc": acc})

    # ---- inference
    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        codes = modality_codes(modality, images.shape[0], images.device)
        pooled, feat, _ = self(images, codes)
        return {"bn": F.normalize(feat.float(), dim=1), "pool": F.normalize(pooled.float(), dim=1)}

    def feature_dims(self) -> dict[str, int]:
        return {"bn": self.dim, "pool": self.dim}
