"""The strong baseline: two-stream AGW network (base / agw / caj variants), docs/reference/methods.md#baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core import Batch, ConfigError, Modality
from ..losses import batch_hard_triplet, caj_triplet, cross_entropy, weighted_regularized_triplet
from ..models import BNNeck, Classifier, ResNetBackbone, build_pooling
from ..registry import register_method
from .base import DataParallel, Method, MethodOptions, Stepper, TrainingLoss, modality_codes

VARIANTS = ("base", "agw", "caj")


@dataclass
class BaselineOptions(MethodOptions):
    """Options of the baseline; `variant` picks the triplet loss, pooling and non-local defaults."""

    name: str = "baseline"
    variant: str = "caj"  # base | agw | caj
    label_smoothing: float = 0.0
    triplet_weight: float = 1.0
    margin: float = 0.3  # base: batch-hard margin
    caj_alpha: float = 1.0
    caj_gamma: float = 1.0


@register_method("baseline")
class Baseline(Method):
    """ResNet with modality-specific stems, GeM (or avg) pooling, BN-neck, CE + triplet (WRT / CAJ / batch-hard)."""

    Options = BaselineOptions

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        opts: BaselineOptions = cfg.method
        if opts.variant not in VARIANTS:
            raise ConfigError(f"method.variant must be one of {VARIANTS}, got {opts.variant!r}")
        self.backbone = ResNetBackbone.from_config(cfg.model)
        dim = self.backbone.out_channels
        self.pool = build_pooling(cfg.model.pooling, cfg.model.gem_p)
        self.neck = BNNeck(dim, bias_frozen=True, weight_init="kaiming")
        self.classifier = Classifier(dim, num_classes, bias=False, init_std=0.001)
        self.dim = dim

    def head_parameters(self):
        return list(self.neck.parameters()) + list(self.classifier.parameters())

    def forward(self, images: torch.Tensor, modalities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-BN pooled feature and post-BN feature of each image."""
        pooled = self.pool(self.backbone(images, modalities))
        return pooled, self.neck(pooled)

    def data_parallel(self) -> DataParallel:
        """One objective, one optimizer: DDP; every parameter gets a gradient each step (both stems see images)."""
        return DataParallel(ddp=True)

    def training_loss(self, batch: Batch, step: Stepper) -> TrainingLoss:
        opts: BaselineOptions = self.cfg.method
        pooled, feat = self(batch.images, batch.modalities)
        logits = self.classifier(feat)
        ce = cross_entropy(logits, batch.labels, label_smoothing=opts.label_smoothing)
        if opts.variant == "base":
            tri = batch_hard_triplet(pooled, batch.labels, margin=opts.margin)
        elif opts.variant == "agw":
            tri = weighted_regularized_triplet(pooled, batch.labels)
        else:
            tri = caj_triplet(pooled, batch.labels, alpha=opts.caj_alpha, gamma=opts.caj_gamma)
        loss = ce + opts.triplet_weight * tri
        with torch.no_grad():
            acc = (logits.argmax(1) == batch.labels).float().mean()
        return TrainingLoss(loss, {"ce": ce, "triplet": tri},
                            {"loss": loss, "ce": ce, "triplet": tri, "acc": acc})

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        codes = modality_codes(modality, images.shape[0], images.device)
        pooled, feat = self(images, codes)
        return {"bn": F.normalize(feat.float(), dim=1), "pool": F.normalize(pooled.float(), dim=1)}

    def feature_dims(self) -> dict[str, int]:
        return {"bn": self.dim, "pool": self.dim}
