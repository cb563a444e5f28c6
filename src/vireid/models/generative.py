"""MUNIT-style image-generation blocks (JSIA-ReID's generators and discriminators; D2RL reuses them).

Attribute names and Sequential/ModuleList indices follow the official JSIA-ReID `core/networks.py`, so an
official generator or discriminator state dict maps onto these modules by a prefix substitution only
(`module.` of DataParallel; the generator's `mod_invar_enc.*` entries belong to the ReID encoder).
Submodules are registered in the official order, so from the same RNG state each module draws its initial
values in the same sequence as its official counterpart. See /work/shared/specs/methods/jsia.md §3.2.

The same blocks build UNIT's (Liu et al., NIPS 2017) VAE generator and multi-scale discriminator, used by
D2RL: `ContentEncoder`, `VAEGen` (keys as UNIT's `VAEGen`) and `MultiScaleDiscriminator` (as `MsImageDis`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core import ConfigError, TrainingError

PAD_TYPES = ("reflect", "replicate", "zero")
NORMS = ("none", "bn", "in", "ln", "adain")
ACTIVATIONS = ("relu", "lrelu", "tanh", "none")
LEAKY_SLOPE = 0.2


def _choice(where: str, name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{where}: {name} must be one of {allowed}, got {value!r}")
    return value


def _positive(where: str, **values: int) -> None:
    bad = {k: v for k, v in values.items() if int(v) < 1}
    if bad:
        raise ConfigError(f"{where}: {', '.join(f'{k}={v}' for k, v in bad.items())} must be >= 1")


def _pad(pad_type: str, padding: int) -> nn.Module:
    _choice("ConvBlock", "pad_type", pad_type, PAD_TYPES)
    if pad_type == "reflect":
        return nn.ReflectionPad2d(padding)
    if pad_type == "replicate":
        return nn.ReplicationPad2d(padding)
    return nn.ZeroPad2d(padding)


def _activation(where: str, activation: str) -> nn.Module | None:
    _choice(where, "activation", activation, ACTIVATIONS)
    if activation == "relu":
        return nn.ReLU()
    if activation == "lrelu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if activation == "tanh":
        return nn.Tanh()
    return None


class CodeLayerNorm(nn.Module):
    """y = (x - mean) / (std + eps) * gamma_c + beta_c; mean, unbiased std over all of (C, H, W) per sample.

    (B, C, ...) -> same shape. eps is added to the std, not the variance (official `LayerNorm`); gamma ~
    U(0, 1) and beta = 0 at construction (global RNG). A batch of one gives the same numbers as any other.
    Computed in float32 at least (a half-precision input under autocast gives a float32 output).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        _positive("CodeLayerNorm", num_features=num_features)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.affine = bool(affine)
        if self.affine:
            self.gamma = nn.Parameter(torch.empty(self.num_features).uniform_())
            self.beta = nn.Parameter(torch.zeros(self.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in >= float32 under autocast
        flat = x.reshape(x.shape[0], -1)
        per_sample = (-1,) + (1,) * (x.dim() - 1)
        mean = flat.mean(dim=1).view(per_sample)
        std = flat.std(dim=1).view(per_sample)  # unbiased (n - 1)
        y = (x - mean) / (std + self.eps)
        if self.affine:
            per_channel = (1, -1) + (1,) * (x.dim() - 2)
            y = y * self.gamma.view(per_channel) + self.beta.view(per_channel)
        return y


class AdaIN2d(nn.Module):
    """y = (x - mu_bc) / sqrt(var_bc + eps) * weight[b*C + c] + bias[b*C + c]; per-instance (H, W) stats.

    (B, C, H, W) -> same shape. `weight` and `bias` are plain (B*C,) tensors assigned before every forward
    (`assign_adain_params`), not parameters. Computed as F.batch_norm in training mode on x viewed as
    (1, B*C, H, W) (biased variance), in float32 at least (autocast-safe). `running_mean` (zeros) and
    `running_var` (ones) exist only so the official state dict loads: as in the official code, F.batch_norm
    updates B-fold repeated *copies* of them, so the buffers themselves never change and are never used.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        _positive("AdaIN2d", num_features=num_features)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None or self.bias is None:
            raise TrainingError("AdaIN2d: weight and bias are unset; call assign_adain_params(mlp(style), "
                                "decoder) before running the decoder")
        b, c = x.shape[0], x.shape[1]
        if c != self.num_features or self.weight.numel() != b * c or self.bias.numel() != b * c:
            raise TrainingError(f"AdaIN2d({self.num_features}): input has {c} channels and batch {b}, assigned "
                                f"weight/bias hold {self.weight.numel()}/{self.bias.numel()} values; expected "
                                f"{b} x {self.num_features} each (assign params from a style batch of {b})")
        dtype = torch.promote_types(x.dtype, torch.float32)  # one dtype for all inputs, also under autocast
        out = F.batch_norm(x.reshape(1, b * c, *x.shape[2:]).to(dtype), self.running_mean.repeat(b).to(dtype),
                           self.running_var.repeat(b).to(dtype), self.weight.to(dtype), self.bias.to(dtype),
                           True, self.momentum, self.eps)
        return out.view(x.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _norm(norm: str, dim: int) -> nn.Module | None:
    _choice("ConvBlock", "norm", norm, NORMS)
    if norm == "bn":
        return nn.BatchNorm2d(dim)
    if norm == "in":
        return nn.InstanceNorm2d(dim)
    if norm == "ln":
        return CodeLayerNorm(dim)
    if norm == "adain":
        return AdaIN2d(dim)
    return None


class ConvBlock(nn.Module):
    """y = act(norm(conv(pad(x)))): (B, in_dim, H, W) -> (B, out_dim, H', W'), H' = (H + 2p - k) // s + 1.

    pad: reflect / replicate / zero; conv has a bias and padding 0; norm: none, bn, in (affine-free),
    ln (`CodeLayerNorm`), adain (`AdaIN2d`); act: relu, lrelu (slope 0.2), tanh, none.
    State-dict keys: conv.weight, conv.bias, norm.* (official `Conv2dBlock`).
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, stride: int, padding: int,
                 norm: str = "none", activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        _positive("ConvBlock", in_dim=in_dim, out_dim=out_dim, kernel_size=kernel_size, stride=stride)
        # registered in the official order (pad, norm, activation, conv): same key order and RNG draws
        self.pad = _pad(pad_type, padding)
        self.norm = _norm(norm, out_dim)
        self.activation = _activation("ConvBlock", activation)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pad(x))
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class ResBlock(nn.Module):
    """y = x + B2(B1(x)), B1 = ConvBlock 3x3 (norm, act), B2 = ConvBlock 3x3 (norm, no act): shape kept."""

    def __init__(self, dim: int, norm: str = "in", activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        self.model = nn.Sequential(
            ConvBlock(dim, dim, 3, 1, 1, norm=norm, activation=activation, pad_type=pad_type),
            ConvBlock(dim, dim, 3, 1, 1, norm=norm, activation="none", pad_type=pad_type),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.model(x)


class ResBlocks(nn.Module):
    """num_blocks `ResBlock`s in sequence (`model`): (B, dim, H, W) -> (B, dim, H, W)."""

    def __init__(self, num_blocks: int, dim: int, norm: str = "in", activation: str = "relu",
                 pad_type: str = "reflect") -> None:
        super().__init__()
        _positive("ResBlocks", num_blocks=num_blocks)
        self.model = nn.Sequential(*(ResBlock(dim, norm, activation, pad_type) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LinearBlock(nn.Module):
    """y = act(x W^T + b): (B, in_dim) -> (B, out_dim); key names fc.weight, fc.bias."""

    def __init__(self, in_dim: int, out_dim: int, activation: str = "relu") -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim, bias=True)
        self.activation = _activation("LinearBlock", activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        return x if self.activation is None else self.activation(x)


class AdaINMLP(nn.Module):
    """y = L_n(...act(L_1(flatten(x)))): (B, input_dim, ...) -> (B, output_dim); no activation after L_n.

    n_blk linear layers input_dim -> dim -> ... -> dim -> output_dim (JSIA: 128 -> 256 -> 256 -> 2048).
    """

    def __init__(self, input_dim: int, output_dim: int, dim: int = 256, n_blk: int = 3,
                 activation: str = "relu") -> None:
        super().__init__()
        if n_blk < 2:
            raise ConfigError(f"AdaINMLP: n_blk must be >= 2 (first and last layer), got {n_blk}")
        blocks = [LinearBlock(input_dim, dim, activation)]
        blocks += [LinearBlock(dim, dim, activation) for _ in range(n_blk - 2)]
        blocks.append(LinearBlock(dim, output_dim, "none"))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], -1))


def _adain_layers(module: nn.Module) -> Iterator[AdaIN2d]:
    return (m for m in module.modules() if isinstance(m, AdaIN2d))


def num_adain_params(module: nn.Module) -> int:
    """sum over the AdaIN2d layers of `module` of 2 * num_features (a bias and a weight per channel)."""
    return sum(2 * m.num_features for m in _adain_layers(module))


def assign_adain_params(params: torch.Tensor, module: nn.Module) -> None:
    """Give each AdaIN2d (module order) bias = next C columns of params, weight = the C after; (B, N) in.

    The values of sample b land at index b*C + c. Trailing columns beyond num_adain_params(module) are
    ignored, as in the official code; fewer is an error.
    """
    needed = num_adain_params(module)
    if params.dim() != 2 or params.shape[1] < needed:
        raise TrainingError(f"assign_adain_params: expected (B, >= {needed}) AdaIN parameters for "
                            f"{type(module).__name__}, got shape {tuple(params.shape)}")
    start = 0
    for m in _adain_layers(module):
        c = m.num_features
        m.bias = params[:, start:start + c].reshape(-1)
        m.weight = params[:, start + c:start + 2 * c].reshape(-1)
        start += 2 * c


class StyleEncoder(nn.Module):
    """style = Conv1x1(GAP(convs(x))): (B, input_dim, H, W) -> (B, style_dim, 1, 1); no norm.

    convs: 7x7 s1 input_dim -> dim, 4x4 s2 dim -> 2dim -> 4dim, then (n_downsample - 2) 4x4 s2 4dim -> 4dim
    (official `ModSpecEncoderr`). `classifier` = Linear(style_dim, num_classes) is the official "predict"
    head, unused by any JSIA loss; it is kept so the official weights load, and only `predict` runs it.
    """

    def __init__(self, n_downsample: int = 4, input_dim: int = 3, dim: int = 32, style_dim: int = 128,
                 num_classes: int = 395, activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        if n_downsample < 2:
            raise ConfigError(f"StyleEncoder: n_downsample must be >= 2, got {n_downsample}")
        _positive("StyleEncoder", input_dim=input_dim, dim=dim, style_dim=style_dim, num_classes=num_classes)
        layers: list[nn.Module] = [ConvBlock(input_dim, dim, 7, 1, 3, "none", activation, pad_type)]
        for _ in range(2):
            layers.append(ConvBlock(dim, 2 * dim, 4, 2, 1, "none", activation, pad_type))
            dim *= 2
        layers += [ConvBlock(dim, dim, 4, 2, 1, "none", activation, pad_type) for _ in range(n_downsample - 2)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1, 1, 0)]
        self.model = nn.Sequential(*layers)
        self.classifier = nn.Linear(style_dim, num_classes)
        self.style_dim = int(style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(style (B, style_dim, 1, 1), logits (B, num_classes) = classifier(flatten(style)))."""
        style = self.model(x)
        return style, self.classifier(style.flatten(1))


class Decoder(nn.Module):
    """image = tanh(Conv7(ups(ResBlocks(content)))): (B, dim, h, w) -> (B, output_dim, h 2^n, w 2^n).

    ups = n_upsample x [nearest Upsample x2, ConvBlock 5x5 dim -> dim/2 with CodeLayerNorm + act].
    JSIA: (B, 256, 64, 32) -> (B, 3, 128, 64), 2 AdaIN residual blocks, 1 upsampling.
    """

    def __init__(self, n_upsample: int = 1, n_res: int = 2, dim: int = 256, output_dim: int = 3,
                 res_norm: str = "adain", activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        if n_upsample < 0 or dim % (2 ** n_upsample):
            raise ConfigError(f"Decoder: dim {dim} must be divisible by 2**n_upsample (n_upsample={n_upsample})")
        layers: list[nn.Module] = [ResBlocks(n_res, dim, res_norm, activation, pad_type)]
        for _ in range(n_upsample):
            layers += [nn.Upsample(scale_factor=2),
                       ConvBlock(dim, dim // 2, 5, 1, 2, norm="ln", activation=activation, pad_type=pad_type)]
            dim //= 2
        layers.append(ConvBlock(dim, output_dim, 7, 1, 3, norm="none", activation="tanh", pad_type=pad_type))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class AdaINGenerator(nn.Module):
    """JSIA's generator without its content encoder: decode(content, style) = dec_{AdaIN <- mlp(style)}(content).

    style(images (B, 3, H, W)) -> (B, style_dim, 1, 1); decode((B, content_dim, h, w), (B, style_dim, 1, 1))
    -> (B, 3, h 2^n, w 2^n) in [-1, 1] (JSIA: 64x32 content -> 128x64 image). The content encoder (the ReID
    network's set-level encoder, shared by both generators) belongs to the method. Default torch init.
    """

    def __init__(self, content_dim: int = 256, style_dim: int = 128, num_classes: int = 395,
                 n_downsample_style: int = 4, style_dim_base: int = 32, mlp_dim: int = 256, n_res: int = 2,
                 n_upsample: int = 1) -> None:
        super().__init__()
        self.content_dim = int(content_dim)
        self.style_dim = int(style_dim)
        self.mod_spec_enc = StyleEncoder(n_downsample_style, 3, style_dim_base, style_dim, num_classes)
        self.dec = Decoder(n_upsample, n_res, content_dim, 3, res_norm="adain")
        self.mlp = AdaINMLP(style_dim, num_adain_params(self.dec), mlp_dim, 3)

    def style(self, images: torch.Tensor) -> torch.Tensor:
        """Modality-specific (style) code: (B, 3, H, W) -> (B, style_dim, 1, 1)."""
        return self.mod_spec_enc(images)

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Assign the AdaIN parameters mlp(style) to dec, then image = dec(content)."""
        if content.dim() != 4 or content.shape[1] != self.content_dim or style.shape[0] != content.shape[0] \
                or style[0].numel() != self.style_dim:
            raise TrainingError(f"AdaINGenerator.decode: expected content (B, {self.content_dim}, h, w) and style "
                                f"(B, {self.style_dim}, 1, 1), got {tuple(content.shape)} and {tuple(style.shape)}")
        assign_adain_params(self.mlp(style), self.dec)
        return self.dec(content)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.decode(content, style)


def gaussian_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Every nn.Conv2d / nn.Linear in module: weight ~ N(0, std), bias = 0 (official weights_init('gaussian')).

    Draws from torch's global RNG in module order (the caller seeds); returns module.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.zero_()
    return module


def kaiming_init_(module: nn.Module) -> nn.Module:
    """Every nn.Conv2d / nn.Linear in module: weight ~ N(0, 2 / fan_in), bias = 0 (UNIT weights_init('kaiming')).

    kaiming_normal_(a=0, mode="fan_in"); draws from torch's global RNG in module order; returns module.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                if m.bias is not None:
                    m.bias.zero_()
    return module


class MultiScaleDiscriminator(nn.Module):
    """LSGAN patch discriminator at num_scales scales: (B, input_dim, H, W) -> [(B, 1, H/2^n, W/2^n), ...].

    Per scale (`cnns[s]`): ConvBlock 4x4 s2 input_dim -> dim (lrelu 0.2, no norm), (n_layer - 1) ConvBlocks
    4x4 s2 doubling the width, Conv1x1 -> 1; x is average-pooled (3, s2, pad 1, count_include_pad=False)
    between scales. JSIA (n_layer 4, dim 32, 2 scales) on 128x64: patch maps 8x4 and 4x2.
    Init: `gaussian_init_` (N(0, 0.02) weights, zero biases, global RNG).
    """

    def __init__(self, n_layer: int = 4, dim: int = 32, num_scales: int = 2, input_dim: int = 3,
                 pad_type: str = "reflect") -> None:
        super().__init__()
        _positive("MultiScaleDiscriminator", n_layer=n_layer, dim=dim, num_scales=num_scales, input_dim=input_dim)
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.cnns = nn.ModuleList(self._scale(n_layer, dim, input_dim, pad_type) for _ in range(num_scales))
        gaussian_init_(self)

    @staticmethod
    def _scale(n_layer: int, dim: int, input_dim: int, pad_type: str) -> nn.Sequential:
        layers: list[nn.Module] = [ConvBlock(input_dim, dim, 4, 2, 1, "none", "lrelu", pad_type)]
        for _ in range(n_layer - 1):
            layers.append(ConvBlock(dim, 2 * dim, 4, 2, 1, "none", "lrelu", pad_type))
            dim *= 2
        layers.append(nn.Conv2d(dim, 1, 1, 1, 0))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, cnn in enumerate(self.cnns):
            if i:
                x = self.downsample(x)
            outputs.append(cnn(x))
        return outputs


class ContentEncoder(nn.Module):
    """(B, input_dim, H, W) -> (B, dim * 2^n_downsample, H', W'); each of the n stride-2 steps maps H to
    (H + 2 - 4) // 2 + 1 (228 -> 114 -> 57, 256 -> 128 -> 64).

    `model` = [ConvBlock 7x7 s1 p3 input_dim -> dim, n_downsample x ConvBlock 4x4 s2 p1 doubling the width,
    ResBlocks(n_res, width)], all with `norm` and `activation` (last conv of each residual block without
    activation); `output_dim` = dim * 2^n_downsample. Keys as UNIT/MUNIT's `ContentEncoder`.
    """

    def __init__(self, n_downsample: int = 2, n_res: int = 4, input_dim: int = 3, dim: int = 64,
                 norm: str = "in", activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        if n_downsample < 0:
            raise ConfigError(f"ContentEncoder: n_downsample must be >= 0, got {n_downsample}")
        _positive("ContentEncoder", n_res=n_res, input_dim=input_dim, dim=dim)
        layers: list[nn.Module] = [ConvBlock(input_dim, dim, 7, 1, 3, norm, activation, pad_type)]
        for _ in range(n_downsample):
            layers.append(ConvBlock(dim, 2 * dim, 4, 2, 1, norm, activation, pad_type))
            dim *= 2
        layers.append(ResBlocks(n_res, dim, norm, activation, pad_type))
        self.model = nn.Sequential(*layers)
        self.output_dim: int = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class VAEGen(nn.Module):
    """UNIT's VAE generator: mu = enc(x) (B, dim 2^n, H', W'); image = dec(z) (B, input_dim, H' 2^n, W' 2^n) in [-1, 1].

    enc = ContentEncoder with instance norm; dec = Decoder with instance-norm residual blocks, n_downsample
    (nearest x2 + 5x5 conv + CodeLayerNorm) upsamplings and a tanh 7x7 conv. The latent is N(mu, I):
    `reparameterize` adds unit-variance noise; `forward` decodes the mean (no noise). Init: `kaiming_init_`.
    State-dict keys equal UNIT's default `VAEGen` (enc.*, dec.*).
    """

    def __init__(self, input_dim: int = 3, dim: int = 64, n_downsample: int = 2, n_res: int = 4,
                 activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        self.enc = ContentEncoder(n_downsample, n_res, input_dim, dim, "in", activation, pad_type)
        self.dec = Decoder(n_upsample=n_downsample, n_res=n_res, dim=self.enc.output_dim, output_dim=input_dim,
                           res_norm="in", activation=activation, pad_type=pad_type)
        kaiming_init_(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent mean mu = enc(x): (B, input_dim, H, W) -> (B, enc.output_dim, H', W')."""
        return self.enc(x)

    def reparameterize(self, mu: torch.Tensor) -> torch.Tensor:
        """z = mu + eps, eps ~ N(0, I) of mu's shape (global torch RNG; the caller seeds)."""
        return mu + torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """image = dec(z) in [-1, 1]: (B, enc.output_dim, h, w) -> (B, input_dim, h 2^n, w 2^n)."""
        return self.dec(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
