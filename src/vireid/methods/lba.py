"""LbA, Learning by Aligning (Park et al., ICCV'21): two-stream ResNet + CMAlign, docs/methods/lba.md.

Training: L = CE + batch-hard triplet (pre-BN GeM) + lambda_IC (CE_ic3 + CE_ic4) + lambda_DT (DT3 + DT4),
where CMAlign (parameter-free, training only) reconstructs each image's layer3 and layer4 maps from
an image of the same identity in the other modality (IC, DT) and of another identity (DT).
Test time: the backbone, GeM and (for "bn") the BN-neck only; CMAlign adds no parameter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core import Batch, ConfigError, Modality
from ..losses import batch_hard_triplet, cross_entropy
from ..losses.lba import DT_REDUCTIONS, dense_triplet, id_consistency, lba_objective
from ..models import BNNeck, Classifier, ResNetBackbone, build_pooling
from ..models.cmalign import CMAlign, Pairs, cross_modal_pairs
from ..registry import register_method
from .base import DataParallel, InferenceSpec, Method, MethodOptions, Stepper, TrainingLoss, modality_codes

ALIGN_STAGES = ("layer3", "layer4")
TEST_FEATURES = ("bn", "pool")


@dataclass
class LbAOptions(MethodOptions):
    """LbA's switches; defaults are the official code's (docs/reference/methods.md#lba-5-2)."""

    name: str = "lba"
    margin: float = 0.3  # batch-hard triplet of L_ID
    align_stages: list = field(default_factory=lambda: list(ALIGN_STAGES))  # [] = the baseline
    temperature: float = 50.0  # beta = 1/tau of the matching softmax
    ic_weight: float = 1.0  # lambda_IC
    dt_weight: float = 0.5  # lambda_DT (--lw_dt)
    dt_margin: float = 0.3
    dt_reduction: str = "official_1p7"  # official_1p7 (published numbers) | per_sample (the paper's formula)
    coattention: bool = True  # False: dense triplet without co-attention (ablation)
    pair_seed_offset: int = 0  # pairs of step s come from Generator(train.seed + offset + s)
    test_feature: str = "bn"  # what FeatureExtractor, index and export use by default: bn | pool (the official test)


@register_method("lba")
class LbA(Method):
    """Two-stream ResNet (modality-specific stems), GeM, BN-neck; CMAlign on layer3 and layer4 in training."""

    Options = LbAOptions

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        opts: LbAOptions = cfg.method
        unknown = [s for s in opts.align_stages if s not in ALIGN_STAGES]
        if unknown or len(set(opts.align_stages)) != len(opts.align_stages):
            raise ConfigError(f"method.align_stages must be distinct entries of {list(ALIGN_STAGES)}, "
                              f"got {opts.align_stages!r}")
        if opts.dt_reduction not in DT_REDUCTIONS:
            raise ConfigError(f"method.dt_reduction must be one of {DT_REDUCTIONS}, got {opts.dt_reduction!r}")
        if opts.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {opts.temperature}")
        if opts.test_feature not in TEST_FEATURES:
            raise ConfigError(f"method.test_feature must be one of {TEST_FEATURES}, got {opts.test_feature!r}; "
                              "pool is the official test feature (L2-normalised pre-BN GeM)")
        self.backbone = ResNetBackbone.from_config(cfg.model)
        self.dim = self.backbone.out_channels
        self.pool = build_pooling(cfg.model.pooling, cfg.model.gem_p)
        self.neck = BNNeck(self.dim, bias_frozen=True, weight_init="normal")
        self.classifier = Classifier(self.dim, num_classes, bias=False, init_std=0.001)
        self.cmalign = CMAlign(opts.temperature)

    def head_parameters(self):
        return list(self.neck.parameters()) + list(self.classifier.parameters())

    def _head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-BN GeM feature, logits) of a layer4 map."""
        pooled = self.pool(fmap)
        return pooled, self.classifier(self.neck(pooled))

    # ---- training
    def data_parallel(self) -> DataParallel:
        """One objective, one optimizer: DDP. CMAlign has no parameter and the BN-neck and classifier see the ID
        batch every step, so every parameter gets a gradient each step, whatever `align_stages`."""
        return DataParallel(ddp=True)

    def training_loss(self, batch: Batch, step: Stepper) -> TrainingLoss:
        opts: LbAOptions = self.cfg.method
        labels, codes = batch.labels, batch.modalities
        # stage order fixed (layer3, layer4): it fixes the generator draws and, as in the official code,
        # the order the BN-neck sees the batches (its running statistics: ic3, ic4, then the ID batch)
        stages = [s for s in ALIGN_STAGES if s in opts.align_stages]
        pairs = {}
        if stages:  # drawn before the forward pass so a batch CMAlign cannot pair fails at once
            gen = torch.Generator().manual_seed(
                int(self.cfg.train.seed) + opts.pair_seed_offset + int(step.global_step)
            )
            pairs = {s: cross_modal_pairs(labels, codes, gen) for s in stages}
        x3 = self.backbone.forward_until(batch.images, codes, "layer3")
        x4 = self.backbone.forward_from(x3, codes, "layer3")

        ic_logits: dict[str, torch.Tensor] = {}
        dt_terms: dict[str, torch.Tensor] = {}
        maps = {"layer3": x3, "layer4": x4}
        for stage in stages:
            out = self.cmalign(maps[stage], pairs[stage])
            recon = out.recon_pos.to(maps[stage].dtype)
            if stage == "layer3":  # through the shared layer4
                recon = self.backbone.forward_from(recon, codes, "layer3")
            ic_logits[stage] = self._head(recon)[1]
            dt_terms[stage] = dense_triplet(maps[stage], out.recon_pos, out.recon_neg,
                                            out.coattention if opts.coattention else None,
                                            margin=opts.dt_margin, reduction=opts.dt_reduction)

        pooled, logits = self._head(x4)
        ce = cross_entropy(logits, labels)
        tri = batch_hard_triplet(pooled, labels, margin=opts.margin)
        zero = ce.new_zeros(())
        ic = id_consistency(ic_logits.get("layer3"), ic_logits.get("layer4"), labels) if ic_logits else zero
        dt = torch.stack(list(dt_terms.values())).sum() if dt_terms else zero
        loss = lba_objective(ce, tri, ic, dt, ic_weight=opts.ic_weight, dt_weight=opts.dt_weight)
        parts = {"ce": ce, "triplet": tri, "ic": ic, "dt": dt}
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean()
        logs: dict[str, torch.Tensor | float] = {"loss": loss, **parts, "acc": acc}
        for stage, term in dt_terms.items():
            logs[f"dt_{stage}"] = term
        return TrainingLoss(loss, parts, logs)

    # ---- inference
    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        """"pool": L2-normalised pre-BN GeM (the official test feature); "bn": after the BN-neck."""
        codes = modality_codes(modality, images.shape[0], images.device)
        pooled = self.pool(self.backbone(images, codes))
        return {"pool": F.normalize(pooled.float(), dim=1), "bn": F.normalize(self.neck(pooled).float(), dim=1)}

    def feature_dims(self) -> dict[str, int]:
        return {"pool": self.dim, "bn": self.dim}

    def inference_spec(self) -> InferenceSpec:
        """The default spec with `method.test_feature` as the reported feature (the official test reports pool)."""
        return dataclasses.replace(super().inference_spec(), feature=self.cfg.method.test_feature)

    @torch.no_grad()
    def correspondences(self, img_visible: torch.Tensor, img_infrared: torch.Tensor,
                        stage: str = "layer4") -> dict[str, torch.Tensor]:
        """CMAlign of visible image i (anchor) onto infrared image i (target), at `stage`, in eval mode.

        Returns prob (N, HW, HW) matching probabilities (row = visible position, column = infrared
        position, row-major over (H, W)), mask_anchor and mask_target (N, 1, H, W) person masks,
        coattention (N, 1, H, W), and the map size as "size" = tensor([H, W]).
        """
        if stage not in ALIGN_STAGES:
            raise ValueError(f"stage must be one of {ALIGN_STAGES}, got {stage!r}")
        if img_visible.shape != img_infrared.shape:
            raise ValueError(f"visible and infrared images must have one shape, got "
                             f"{tuple(img_visible.shape)} and {tuple(img_infrared.shape)}")
        was_training = self.training
        self.eval()
        try:
            n = img_visible.shape[0]
            vis = self.backbone.forward_until(img_visible, Modality.VISIBLE, stage)
            ir = self.backbone.forward_until(img_infrared, Modality.INFRARED, stage)
            feat = torch.cat([vis, ir])
            idx = torch.arange(n, device=feat.device)
            out = self.cmalign(feat, Pairs(torch.cat([idx + n, idx]), None))
        finally:
            self.train(was_training)
        return {"prob": out.prob_pos[:n], "mask_anchor": out.mask[:n], "mask_target": out.mask[n:],
                "coattention": out.coattention[:n], "size": torch.tensor(vis.shape[-2:])}
