"""D2RL (Wang et al., CVPR 2019): dual-level discrepancy reduction; docs/methods/d2rl.md.

There is no official code. The image-level sub-network T_I is UNIT (two VAEs with unit-variance latents and two
multi-scale discriminators, UNIT's PyTorch code); the feature-level sub-network T_F is a ResNet whose conv1 takes
4 channels, with HHL/open-reid's head (FC-1024, BN, ReLU, a 128-d triplet head, dropout, a classifier).

One iteration (`training_step`) on a batch of visible images x and infrared images y, all in [-1, 1] for T_I:
- T_I: mu = E(image), z = mu + eps; reconstructions G_v(z_v), G_i(z_i); translations x_hat = G_i(z_v) (visible ->
  infrared) and y_hat = G_v(z_i); cycles G_v(E_i(x_hat) + eps), G_i(E_v(y_hat) + eps);
- the discriminators step first on the detached translations against the real images (UNIT: one D update, then
  one G update per iteration); then
- L_I = sum over both domains of lambda0 KL(mu) + lambda1 |rec - real|_1 + lambda2 GAN_G + lambda3 |cyc - real|_1
  (+ the cycle latents' KL), L_F = lambda4 CE + lambda5 batch-hard triplet on the multi-spectral images
  [x, x_hat] and [y_hat, y], and (1 - gamma) L_I + gamma L_F steps T_I and T_F together: L_F reaches T_I through
  the translated channels. An optional first phase trains T_I alone (`ti_pretrain_epochs`).
Every value the paper leaves open is an option with its default stated (`D2RLOptions`, docs/methods/d2rl.md).
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
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..losses import batch_hard_triplet, cross_entropy
from ..losses.d2rl import feature_level_loss, image_level_loss, joint_objective
from ..losses.generative import (
    l1_reconstruction,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    nsgan_discriminator_loss,
    nsgan_generator_loss,
    unit_kl,
)
from ..models import BNNeck, Classifier, ResNetBackbone, Stem
from ..models.generative import MultiScaleDiscriminator, VAEGen
from ..registry import register_method
from ..utils.tensors import modality_codes
from .base import DataParallel, InferenceSpec, Method, MethodOptions, OptimizerEntry, Stepper
from .generative import (
    adam_betas,
    check_betas,
    check_choices,
    discriminator_min_side,
    from_gan_image,
    to_gan_image,
    translation_images,
)

GAN_KINDS = ("nsgan", "lsgan")
IR_CHANNELS = ("mean", "0", "1", "2")
HEAD_ORDERS = ("paper", "hhl")
HEADS = ("hhl", "bnneck")
IR_FILTER_INITS = ("rgb_mean", "zero")
# the 4th (infrared) input channel is normalised with the mean of ImageNet's channel statistics [vireid]
IR_MEAN = sum(IMAGENET_MEAN) / 3
IR_STD = sum(IMAGENET_STD) / 3


@dataclass
class D2RLOptions(MethodOptions):
    """D2RL's options: [paper] values, UNIT's code for T_I's architecture, [vireid] where neither gives one."""

    name: str = "d2rl"
    # joint objective (1 - gamma) L_I + gamma L_F; the paper sweeps gamma (Fig. 5) without printing it [vireid 0.5]
    gamma: float = 0.5
    # L_I weights [paper, "following UNIT"]
    weight_kl: float = 0.1  # lambda0
    weight_recon: float = 100.0  # lambda1
    weight_gan: float = 10.0  # lambda2
    weight_cycle: float = 100.0  # lambda3
    weight_cycle_kl: float = 0.1  # UNIT's KL on the cycle latents (kl_cyc 0.01 x 10); not in the paper [vireid]
    gan_kind: str = "nsgan"  # nsgan: the paper's log-likelihood GAN (Eq. 2) | lsgan: UNIT's code
    # L_F [paper]
    weight_ce: float = 10.0  # lambda4
    weight_triplet: float = 10.0  # lambda5
    margin: float = 0.8
    # T_F's head. hhl [paper, HHL/open-reid]: FC-1024, BN, ReLU, dropout 0.5, a 128-d triplet head, a classifier.
    # bnneck [vireid, the synthetic CPU preset only]: the triplet on the pooled feature, a bias-free BN-neck and a
    # bias-free classifier (the baseline's head): a from-scratch T_F under Adam learns ~3x slower with hhl's
    # ReLU'd head (docs/methods/d2rl.md, "What the synthetic runs showed")
    head: str = "hhl"
    feature_dim: int = 1024
    triplet_dim: int = 128
    dropout: float = 0.5
    head_order: str = "paper"  # paper: dropout before both heads | hhl: the triplet head before dropout
    ir_channel: str = "mean"  # the 4th channel from a 3-channel infrared image: mean of its channels, or one index
    ir_filter_init: str = "rgb_mean"  # conv1's 4th-channel filters: the mean of the RGB filters | zero
    # T_I (UNIT's default generator and discriminator)
    gen_dim: int = 64
    gen_downsample: int = 2
    gen_res_blocks: int = 4
    share_latent: bool = False  # UNIT's NIPS paper: share E's last and G's first residual block between domains
    disc_dim: int = 64
    disc_layers: int = 4
    disc_scales: int = 3
    # optimisers [paper: Adam, lr 2e-4, betas (0.5, 0.999)]; T_F uses optim.lr / optim.weight_decay
    betas_reid: list = dataclasses.field(default_factory=lambda: [0.5, 0.999])
    lr_gan: float = 2.0e-4
    betas_gan: list = dataclasses.field(default_factory=lambda: [0.5, 0.999])
    weight_decay_gan: float = 1.0e-4  # UNIT's
    # phases [vireid]: T_I alone for this many epochs (the paper pretrains on Market-1501, which vireid cannot)
    ti_pretrain_epochs: int = 0
    # D/G alternation [vireid, UNIT's]: a discriminator update before the joint update on every dis_every-th iteration
    dis_every: int = 1


def infrared_channel(image: torch.Tensor, rule: str) -> torch.Tensor:
    """One channel of a 3-channel [-1, 1] infrared image: the mean of its channels, or channel int(rule)."""
    return image.mean(dim=1, keepdim=True) if rule == "mean" else image[:, int(rule):int(rule) + 1]


def multispectral(rgb: torch.Tensor, ir: torch.Tensor, ir_rule: str = "mean") -> torch.Tensor:
    """T_F's input [rgb, ir] from two [-1, 1] images (B, 3, H, W): RGB ImageNet-normalised, the infrared channel
    normalised with (IR_MEAN, IR_STD) -> (B, 4, H, W)."""
    colour = from_gan_image(rgb)
    infrared = ((infrared_channel(ir, ir_rule) + 1.0) / 2.0 - IR_MEAN) / IR_STD
    return torch.cat([colour, infrared], dim=1)


@register_method("d2rl")
class D2RL(Method):
    """T_I (two UNIT VAEs and two discriminators) cascaded into T_F (a 4-channel ResNet with HHL's head)."""

    Options = D2RLOptions

    def __init__(self, cfg: Any, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        opts: D2RLOptions = cfg.method
        _validate(opts, cfg)
        self.generator_rgb = VAEGen(3, opts.gen_dim, opts.gen_downsample, opts.gen_res_blocks)
        self.generator_ir = VAEGen(3, opts.gen_dim, opts.gen_downsample, opts.gen_res_blocks)
        if opts.share_latent:
            # one module object in both places: its parameters are shared (and saved under both names)
            _share_latent_blocks(self.generator_rgb, self.generator_ir)
        self.discriminator_rgb = MultiScaleDiscriminator(opts.disc_layers, opts.disc_dim, opts.disc_scales)
        self.discriminator_ir = MultiScaleDiscriminator(opts.disc_layers, opts.disc_dim, opts.disc_scales)
        self.backbone = ResNetBackbone.from_config(cfg.model)
        if self.backbone.modality_specific:
            raise ConfigError("d2rl's T_F is one network for both modalities: set model.modality_specific=[]")
        if opts.ir_filter_init == "zero":
            self._zero_ir_filters()
        self.dim = self.backbone.out_channels
        self.classifier: nn.Module
        if opts.head == "bnneck":
            self.neck = BNNeck(self.dim, bias_frozen=True, weight_init="kaiming")
            self.classifier = Classifier(self.dim, num_classes, bias=False, init_std=0.001)
            return
        # HHL's head (names as open-reid's ResNet: feat, feat_bn, triplet, drop, classifier)
        self.feat = nn.Linear(self.dim, opts.feature_dim)
        self.feat_bn = nn.BatchNorm1d(opts.feature_dim)
        self.triplet = nn.Linear(opts.feature_dim, opts.triplet_dim)
        self.drop = nn.Dropout(opts.dropout)
        classifier = nn.Linear(opts.feature_dim, num_classes)
        self.classifier = classifier
        nn.init.kaiming_normal_(self.feat.weight, mode="fan_out")
        nn.init.zeros_(self.feat.bias)
        nn.init.ones_(self.feat_bn.weight)
        nn.init.zeros_(self.feat_bn.bias)
        for head in (self.triplet, classifier):
            nn.init.normal_(head.weight, std=0.001)
            nn.init.zeros_(head.bias)

    @classmethod
    def min_input_size(cls, cfg: Any) -> tuple[int, int]:
        """Every reflect-padded conv of the discriminators needs an input wider than its padding: images of at least
        2**(disc_layers + disc_scales - 1) pixels a side; the encoder needs 4 * 2**gen_downsample."""
        opts = cfg.method
        side = max(discriminator_min_side(opts.disc_layers, opts.disc_scales), 4 * 2 ** opts.gen_downsample)
        return side, side

    def load_pretrained(self) -> list:
        reports = super().load_pretrained()
        if self.cfg.method.ir_filter_init == "zero":
            self._zero_ir_filters()
        return reports

    def _zero_ir_filters(self) -> None:
        stem = cast(Stem, self.backbone.stem)
        with torch.no_grad():
            stem.conv1.weight[:, 3:].zero_()

    # ---- T_F
    def head_parameters(self) -> list[nn.Parameter]:
        if self.cfg.method.head == "bnneck":
            return [*self.neck.parameters(), *self.classifier.parameters()]
        return [*self.feat.parameters(), *self.feat_bn.parameters(), *self.triplet.parameters(),
                *self.classifier.parameters()]

    def features(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """T_F on multi-spectral images (B, 4, H, W): pool (B, 2048) GAP, f (B, 1024) = ReLU(BN(FC(pool))) (the
        descriptor), triplet (B, 128) = H_t, logits (B, N) = H_c, with dropout where `head_order` puts it.
        head=bnneck: f = BN-neck(pool) (B, 2048), triplet = pool, logits = classifier(f)."""
        fmap = self.backbone(u, Modality.VISIBLE)  # one-stream: the modality picks nothing
        pool = fmap.mean(dim=(2, 3))
        if self.cfg.method.head == "bnneck":
            f = self.neck(pool)
            return {"pool": pool, "f": f, "triplet": pool, "logits": self.classifier(f)}
        f = F.relu(self.feat_bn(self.feat(pool)))
        dropped = self.drop(f)
        trip = self.triplet(f if self.cfg.method.head_order == "hhl" else dropped)
        return {"pool": pool, "f": f, "triplet": trip, "logits": self.classifier(dropped)}

    # ---- T_I
    def translate(self, rgb: torch.Tensor, ir: torch.Tensor, *, sample: bool = True) -> dict[str, torch.Tensor]:
        """Every image of one T_I pass on visible `rgb` and infrared `ir` images in [-1, 1] (any counts): latent
        means, reconstructions, translations (fake_ir = G_i(z_v), fake_rgb = G_v(z_i)), cycle latents and cycles.
        `sample`: decode mu + eps (UNIT's training); otherwise mu (UNIT's test-time translation)."""
        g_rgb, g_ir = self.generator_rgb, self.generator_ir

        def z(mu: torch.Tensor, gen: VAEGen) -> torch.Tensor:
            return gen.reparameterize(mu) if sample else mu

        out: dict[str, torch.Tensor] = {"rgb": rgb, "ir": ir}
        out["mu_rgb"], out["mu_ir"] = g_rgb.encode(rgb), g_ir.encode(ir)
        z_rgb, z_ir = z(out["mu_rgb"], g_rgb), z(out["mu_ir"], g_ir)
        out["rec_rgb"], out["rec_ir"] = g_rgb.decode(z_rgb), g_ir.decode(z_ir)
        out["fake_ir"], out["fake_rgb"] = g_ir.decode(z_rgb), g_rgb.decode(z_ir)
        out["mu_rgb2"], out["mu_ir2"] = g_ir.encode(out["fake_ir"]), g_rgb.encode(out["fake_rgb"])
        out["cyc_rgb"] = g_rgb.decode(z(out["mu_rgb2"], g_ir))
        out["cyc_ir"] = g_ir.decode(z(out["mu_ir2"], g_rgb))
        return out

    def _gan_losses(self) -> tuple[Any, Any]:
        if self.cfg.method.gan_kind == "lsgan":
            return lsgan_generator_loss, lsgan_discriminator_loss
        return nsgan_generator_loss, nsgan_discriminator_loss

    def image_loss(self, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """L_I and its terms (each summed over the two domains, unweighted) from a `translate` pass."""
        opts: D2RLOptions = self.cfg.method
        gen_loss, _ = self._gan_losses()
        terms = {
            "kl": unit_kl(t["mu_rgb"]) + unit_kl(t["mu_ir"]),
            "recon": l1_reconstruction(t["rec_rgb"], t["rgb"]) + l1_reconstruction(t["rec_ir"], t["ir"]),
            "gan": gen_loss(self.discriminator_ir(t["fake_ir"])) + gen_loss(self.discriminator_rgb(t["fake_rgb"])),
            "cycle": l1_reconstruction(t["cyc_rgb"], t["rgb"]) + l1_reconstruction(t["cyc_ir"], t["ir"]),
            "cycle_kl": unit_kl(t["mu_rgb2"]) + unit_kl(t["mu_ir2"]),
        }
        terms["L_I"] = image_level_loss(terms["kl"], terms["recon"], terms["gan"], terms["cycle"], terms["cycle_kl"],
                                        weight_kl=opts.weight_kl, weight_recon=opts.weight_recon,
                                        weight_gan=opts.weight_gan, weight_cycle=opts.weight_cycle,
                                        weight_cycle_kl=opts.weight_cycle_kl)
        return terms

    def discriminator_loss(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """lambda2 x the discriminators' GAN loss: detached translations against the real images, both domains."""
        _, dis_loss = self._gan_losses()
        fake_ir, fake_rgb = t["fake_ir"].detach(), t["fake_rgb"].detach()
        return self.cfg.method.weight_gan * (
            dis_loss(self.discriminator_ir(fake_ir), self.discriminator_ir(t["ir"]))
            + dis_loss(self.discriminator_rgb(fake_rgb), self.discriminator_rgb(t["rgb"])))

    # ---- optimizers and training
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """gen: both VAEs (T_I's generators); dis: both discriminators; reid: T_F (backbone and head)."""
        gen = list({id(p): p for p in [*self.generator_rgb.parameters(), *self.generator_ir.parameters()]}.values())
        dis = [*self.discriminator_rgb.parameters(), *self.discriminator_ir.parameters()]
        reid = [*self.backbone.parameters(), *self.head_parameters()]
        return {"gen": gen, "dis": dis, "reid": reid}

    def data_parallel(self) -> DataParallel:
        """Explicit gradient averaging, not DDP: one iteration backs up two objectives into three optimizers (the
        discriminators every `dis_every`-th step, then the generators with T_F), from one translation pass."""
        return DataParallel(ddp=False)

    def optimizers(self) -> dict[str, OptimizerEntry]:
        """Adam x 3 [paper: lr 2e-4, betas (0.5, 0.999)]: gen and dis at lr_gan with UNIT's weight decay 1e-4; reid
        (T_F): its head at optim.lr, its backbone at optim.lr x optim.backbone_lr_mult, weight decay
        optim.weight_decay; all on the schedule of optim."""
        from ..optim import build_scheduler

        opts: D2RLOptions = self.cfg.method
        lr, mult = self.cfg.optim.lr, self.cfg.optim.backbone_lr_mult
        head = {id(p) for p in self.head_parameters()}
        out: dict[str, OptimizerEntry] = {}
        for name, params in self.parameter_groups().items():
            trainable = [p for p in params if p.requires_grad]
            if name == "reid":  # the backbone at lr x backbone_lr_mult, the new head layers at lr
                groups = [{"params": [p for p in trainable if id(p) not in head], "lr": lr * mult},
                          {"params": [p for p in trainable if id(p) in head], "lr": lr}]
                opt = torch.optim.Adam(groups, lr=lr, betas=adam_betas(opts.betas_reid),
                                       weight_decay=self.cfg.optim.weight_decay)
            else:
                opt = torch.optim.Adam(trainable, lr=opts.lr_gan, betas=adam_betas(opts.betas_gan),
                                       weight_decay=opts.weight_decay_gan)
            out[name] = (opt, build_scheduler(opt, self.cfg.optim))
        return out

    def feature_loss(self, t: dict[str, torch.Tensor], labels_rgb: torch.Tensor, labels_ir: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """L_F = lambda4 CE(H_c) + lambda5 batch-hard triplet(H_t) on [x, x_hat] (visible) and [y_hat, y]
        (infrared), which keeps the translations in the graph: L_F's gradient reaches T_I."""
        opts: D2RLOptions = self.cfg.method
        u = torch.cat([multispectral(t["rgb"], t["fake_ir"], opts.ir_channel),
                       multispectral(t["fake_rgb"], t["ir"], opts.ir_channel)])
        labels = torch.cat([labels_rgb, labels_ir])
        out = self.features(u)
        ce = cross_entropy(out["logits"], labels)
        tri = batch_hard_triplet(out["triplet"], labels, margin=opts.margin)
        with torch.no_grad():
            acc = (out["logits"].argmax(1) == labels).float().mean()
        return {"ce": ce, "triplet": tri, "L_F": feature_level_loss(ce, tri, opts.weight_ce, opts.weight_triplet),
                "acc": acc}

    def training_step(self, batch: Batch, step: Stepper) -> dict[str, float]:
        """One D update on the detached translations (every `dis_every`-th iteration), then one joint update of T_I
        and T_F (T_I alone during the first `ti_pretrain_epochs` epochs)."""
        opts: D2RLOptions = self.cfg.method
        vis, ir = batch.visible_mask, batch.infrared_mask
        if not bool(vis.any()) or not bool(ir.any()):
            raise TrainingError("d2rl needs visible and infrared images in every batch (T_I translates each into "
                                "the other); use sampler.kind=agw")
        images = to_gan_image(batch.images)
        t = self.translate(images[vis], images[ir], sample=True)

        step.zero_grad()
        dis = self.discriminator_loss(t)
        if step.global_step % opts.dis_every == 0:
            step.backward(dis, parts={"dis": dis}, what="the discriminator loss")
            step.step_optimizers("dis")

        step.zero_grad()
        terms = self.image_loss(t)
        scalars = {k: float(v.detach()) for k, v in terms.items()} | {"dis": float(dis.detach())}
        if step.epoch < opts.ti_pretrain_epochs:
            step.backward(terms["L_I"], parts=terms, what="the image-level loss")
            step.step_optimizers("gen")
            return scalars
        feats = self.feature_loss(t, batch.labels[vis], batch.labels[ir])
        total = joint_objective(terms["L_I"], feats["L_F"], opts.gamma)
        step.backward(total, parts={**terms, "ce": feats["ce"], "triplet": feats["triplet"]},
                      what="the joint objective")
        step.step_optimizers("gen", "reid")
        return scalars | {"ce": float(feats["ce"].detach()), "triplet": float(feats["triplet"].detach()),
                          "L_F": float(feats["L_F"].detach()), "acc": float(feats["acc"])}

    # ---- inference
    def inference_spec(self) -> InferenceSpec:
        """RGB ImageNet input; the path depends on the modality (visible: [x, G_i(E_v(x))]; infrared:
        [G_v(E_i(y)), y]); the reported feature is bn = the descriptor f (hhl: 1024-d; bnneck: the BN-neck output)."""
        return InferenceSpec(modality_specific=True, feature="bn")

    def _multispectral_of(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        g = to_gan_image(images)
        rule = self.cfg.method.ir_channel
        if modality is Modality.VISIBLE:
            return multispectral(g, self.generator_ir.decode(self.generator_rgb.encode(g)), rule)
        return multispectral(self.generator_rgb.decode(self.generator_ir.encode(g)), g, rule)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        """bn: the descriptor f of the image made multi-spectral through T_I (latent means, no noise); pool: T_F's
        GAP feature; triplet (head=hhl): H_t. All L2-normalised; the kinds are `feature_dims`'s."""
        if isinstance(modality, (Modality, str)):
            u = self._multispectral_of(images, Modality.parse(modality))
        else:
            codes = modality_codes(modality, images.shape[0], images.device)
            infrared = (codes == Modality.INFRARED.code).view(-1, 1, 1, 1)
            u = torch.where(infrared, self._multispectral_of(images, Modality.INFRARED),
                            self._multispectral_of(images, Modality.VISIBLE))
        out = self.features(u)
        return {kind: F.normalize(out["f" if kind == "bn" else kind].float(), dim=1) for kind in self.feature_dims()}

    def feature_dims(self) -> dict[str, int]:
        """bn (the descriptor f), pool, and with head=hhl triplet (H_t); bnneck's triplet feature is pool itself."""
        opts: D2RLOptions = self.cfg.method
        if opts.head == "bnneck":
            return {"bn": self.dim, "pool": self.dim}
        return {"bn": opts.feature_dim, "pool": self.dim, "triplet": opts.triplet_dim}

    @torch.no_grad()
    def image_translations(self, images: torch.Tensor, modality: Modality | torch.Tensor) -> dict[str, torch.Tensor]:
        """For ImageNet-normalised images of both modalities (one code per image), the i-th visible beside the i-th
        infrared image, in [0, 1], (n, 3, H, W) each: real_*, reconstructed_*, fake_infrared (= G_i(E_v(x))),
        fake_visible (= G_v(E_i(y))), cycle_* (latent means, no noise)."""
        codes = modality_codes(modality, images.shape[0], images.device, per_item=True)
        vis = images[codes == Modality.VISIBLE.code]
        ir = images[codes == Modality.INFRARED.code]
        n = min(len(vis), len(ir))
        if n == 0:
            raise ValueError("image_translations needs images of both modalities (one row per visible/infrared pair)")
        was_training = self.training
        self.eval()
        try:
            t = self.translate(to_gan_image(vis[:n]), to_gan_image(ir[:n]), sample=False)
        finally:
            self.train(was_training)
        return translation_images(t)


def _share_latent_blocks(rgb: VAEGen, ir: VAEGen) -> None:
    """UNIT's NIPS weight sharing: the encoders' last residual block and the decoders' first one become one module
    each (ir's copies are replaced by rgb's), so their parameters are shared."""
    enc_rgb, enc_ir = cast(nn.Sequential, rgb.enc.model[-1].model), cast(nn.Sequential, ir.enc.model[-1].model)
    dec_rgb, dec_ir = cast(nn.Sequential, rgb.dec.model[0].model), cast(nn.Sequential, ir.dec.model[0].model)
    enc_ir[len(enc_ir) - 1] = enc_rgb[len(enc_rgb) - 1]
    dec_ir[0] = dec_rgb[0]


def _validate(opts: D2RLOptions, cfg: Any) -> None:
    check_choices({"gan_kind": (opts.gan_kind, GAN_KINDS), "ir_channel": (str(opts.ir_channel), IR_CHANNELS),
                   "head_order": (opts.head_order, HEAD_ORDERS), "head": (opts.head, HEADS),
                   "ir_filter_init": (opts.ir_filter_init, IR_FILTER_INITS)})
    opts.ir_channel = str(opts.ir_channel)
    if not 0.0 < opts.gamma < 1.0:
        raise ConfigError(f"method.gamma must be in (0, 1) (the paper's 0 < gamma < 1), got {opts.gamma}")
    if not 0.0 <= opts.dropout < 1.0:
        raise ConfigError(f"method.dropout must be in [0, 1), got {opts.dropout}")
    for key in ("feature_dim", "triplet_dim", "gen_dim", "gen_downsample", "gen_res_blocks", "disc_dim",
                "disc_layers", "disc_scales", "dis_every"):
        if getattr(opts, key) < 1:
            raise ConfigError(f"method.{key} must be >= 1, got {getattr(opts, key)}")
    if opts.ti_pretrain_epochs < 0:
        raise ConfigError(f"method.ti_pretrain_epochs must be >= 0, got {opts.ti_pretrain_epochs}")
    check_betas(opts, "betas_reid", "betas_gan")
    if cfg.optim.name != "adam":
        raise ConfigError(f"d2rl trains with Adam (as the paper): set optim.name=adam, got {cfg.optim.name!r}")
    if cfg.model.in_channels != 4:
        raise ConfigError(f"d2rl's T_F takes 4-channel multi-spectral images: set model.in_channels=4, got "
                          f"{cfg.model.in_channels}")
    step = 2 ** opts.gen_downsample
    if cfg.data.height % step or cfg.data.width % step:
        raise ConfigError(f"d2rl needs data.height and data.width divisible by 2**method.gen_downsample = {step} "
                          f"(the translations must come back at the input size), got "
                          f"{cfg.data.height}x{cfg.data.width}")
    low = D2RL.min_input_size(cfg)
    if cfg.data.height < low[0] or cfg.data.width < low[1]:
        raise ConfigError(f"d2rl's discriminators need images of at least {low[0]}x{low[1]} with "
                          f"method.disc_layers={opts.disc_layers} and method.disc_scales={opts.disc_scales}, got "
                          f"data.height x data.width = {cfg.data.height}x{cfg.data.width}; enlarge them or lower "
                          "method.disc_scales")


# ------------------------------------------------------------------ UNIT's weights

def load_unit_weights(method: D2RL, gen_file: str | Path, dis_file: str | Path | None = None,
                      visible: str = "a") -> None:
    """Load T_I from UNIT's official checkpoints: `gen_<iter>.pt` = {"a": VAEGen state, "b": ...} and optionally
    `dis_<iter>.pt` = {"a": MsImageDis state, "b": ...}; `visible` names the domain ("a" or "b") that holds the
    visible images. The names are UNIT's own (docs/methods/d2rl.md); loading is strict, per module."""
    from ..runs.checkpoint import read_foreign_weights

    if visible not in ("a", "b"):
        raise CheckpointError(f"visible must be 'a' or 'b' (UNIT's domain of the visible images), got {visible!r}")
    infrared = "b" if visible == "a" else "a"
    pairs: list[tuple[Path, nn.Module, nn.Module]] = [
        (Path(gen_file).expanduser(), method.generator_rgb, method.generator_ir)]
    if dis_file is not None:
        pairs.append((Path(dis_file).expanduser(), method.discriminator_rgb, method.discriminator_ir))
    for path, rgb_module, ir_module in pairs:
        state = read_foreign_weights(path, "a UNIT checkpoint (gen_<iter>.pt or dis_<iter>.pt)")
        if not isinstance(state, dict) or not {"a", "b"} <= set(state):
            raise CheckpointError(f"{path} is not a UNIT checkpoint: expected a dict with state dicts under 'a' and "
                                  f"'b', got keys {sorted(state)[:5] if isinstance(state, dict) else type(state)}")
        for module, domain in ((rgb_module, visible), (ir_module, infrared)):
            missing, unexpected = _compare(module.state_dict(), state[domain])
            if missing or unexpected:
                raise CheckpointError(f"{path} [{domain!r}] does not fit {type(module).__name__} with this config: "
                                      f"missing {missing[:3]}, unexpected {unexpected[:3]}; check method.gen_* / "
                                      "method.disc_* against the UNIT config that saved it")
            module.load_state_dict(state[domain], strict=True)


def _compare(own: dict[str, torch.Tensor], theirs: dict[str, Any]) -> tuple[list[str], list[str]]:
    missing = [k for k in own if k not in theirs or tuple(theirs[k].shape) != tuple(own[k].shape)]
    unexpected = [k for k in theirs if k not in own]
    return missing, unexpected
