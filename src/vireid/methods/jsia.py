"""JSIA-ReID (Wang et al., AAAI 2020 / Neural Networks 2020): cross-modality paired-image generation with set- and
instance-level alignment; docs/methods/jsia.md, docs/reference/methods.md.

Networks (the official code's, which produced the published numbers):
- the re-ID encoder: ResNet (last stride 1); its set-level encoder E_sl = conv1 + bn1 + maxpool + layer1 (no ReLU
  after bn1, as the code) gives the content code; the instance-level encoder E_il = layer2..4 + GAP, then a BN-neck
  and a bias-free classifier. Every input enters as pseudo-gray: 0.2989 c0 + 0.5870 c1 + 0.1140 c2 of the
  ImageNet-normalised channels, not renormalised, repeated to 3 channels;
- two AdaIN generators (style encoder, decoder, MLP) sharing E_sl, one per modality, and two multi-scale LSGAN
  discriminators.

One iteration (`training_step`), on an identity-aligned GAN sub-batch of each training batch (`gan_ids` identities
x `gan_per_id` images per modality, resized to the GAN size (a quarter of the re-ID size x 2**upsample: 128x64 in the
code) and mapped to [-1, 1]):
encode, decode within and across modalities (styles swapped within an identity), re-encode, cycle-decode; then,
with all gradients zeroed first: the latent reconstruction loss backward, E_sl's gradients zeroed (it trains only
the generators), the image losses backward, the discriminators' gradients zeroed, the discriminator loss backward;
in the joint phase also the instance-level alignment (symmetric KL of the classifier's outputs on real images and
the detached paired fakes) and the re-ID loss (label-smoothed CE + cross-modality batch-hard triplet) backward;
then the optimizers step: generators and discriminators in the warm-up phase (E_sl frozen), all four in the joint
phase. The Neural Networks paper's extras (variation module, local-region alignment, unseen-identity mixing) are
switches, off by default; the values the paper leaves open are vireid's choices (`JSIAOptions`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Batch, CheckpointError, ConfigError, Modality, TrainingError
from ..losses import cross_entropy, cross_modality_triplet
from ..losses.generative import (
    l1_reconstruction,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    one_way_kl,
    symmetric_kl,
)
from ..models import BNNeck, Classifier, ResNetBackbone, Stem
from ..models.generative import AdaINGenerator, MultiScaleDiscriminator
from ..registry import register_method
from ..utils.tensors import modality_codes
from .base import DataParallel, Method, MethodOptions, OptimizerEntry, Stepper
from .generative import (
    adam_betas,
    check_betas,
    check_choices,
    discriminator_min_side,
    from_gan_image,
    to_gan_image,
    translation_images,
)

LUMINANCE = (0.2989, 0.5870, 0.1140)
RECONSTRUCT_IR_WITH = ("rgb", "ir")
CYCLE_STYLES = ("real", "reencoded")
ALIGNMENT_KLS = ("symmetric", "one_way")
OPTIMIZERS = ("sl_enc", "il_enc", "gen", "dis")


@dataclass
class JSIAOptions(MethodOptions):
    """JSIA-ReID's options; defaults are the official code's (SYSU), [paper] / [vireid] mark the other switches."""

    name: str = "jsia"
    # phases, in trainer epochs (the official "epoch" is 200 iterations: train.max_steps_per_epoch)
    gan_warmup_epochs: int = 600  # generators and discriminators only, E_sl frozen; then everything
    # the GAN sub-batch taken from each training batch
    gan_ids: int = 3
    gan_per_id: int = 3
    # loss weights
    weight_gan: float = 1.0  # LSGAN generator terms
    weight_gan_image: float = 10.0  # L1 of the within-modality and cycle reconstructions
    weight_gan_feature: float = 1.0  # L1 of the re-encoded content and style codes
    weight_pixel: float = 0.01  # instance-level alignment
    label_smoothing: float = 0.1
    margin: float = 0.3  # cross-modality batch-hard triplet, Euclidean on the pre-BN GAP feature
    # optimisers: the re-ID groups use optim.lr / optim.weight_decay with Adam betas below
    betas_reid: list = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    lr_gan: float = 1.0e-4
    betas_gan: list = dataclasses.field(default_factory=lambda: [0.5, 0.999])
    weight_decay_gan: float = 1.0e-4
    # generators and discriminators (the code's architecture; the paper's differs, see docs/methods/jsia.md)
    style_dim: int = 128
    style_base_dim: int = 32
    style_downsample: int = 4
    mlp_dim: int = 256
    res_blocks: int = 2
    upsample: int = 1  # GAN images are the content code (a quarter of the re-ID size) x 2**upsample: 128x64 in the code
    disc_layers: int = 4
    disc_dim: int = 32
    disc_scales: int = 2
    style_classes: int = 395  # the style encoders' unused "predict" head (kept so official weights load)
    # code / paper switches
    reconstruct_ir_with: str = "rgb"  # rgb: the code decodes the IR reconstruction with the RGB decoder | ir [paper]
    cycle_style: str = "real"  # real: the code's cycle uses the real style | reencoded [paper Eq. 6]
    alignment_kl: str = "symmetric"  # symmetric: the code | one_way [paper Eq. 11]
    # Neural Networks 2020 extras, off by default [paper; every value below is vireid's choice]
    variation: bool = False  # variation module on the content code (u, tau; z = u + tau eps)
    variation_weight: float = 1.0
    local_regions: int = 0  # > 0: stripes of the layer4 map, each with its own classifier, aligned too
    local_weight: float = 0.01
    unseen_mix: bool = False  # mix two identities' content and style codes, align to the mixed prediction
    unseen_weight: float = 0.01


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """JSIA's pseudo-gray input: g = 0.2989 c0 + 0.5870 c1 + 0.1140 c2 on the channels as given (already
    ImageNet-normalised, not renormalised), repeated to 3 channels: (B, 3, H, W) -> (B, 3, H, W)."""
    w = torch.tensor(LUMINANCE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)


class VariationModule(nn.Module):
    """[NN paper, architecture vireid's choice] E^v: 1x1 convs giving u and tau = softplus(.) of the content map M;
    z = u + tau * eps; D^v: a 1x1 conv reconstructing M from z. loss = |M - D^v(z)|_1 + mean(u^2) + mean((tau-1)^2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mu = nn.Conv2d(dim, dim, 1)
        self.tau = nn.Conv2d(dim, dim, 1)
        self.dec = nn.Conv2d(dim, dim, 1)

    def forward(self, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, loss) of a content map (B, C, h, w)."""
        u, tau = self.mu(content), F.softplus(self.tau(content))
        z = u + tau * torch.randn_like(u)
        loss = F.l1_loss(self.dec(z), content) + u.pow(2).mean() + (tau - 1).pow(2).mean()
        return z, loss


@register_method("jsia")
class JSIA(Method):
    """ResNet re-ID encoder (gray input) + two AdaIN generators sharing its set-level encoder + two discriminators."""

    Options = JSIAOptions

    def __init__(self, cfg: Any, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        opts: JSIAOptions = cfg.method
        _validate(opts, cfg)
        self.backbone = ResNetBackbone.from_config(cfg.model)
        if self.backbone.modality_specific:
            raise ConfigError("jsia has one encoder for both modalities: set model.modality_specific=[]")
        content_dim = self.backbone.channels("layer1")
        self.dim = self.backbone.out_channels
        self.neck = BNNeck(self.dim, bias_frozen=True, weight_init="ones")
        self.classifier = Classifier(self.dim, num_classes, bias=False, init_std=0.001)

        def generator() -> AdaINGenerator:
            return AdaINGenerator(content_dim=content_dim, style_dim=opts.style_dim, num_classes=opts.style_classes,
                                  n_downsample_style=opts.style_downsample, style_dim_base=opts.style_base_dim,
                                  mlp_dim=opts.mlp_dim, n_res=opts.res_blocks, n_upsample=opts.upsample)

        self.generator_rgb = generator()
        self.generator_ir = generator()
        self.discriminator_rgb = MultiScaleDiscriminator(opts.disc_layers, opts.disc_dim, opts.disc_scales)
        self.discriminator_ir = MultiScaleDiscriminator(opts.disc_layers, opts.disc_dim, opts.disc_scales)
        self.variation = VariationModule(content_dim) if opts.variation else None
        self.local_heads = nn.ModuleList(
            [nn.Sequential(BNNeck(self.dim, bias_frozen=True, weight_init="ones"),
                           Classifier(self.dim, num_classes, bias=False, init_std=0.001))
             for _ in range(opts.local_regions)])

    @classmethod
    def min_input_size(cls, cfg: Any) -> tuple[int, int]:
        """The smallest re-ID size whose GAN images the generators and discriminators can take: every reflect-padded
        conv needs an input wider than its padding, i.e. GAN images of at least 2**(disc_layers + disc_scales - 1)
        and 2**style_downsample pixels a side; GAN images are the re-ID size / 4 x 2**upsample."""
        opts = cfg.method
        gan = max(discriminator_min_side(opts.disc_layers, opts.disc_scales), 2 ** opts.style_downsample)
        side = max(4, gan * 4 // 2 ** opts.upsample)
        return side, side

    # ---- the re-ID network
    @property
    def reid_size(self) -> tuple[int, int]:
        return int(self.cfg.data.height), int(self.cfg.data.width)

    @property
    def gan_size(self) -> tuple[int, int]:
        """What the generators decode: the content code (re-ID size / 4) x 2**upsample (128x64 for 256x128)."""
        scale = 2 ** int(self.cfg.method.upsample)
        return self.reid_size[0] // 4 * scale, self.reid_size[1] // 4 * scale

    def _stage(self, name: str) -> nn.Module:
        return cast(nn.Module, getattr(self.backbone, name))

    def set_level(self, x: torch.Tensor) -> torch.Tensor:
        """E_sl of ImageNet-normalised images: gray, conv1, bn1, maxpool (no ReLU), layer1 -> (B, C1, H/4, W/4)."""
        stem = cast(Stem, self._stage("stem"))
        x = to_gray(x)
        return self._stage("layer1")(stem.maxpool(stem.bn1(stem.conv1(x))))

    def instance_level(self, content: torch.Tensor) -> torch.Tensor:
        """E_il: layer2..layer4 of a content map -> the layer4 map."""
        return self._stage("layer4")(self._stage("layer3")(self._stage("layer2")(content)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ImageNet-normalised images at the re-ID size -> (layer4 map, pre-BN GAP feature, BN-neck feature)."""
        fmap = self.instance_level(self.set_level(images))
        pooled = fmap.mean(dim=(2, 3))
        return fmap, pooled, self.neck(pooled)

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Identity logits of ImageNet-normalised images, and those of each local region (none by default)."""
        fmap, _, feat = self(images)
        return self.classifier(feat), self._local_logits(fmap)

    def _local_logits(self, fmap: torch.Tensor) -> list[torch.Tensor]:
        if not len(self.local_heads):
            return []
        stripes = torch.tensor_split(fmap, len(self.local_heads), dim=2)
        return [head(s.mean(dim=(2, 3))) for head, s in zip(self.local_heads, stripes, strict=True)]

    def content(self, gan_images: torch.Tensor) -> torch.Tensor:
        """The content code of GAN images (in [-1, 1]): E_sl of their re-ID version (resized, renormalised, gray)."""
        return self.set_level(from_gan_image(gan_images, self.reid_size))

    def gan_logits(self, gan_images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.logits(from_gan_image(gan_images, self.reid_size))

    # ---- parameters and optimizers
    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.neck.parameters()) + list(self.classifier.parameters())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The four optimizers' parameters: E_sl, E_il + heads, generators (+ variation), discriminators."""
        stem = cast(Stem, self._stage("stem"))
        sl = [*stem.conv1.parameters(), *stem.bn1.parameters(), *self._stage("layer1").parameters()]
        il = [*self._stage("layer2").parameters(), *self._stage("layer3").parameters(),
              *self._stage("layer4").parameters(), *self.head_parameters(), *self.local_heads.parameters()]
        gen = [*self.generator_rgb.parameters(), *self.generator_ir.parameters(),
               *(self.variation.parameters() if self.variation is not None else [])]
        dis = [*self.discriminator_rgb.parameters(), *self.discriminator_ir.parameters()]
        return {"sl_enc": sl, "il_enc": il, "gen": gen, "dis": dis}

    def data_parallel(self) -> DataParallel:
        """Explicit gradient averaging, not DDP: one iteration adds up several backward passes (retained graphs,
        gradients zeroed in between for some parts) and steps two or four optimizers, by phase."""
        return DataParallel(ddp=False)

    def optimizers(self) -> dict[str, OptimizerEntry]:
        """Adam x 4, as the code: E_sl and E_il at optim.lr (4.5e-4), betas (0.9, 0.999), weight decay
        optim.weight_decay (5e-4); generators and discriminators at lr_gan (1e-4), betas (0.5, 0.999), weight
        decay 1e-4; every one on the schedule of optim (x0.1 at epoch 630 in the SYSU config)."""
        from ..optim import build_scheduler

        opts: JSIAOptions = self.cfg.method
        out: dict[str, OptimizerEntry] = {}
        for name, params in self.parameter_groups().items():
            reid = name in ("sl_enc", "il_enc")
            trainable = [p for p in params if p.requires_grad]
            opt = torch.optim.Adam(trainable, lr=self.cfg.optim.lr if reid else opts.lr_gan,
                                   betas=adam_betas(opts.betas_reid if reid else opts.betas_gan),
                                   weight_decay=self.cfg.optim.weight_decay if reid else opts.weight_decay_gan)
            out[name] = (opt, build_scheduler(opt, self.cfg.optim))
        return out

    # ---- training
    def _aligned_pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of an identity-aligned GAN sub-batch: the first `gan_ids` identities (in batch order) with images
        in both modalities, up to `gan_per_id` images per modality each (as many of each); visible[i] and
        infrared[i] share the identity. With sampler.num_pos >= gan_per_id every identity gives gan_per_id."""
        opts: JSIAOptions = self.cfg.method
        labels = batch.labels.tolist()
        vis = batch.visible_mask.tolist()
        rgb: list[int] = []
        ir: list[int] = []
        found = 0
        for label in dict.fromkeys(labels):
            v = [i for i, (lab, m) in enumerate(zip(labels, vis, strict=True)) if lab == label and m]
            r = [i for i, (lab, m) in enumerate(zip(labels, vis, strict=True)) if lab == label and not m]
            k = min(len(v), len(r), opts.gan_per_id)
            if k:
                rgb += v[:k]
                ir += r[:k]
                found += 1
            if found == opts.gan_ids:
                break
        if found < opts.gan_ids:
            raise TrainingError(
                f"jsia needs {opts.gan_ids} identities with images in both modalities in every batch for its GAN "
                f"sub-batch; this batch has {found}. Use sampler.kind=agw with sampler.num_ids >= {opts.gan_ids}, "
                "or lower method.gan_ids")
        device = batch.images.device
        return torch.tensor(rgb, device=device), torch.tensor(ir, device=device)

    def translate(self, rgb: torch.Tensor, ir: torch.Tensor, *, training: bool = False) -> dict[str, torch.Tensor]:
        """Every image of one generation pass on identity-aligned GAN images (in [-1, 1]): codes, reconstructions,
        paired fakes, re-encoded codes and cycle reconstructions (spec 3.3)."""
        opts: JSIAOptions = self.cfg.method
        g_rgb, g_ir = self.generator_rgb, self.generator_ir
        out: dict[str, Any] = {"rgb": rgb, "ir": ir}
        c_rgb, c_ir = self.content(rgb), self.content(ir)
        s_rgb, s_ir = g_rgb.style(rgb), g_ir.style(ir)
        out.update(c_rgb=c_rgb, c_ir=c_ir, s_rgb=s_rgb, s_ir=s_ir)
        z_rgb, z_ir = c_rgb, c_ir
        if self.variation is not None and training:
            (z_rgb, v_rgb), (z_ir, v_ir) = self.variation(c_rgb), self.variation(c_ir)
            out["variation"] = v_rgb + v_ir
        out["rec_rgb"] = g_rgb.decode(c_rgb, s_rgb)
        out["rec_ir"] = (g_rgb if opts.reconstruct_ir_with == "rgb" else g_ir).decode(c_ir, s_ir)
        out["fake_rgb"] = g_rgb.decode(z_ir, s_rgb)  # IR content, RGB style: paired with the real IR image
        out["fake_ir"] = g_ir.decode(z_rgb, s_ir)  # RGB content, IR style: paired with the real RGB image
        out["c_ir2"], out["s_rgb2"] = self.content(out["fake_rgb"]), g_rgb.style(out["fake_rgb"])
        out["c_rgb2"], out["s_ir2"] = self.content(out["fake_ir"]), g_ir.style(out["fake_ir"])
        real = opts.cycle_style == "real"
        out["cyc_rgb"] = g_rgb.decode(out["c_rgb2"], s_rgb if real else out["s_rgb2"])
        out["cyc_ir"] = g_ir.decode(out["c_ir2"], s_ir if real else out["s_ir2"])
        return out

    def _alignment(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kl = symmetric_kl if self.cfg.method.alignment_kl == "symmetric" else one_way_kl
        return kl(logits, target)

    def training_step(self, batch: Batch, step: Stepper) -> dict[str, float]:
        """One official iteration (see the module docstring); which optimizers step depends on the phase."""
        opts: JSIAOptions = self.cfg.method
        joint = step.epoch >= opts.gan_warmup_epochs
        rgb_idx, ir_idx = self._aligned_pairs(batch)
        rgb, ir = to_gan_image(batch.images[rgb_idx], self.gan_size), to_gan_image(batch.images[ir_idx], self.gan_size)
        t = self.translate(rgb, ir, training=True)
        d_rgb, d_ir = self.discriminator_rgb, self.discriminator_ir
        gen_gan = lsgan_generator_loss(d_rgb(t["fake_rgb"])) + lsgan_generator_loss(d_ir(t["fake_ir"]))
        gen_rec = (l1_reconstruction(t["rec_rgb"], rgb) + l1_reconstruction(t["rec_ir"], ir)
                   + l1_reconstruction(t["cyc_rgb"], rgb) + l1_reconstruction(t["cyc_ir"], ir))
        gen_img = opts.weight_gan * gen_gan + opts.weight_gan_image * gen_rec
        if "variation" in t:
            gen_img = gen_img + opts.variation_weight * t["variation"]
        gen_feat = opts.weight_gan_feature * (
            l1_reconstruction(t["c_rgb2"], t["c_rgb"]) + l1_reconstruction(t["c_ir2"], t["c_ir"])
            + l1_reconstruction(t["s_rgb2"], t["s_rgb"]) + l1_reconstruction(t["s_ir2"], t["s_ir"]))
        dis = (lsgan_discriminator_loss(d_rgb(t["fake_rgb"].detach()), d_rgb(rgb))
               + lsgan_discriminator_loss(d_ir(t["fake_ir"].detach()), d_ir(ir)))

        step.zero_grad()
        step.backward(gen_feat, retain_graph=True, parts={"gen_feat": gen_feat}, what="the latent reconstruction loss")
        step.zero_grad("sl_enc")  # the latent reconstruction trains the generators only
        step.backward(gen_img, parts={"gen_gan": gen_gan, "gen_rec": gen_rec}, what="the generator image loss")
        step.zero_grad("dis")  # what the generator losses left on the discriminators
        step.backward(dis, parts={"dis": dis}, what="the discriminator loss")
        scalars = {"gen_gan": gen_gan.item(), "gen_rec": gen_rec.item(), "gen_feat": gen_feat.item(),
                   "dis": dis.item()}
        if not joint:
            step.step_optimizers("gen", "dis")
            return scalars

        pixel = self._pixel_alignment(rgb, ir, t)
        step.backward(opts.weight_pixel * pixel["global"] + opts.local_weight * pixel["local"]
                      + opts.unseen_weight * pixel["unseen"], parts=pixel, what="the alignment loss")
        cls, tri, acc = self._reid_losses(batch)
        step.backward(cls + tri, parts={"cls": cls, "triplet": tri}, what="the re-ID loss")
        step.step_optimizers("sl_enc", "gen", "dis", "il_enc")
        return {**scalars, "pixel": pixel["global"].item(), "cls": cls.item(), "triplet": tri.item(), "acc": acc}

    def _pixel_alignment(self, rgb: torch.Tensor, ir: torch.Tensor, t: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        """Instance-level alignment: KL between the classifier's outputs on each real image and on its detached
        paired fake (the real side detached), summed over the two modalities; local regions and unseen-identity
        mixing when switched on."""
        rgb_logits, rgb_local = self.gan_logits(rgb)
        ir_logits, ir_local = self.gan_logits(ir)
        fake_ir_logits, fake_ir_local = self.gan_logits(t["fake_ir"].detach())
        fake_rgb_logits, fake_rgb_local = self.gan_logits(t["fake_rgb"].detach())
        out = {"global": self._alignment(fake_ir_logits, rgb_logits) + self._alignment(fake_rgb_logits, ir_logits)}
        zero = out["global"].new_zeros(())
        local = [self._alignment(f, r) for f, r in zip(fake_ir_local + fake_rgb_local, rgb_local + ir_local,
                                                       strict=True)]
        out["local"] = torch.stack(local).sum() / len(self.local_heads) if local else zero
        out["unseen"] = self._unseen_mix(rgb, t, rgb_logits) if self.cfg.method.unseen_mix else zero
        return out

    def _unseen_mix(self, rgb: torch.Tensor, t: dict[str, torch.Tensor], rgb_logits: torch.Tensor) -> torch.Tensor:
        """[NN paper] Mix the content and style codes of two RGB images of different identities with alpha ~ U(0,1)
        (torch's RNG), decode, and pull the mixed image's prediction towards alpha p_i + (1 - alpha) p_j."""
        n = rgb.shape[0]
        perm = torch.roll(torch.arange(n, device=rgb.device), self.cfg.method.gan_per_id)  # another identity
        alpha = torch.rand(n, 1, 1, 1, device=rgb.device)
        content = alpha * t["c_rgb"] + (1 - alpha) * t["c_rgb"][perm]
        style = alpha * t["s_rgb"] + (1 - alpha) * t["s_rgb"][perm]
        mixed_logits, _ = self.gan_logits(self.generator_rgb.decode(content, style).detach())
        p = F.softmax(rgb_logits.detach(), dim=1)
        target = alpha.view(n, 1) * p + (1 - alpha.view(n, 1)) * p[perm]
        q = F.softmax(mixed_logits, dim=1)
        return (q * torch.log(1e-8 + q / (target + 1e-8))).sum(dim=1).mean()

    def _reid_losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, float]:
        """L_cls = (CE_LS(rgb) + CE_LS(ir)) / 2 (+ the local regions' CE, averaged, when on); L_tri = the
        cross-modality batch-hard triplet on the pre-BN GAP feature."""
        opts: JSIAOptions = self.cfg.method
        fmap, pooled, feat = self(batch.images)
        logits = self.classifier(feat)
        vis, ir = batch.visible_mask, batch.infrared_mask
        labels = batch.labels

        def ce(lg: torch.Tensor) -> torch.Tensor:
            return (cross_entropy(lg[vis], labels[vis], opts.label_smoothing)
                    + cross_entropy(lg[ir], labels[ir], opts.label_smoothing)) / 2

        cls = ce(logits)
        local = self._local_logits(fmap)
        if local:
            cls = cls + torch.stack([ce(lg) for lg in local]).mean()
        tri = cross_modality_triplet(pooled, labels, batch.modalities, margin=opts.margin)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean().item()
        return cls, tri, acc

    # ---- inference
    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        """bn: the post-BN 2048-d feature of the gray input at the re-ID size (the official test feature); pool: the
        pre-BN GAP feature. Both modalities take the same path (modality is not used)."""
        modality_codes(modality, images.shape[0], images.device)  # validates the argument
        if tuple(images.shape[-2:]) != self.reid_size:
            images = F.interpolate(images, size=self.reid_size, mode="bilinear", align_corners=False)
        _, pooled, feat = self(images)
        return {"bn": F.normalize(feat.float(), dim=1), "pool": F.normalize(pooled.float(), dim=1)}

    def feature_dims(self) -> dict[str, int]:
        return {"bn": self.dim, "pool": self.dim}

    @torch.no_grad()
    def image_translations(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        """For ImageNet-normalised images of both modalities (`modality`: one code per image), pair the i-th visible
        with the i-th infrared image and return, in [0, 1] at the GAN size, (n, 3, h, w) each: real_visible,
        real_infrared, reconstructed_*, paired fakes (fake_infrared: the visible image's content in the infrared
        style; fake_visible the reverse) and cycle_* reconstructions."""
        codes = modality_codes(modality, images.shape[0], images.device, per_item=True)
        vis = images[codes == Modality.VISIBLE.code]
        ir = images[codes == Modality.INFRARED.code]
        n = min(len(vis), len(ir))
        if n == 0:
            raise ValueError("image_translations needs images of both modalities (the pairs swap their styles)")
        size = self.gan_size
        was_training = self.training
        self.eval()
        try:
            t = self.translate(to_gan_image(vis[:n], size), to_gan_image(ir[:n], size))
        finally:
            self.train(was_training)
        return translation_images(t)


def _validate(opts: JSIAOptions, cfg: Any) -> None:
    check_choices({"reconstruct_ir_with": (opts.reconstruct_ir_with, RECONSTRUCT_IR_WITH),
                   "cycle_style": (opts.cycle_style, CYCLE_STYLES), "alignment_kl": (opts.alignment_kl, ALIGNMENT_KLS)})
    for key in ("gan_ids", "gan_per_id", "style_dim", "disc_scales"):
        if getattr(opts, key) < 1:
            raise ConfigError(f"method.{key} must be >= 1, got {getattr(opts, key)}")
    if opts.gan_warmup_epochs < 0 or opts.local_regions < 0:
        raise ConfigError("method.gan_warmup_epochs and method.local_regions must be >= 0")
    check_betas(opts, "betas_reid", "betas_gan")
    if cfg.optim.name != "adam":
        raise ConfigError(f"jsia trains with Adam (as the official code): set optim.name=adam, got {cfg.optim.name!r}")
    if cfg.model.in_channels != 3:
        raise ConfigError("jsia takes RGB input (converted to gray inside): set model.in_channels=3")
    if cfg.data.height % 4 or cfg.data.width % 4:
        raise ConfigError(f"jsia needs data.height and data.width divisible by 4 (the content code is a quarter of the "
                          f"image), got {cfg.data.height}x{cfg.data.width}")
    if opts.upsample < 0 or opts.res_blocks < 1:
        raise ConfigError("method.upsample must be >= 0 and method.res_blocks >= 1")
    low = JSIA.min_input_size(cfg)
    if cfg.data.height < low[0] or cfg.data.width < low[1]:
        raise ConfigError(f"jsia's generators and discriminators need re-ID images of at least {low[0]}x{low[1]} with "
                          f"method.upsample={opts.upsample}, got data.height x data.width = "
                          f"{cfg.data.height}x{cfg.data.width}; enlarge them or raise method.upsample")


# ------------------------------------------------------------------ the official code's weights

_OFFICIAL_FILES = ("generator_rgb", "generator_ir", "discriminator_rgb", "discriminator_ir")  # model-0 .. model-3
_ENCODER = "mod_invar_enc."


def _official_encoder_key(key: str) -> str | None:
    """The name an encoder parameter of vireid's JSIA has in the official `Encoder` (None: not in it)."""
    parts = key.split(".")
    if parts[0] == "backbone":
        stage = parts[1]
        if stage == "stem":
            index = {"conv1": "0", "bn1": "1"}[parts[2]]
            return f"resnet_conv1.{index}." + ".".join(parts[3:])
        if parts[2] != "blocks":
            return None
        where = {"layer1": "resnet_conv1.3", "layer2": "resnet_conv2.0", "layer3": "resnet_conv2.1",
                 "layer4": "resnet_conv2.2"}[stage]
        return f"{where}." + ".".join(parts[3:])
    if parts[0] == "neck":
        return "classifier." + ".".join(parts[1:])  # neck.bn.* -> classifier.bn.*
    if parts[0] == "classifier":
        return "classifier.classifier." + ".".join(parts[2:])  # classifier.fc.weight -> classifier.classifier.weight
    return None


def official_key_map(method: JSIA) -> dict[str, tuple[int, str]]:
    """vireid key -> (official file index 0..3, official key) for every entry of `method.state_dict()`.

    The official code saves four DataParallel state dicts, model-0 ... model-3: generator_rgb, generator_ir,
    discriminator_rgb, discriminator_ir (keys prefixed "module."); each generator file also holds the shared
    encoder under "mod_invar_enc." (vireid reads it from model-0). Entries of switches the official code lacks
    (variation, local regions) have no official name and raise CheckpointError.
    """
    out: dict[str, tuple[int, str]] = {}
    for key in method.state_dict():
        root, _, rest = key.partition(".")
        if root in _OFFICIAL_FILES:
            out[key] = (_OFFICIAL_FILES.index(root), "module." + rest)
            continue
        official = _official_encoder_key(key)
        if official is None:
            raise CheckpointError(f"vireid's jsia has {key!r}, which the official code does not have (an NN-paper "
                                  "extra or another backbone); official weights load into the default jsia only")
        out[key] = (0, "module." + _ENCODER + official)
    return out


def load_official_weights(method: JSIA, files: list[str | Path] | str | Path, epoch: int | None = None) -> None:
    """Load the official code's four state-dict files (`model-{0..3}_{epoch}.pkl`, given as a folder and epoch or
    as four paths in that order) into `method`, strictly: every vireid entry must be found with its shape, and
    every official entry used (BatchNorm's num_batches_tracked, absent from old PyTorch saves, excepted)."""
    from ..runs.checkpoint import load_model_state, read_foreign_weights

    if isinstance(files, (str, Path)):
        folder = Path(files).expanduser()
        if epoch is None:
            raise CheckpointError(f"pass the epoch of the official files in {folder} (model-0_<epoch>.pkl, ...)")
        paths = [folder / f"model-{i}_{epoch}.pkl" for i in range(4)]
    else:
        paths = [Path(p).expanduser() for p in files]
        if len(paths) != 4:
            raise CheckpointError(f"the official JSIA weights are four files (model-0 .. model-3), got {len(paths)}")
    states = [read_foreign_weights(p, "official JSIA-ReID weights (model-<i>_<epoch>.pkl)") for p in paths]
    mapping = official_key_map(method)
    own = method.state_dict()
    state: dict[str, torch.Tensor] = {}
    used: set[tuple[int, str]] = set()
    for key, (index, official) in mapping.items():
        if official in states[index]:
            state[key] = states[index][official]
            used.add((index, official))
        elif key.endswith("num_batches_tracked"):
            state[key] = own[key]  # PyTorch < 0.4.1 saves had no counter
    unused = [f"{paths[i].name}:{k}" for i, s in enumerate(states) for k in s
              if (i, k) not in used and not (i == 1 and k.startswith("module." + _ENCODER))]
    if unused:
        raise CheckpointError(f"the official files hold entries vireid's jsia has no place for: {unused[:5]}"
                              f"{' ...' if len(unused) > 5 else ''}; were they saved by JSIA-ReID's code?")
    load_model_state(method, state, source=", ".join(str(p) for p in paths))


def official_state_dicts(method: JSIA) -> list[dict[str, torch.Tensor]]:
    """The inverse of `load_official_weights`: `method`'s weights as the four official state dicts."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(4)]
    mapping = official_key_map(method)
    for key, value in method.state_dict().items():
        index, official = mapping[key]
        out[index][official] = value
        if index == 0 and official.startswith("module." + _ENCODER):
            out[1][official] = value  # both generator files hold the shared encoder
    return out

