"""UNIT building blocks for D2RL: ContentEncoder, VAEGen, the multi-scale discriminator, unit_kl, nsgan losses.

The official names below were written from a reading of UNIT's networks.py (VAEGen with the default
`configs/unit_*.yaml` gen options: dim 64, n_downsample 2, n_res 4; MsImageDis with dim 64, n_layer 4,
norm none, num_scales 3) and are built here independently of vireid's modules.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vireid.core import ConfigError, TrainingError
from vireid.losses import nsgan_discriminator_loss, nsgan_generator_loss, unit_kl
from vireid.models import ContentEncoder, MultiScaleDiscriminator, VAEGen, kaiming_init_

LN2 = math.log(2.0)


# ---------------------------------------------------------------- official UNIT state-dict structure

Keys = list[tuple[str, tuple[int, ...]]]


def _block(prefix: str, out_c: int, in_c: int, k: int, layer_norm: bool = False) -> Keys:
    # Conv2dBlock registers pad, norm, activation, conv: a LayerNorm's gamma/beta precede the conv;
    # InstanceNorm2d (affine off, no running stats) and "none" hold no state.
    keys: Keys = [(f"{prefix}.norm.gamma", (out_c,)), (f"{prefix}.norm.beta", (out_c,))] if layer_norm else []
    return keys + [(f"{prefix}.conv.weight", (out_c, in_c, k, k)), (f"{prefix}.conv.bias", (out_c,))]


def _official_vaegen_keys() -> Keys:
    keys = _block("enc.model.0", 64, 3, 7)
    keys += _block("enc.model.1", 128, 64, 4)
    keys += _block("enc.model.2", 256, 128, 4)
    for part, index in (("enc", 3), ("dec", 0)):
        for b in range(4):
            for j in range(2):
                keys += _block(f"{part}.model.{index}.model.{b}.model.{j}", 256, 256, 3)
    # dec.model.1 and dec.model.3 are nn.Upsample (no state)
    keys += _block("dec.model.2", 128, 256, 5, layer_norm=True)
    keys += _block("dec.model.4", 64, 128, 5, layer_norm=True)
    keys += _block("dec.model.5", 3, 64, 7)
    return keys


def _official_msimagedis_keys() -> Keys:
    keys: Keys = []
    for s in range(3):
        widths = [3, 64, 128, 256, 512]
        for i in range(4):
            keys += _block(f"cnns.{s}.{i}", widths[i + 1], widths[i], 4)
        keys += [(f"cnns.{s}.4.weight", (1, 512, 1, 1)), (f"cnns.{s}.4.bias", (1,))]
    return keys


def _shapes(module: nn.Module) -> Keys:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _random_state(keys: Keys, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.05 for k, shape in keys}


def test_vaegen_state_dict_matches_official_names_and_shapes() -> None:
    assert _shapes(VAEGen()) == _official_vaegen_keys()
    assert len(_official_vaegen_keys()) == 48


def test_discriminator_state_dict_matches_official_msimagedis() -> None:
    assert _shapes(MultiScaleDiscriminator(n_layer=4, dim=64, num_scales=3)) == _official_msimagedis_keys()


def test_content_encoder_keys_are_the_enc_subtree() -> None:
    enc_keys = [(k[len("enc."):], s) for k, s in _official_vaegen_keys() if k.startswith("enc.")]
    assert _shapes(ContentEncoder()) == enc_keys
    assert ContentEncoder().output_dim == 256


# ---------------------------------------------------------------- independent functional reference

def _ref_block(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor, pad: int, stride: int, norm: str,
               act: str) -> torch.Tensor:
    x = F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), sd[f"{prefix}.conv.weight"], sd[f"{prefix}.conv.bias"],
                 stride=stride)
    if norm == "in":
        x = F.instance_norm(x, eps=1e-5)
    elif norm == "ln":
        flat = x.reshape(x.shape[0], -1)
        mean, std = flat.mean(1).view(-1, 1, 1, 1), flat.std(1).view(-1, 1, 1, 1)
        x = (x - mean) / (std + 1e-5)
        x = x * sd[f"{prefix}.norm.gamma"].view(1, -1, 1, 1) + sd[f"{prefix}.norm.beta"].view(1, -1, 1, 1)
    if act == "relu":
        x = F.relu(x)
    elif act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    elif act == "tanh":
        x = torch.tanh(x)
    return x


def _ref_res(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    for b in range(4):
        y = _ref_block(sd, f"{prefix}.model.{b}.model.0", x, 1, 1, "in", "relu")
        x = x + _ref_block(sd, f"{prefix}.model.{b}.model.1", y, 1, 1, "in", "none")
    return x


def _ref_vaegen(sd: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = _ref_block(sd, "enc.model.0", x, 3, 1, "in", "relu")
    h = _ref_block(sd, "enc.model.1", h, 1, 2, "in", "relu")
    h = _ref_block(sd, "enc.model.2", h, 1, 2, "in", "relu")
    mu = _ref_res(sd, "enc.model.3", h)
    y = _ref_res(sd, "dec.model.0", mu)
    y = _ref_block(sd, "dec.model.2", F.interpolate(y, scale_factor=2, mode="nearest"), 2, 1, "ln", "relu")
    y = _ref_block(sd, "dec.model.4", F.interpolate(y, scale_factor=2, mode="nearest"), 2, 1, "ln", "relu")
    return mu, _ref_block(sd, "dec.model.5", y, 3, 1, "none", "tanh")


def _ref_dis(sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    for s in range(3):
        h = x
        for i in range(4):
            h = _ref_block(sd, f"cnns.{s}.{i}", h, 1, 2, "none", "lrelu")
        outs.append(F.conv2d(h, sd[f"cnns.{s}.4.weight"], sd[f"cnns.{s}.4.bias"]))
        x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    return outs


@torch.no_grad()
def test_official_named_vaegen_weights_load_strictly_and_reproduce_outputs() -> None:
    sd = _random_state(_official_vaegen_keys(), seed=3)
    x = torch.rand(1, 3, 64, 32) * 2 - 1
    outputs = []
    for seed in (0, 1):  # two different fresh initialisations end up identical after loading
        torch.manual_seed(seed)
        gen = VAEGen()
        gen.load_state_dict(sd, strict=True)
        outputs.append((gen.encode(x), gen(x)))
    mu_ref, img_ref = _ref_vaegen(sd, x)
    for mu, img in outputs:
        torch.testing.assert_close(mu, mu_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(img, img_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], rtol=0, atol=0)


@torch.no_grad()
def test_official_named_discriminator_weights_load_strictly_and_reproduce_outputs() -> None:
    sd = _random_state(_official_msimagedis_keys(), seed=4)
    x = torch.rand(1, 3, 128, 64) * 2 - 1  # the coarsest scale's last reflection pad needs >= 2 pixels
    dis = MultiScaleDiscriminator(4, 64, 3)
    dis.load_state_dict(sd, strict=True)
    for out, ref in zip(dis(x), _ref_dis(sd, x), strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_missing_or_extra_official_key_fails_strict_load() -> None:
    sd = _random_state(_official_vaegen_keys(), seed=5)
    extra = dict(sd, **{"enc.model.0.norm.running_mean": torch.zeros(64)})
    with pytest.raises(RuntimeError):
        VAEGen().load_state_dict(extra, strict=True)
    sd.pop("dec.model.2.norm.gamma")
    with pytest.raises(RuntimeError):
        VAEGen().load_state_dict(sd, strict=True)


# ---------------------------------------------------------------- shapes

def _down(h: int) -> int:  # 4x4 conv, stride 2, padding 1
    return (h + 2 - 4) // 2 + 1


def _pool(h: int) -> int:  # 3x3 average pool, stride 2, padding 1
    return (h + 2 - 3) // 2 + 1


@torch.no_grad()
@pytest.mark.parametrize("size, code", [((228, 228), (57, 57)), ((256, 128), (64, 32))])
def test_content_encoder_shapes(size: tuple[int, int], code: tuple[int, int]) -> None:
    assert (_down(_down(size[0])), _down(_down(size[1]))) == code
    out = ContentEncoder()(torch.randn(2, 3, *size))
    assert out.shape == (2, 256, *code)


@torch.no_grad()
def test_content_encoder_options() -> None:
    enc = ContentEncoder(n_downsample=3, n_res=1, input_dim=1, dim=8, norm="none", activation="lrelu",
                         pad_type="zero")
    assert enc.output_dim == 64
    assert enc(torch.randn(1, 1, 32, 16)).shape == (1, 64, 4, 2)
    assert len(ContentEncoder(n_downsample=0, n_res=1, dim=8).model) == 2
    with pytest.raises(ConfigError):
        ContentEncoder(n_downsample=-1)
    with pytest.raises(ConfigError):
        ContentEncoder(norm="group")


@torch.no_grad()
@pytest.mark.parametrize("size", [(256, 128), (64, 32)])
def test_vaegen_decodes_back_to_input_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    gen = VAEGen()
    x = torch.rand(1, 3, *size) * 2 - 1
    mu = gen.encode(x)
    assert mu.shape == (1, 256, size[0] // 4, size[1] // 4)
    assert gen.decode(mu).shape == x.shape


@torch.no_grad()
@pytest.mark.parametrize("size", [(228, 228), (256, 128)])
def test_discriminator_per_scale_shapes(size: tuple[int, int]) -> None:
    expected = []
    h, w = size
    for _ in range(3):
        oh, ow = h, w
        for _ in range(4):
            oh, ow = _down(oh), _down(ow)
        expected.append((2, 1, oh, ow))
        h, w = _pool(h), _pool(w)
    if size == (228, 228):
        assert [e[2:] for e in expected] == [(14, 14), (7, 7), (3, 3)]
    else:
        assert [e[2:] for e in expected] == [(16, 8), (8, 4), (4, 2)]
    outs = MultiScaleDiscriminator(4, 64, 3)(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == expected


# ---------------------------------------------------------------- VAEGen behaviour

@torch.no_grad()
def test_vaegen_forward_is_deterministic_mean_decoding() -> None:
    torch.manual_seed(0)
    gen = VAEGen().train()
    x = torch.rand(2, 3, 32, 16) * 2 - 1
    y1 = gen(x)
    y2 = gen(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(y1, gen.decode(gen.encode(x)), rtol=0, atol=0)
    big = gen(torch.randn(2, 3, 32, 16) * 50)  # outputs stay in the tanh range
    assert y1.abs().max() <= 1.0 and big.abs().max() <= 1.0


def test_reparameterize_adds_unit_variance_noise() -> None:
    gen = VAEGen(dim=8, n_res=1)
    mu = torch.linspace(-3, 3, 4 * 64 * 32 * 32).view(4, 64, 32, 32)
    torch.manual_seed(7)
    z = gen.reparameterize(mu)
    noise = z - mu
    assert z.shape == mu.shape
    assert abs(noise.mean().item()) < 0.01
    assert abs(noise.std().item() - 1.0) < 0.01
    torch.manual_seed(7)
    torch.testing.assert_close(gen.reparameterize(mu), z, rtol=0, atol=0)
    torch.manual_seed(8)
    assert not torch.equal(gen.reparameterize(mu), z)
    # the noise is additive: gradients pass straight to mu
    mu_leaf = torch.zeros(3, requires_grad=True)
    gen.reparameterize(mu_leaf).sum().backward()
    assert mu_leaf.grad is not None and torch.equal(mu_leaf.grad, torch.ones(3))


def test_vaegen_kaiming_init() -> None:
    torch.manual_seed(0)
    gen = VAEGen()
    w = gen.enc.model[3].model[0].model[0].conv.weight  # 256 x 256 x 3 x 3
    fan_in = 256 * 3 * 3
    assert abs(w.std().item() / math.sqrt(2.0 / fan_in) - 1.0) < 0.02
    assert abs(w.mean().item()) < 1e-3
    convs = [m for m in gen.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 22  # 3 encoder + 16 residual + 2 upsampling + 1 output
    assert all(m.bias is not None and torch.count_nonzero(m.bias) == 0 for m in convs)
    gamma = gen.dec.model[2].norm.gamma  # LayerNorm affine parameters keep their own init
    assert 0.0 <= gamma.min().item() and gamma.max().item() <= 1.0 and gamma.std().item() > 0


def test_kaiming_init_function() -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(512, 1024), nn.Conv2d(64, 128, 3), nn.BatchNorm2d(4))
    assert kaiming_init_(seq) is seq
    lin, conv, bn = seq
    assert abs(lin.weight.std().item() / math.sqrt(2.0 / 512) - 1.0) < 0.02
    assert abs(conv.weight.std().item() / math.sqrt(2.0 / (64 * 9)) - 1.0) < 0.02
    assert torch.count_nonzero(lin.bias) == 0 and torch.count_nonzero(conv.bias) == 0
    assert torch.equal(bn.weight, torch.ones(4))  # non-conv/linear modules untouched


# ---------------------------------------------------------------- losses

def test_unit_kl_spec_value() -> None:
    mu = torch.tensor([1.0, -1.0, 2.0, 0.0])
    assert unit_kl(mu).item() == pytest.approx(1.5)
    mu4 = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]], requires_grad=True)
    loss = unit_kl(mu4)
    loss.backward()
    assert loss.item() == pytest.approx(1.5)
    assert mu4.grad is not None
    torch.testing.assert_close(mu4.grad, 2 * mu4.detach() / 4)
    assert unit_kl(mu.to(torch.bfloat16)).dtype == torch.float32


def test_nsgan_losses_at_zero_logits() -> None:
    scales = [torch.zeros(2, 1, 8, 4), torch.zeros(2, 1, 4, 2)]
    assert nsgan_generator_loss(scales).item() == pytest.approx(2 * LN2)
    assert nsgan_generator_loss(scales[0]).item() == pytest.approx(LN2)
    assert nsgan_discriminator_loss(scales, scales).item() == pytest.approx(4 * LN2)
    assert nsgan_discriminator_loss(scales[1], scales[1]).item() == pytest.approx(2 * LN2)


def test_nsgan_losses_hand_values() -> None:
    logit = torch.full((1, 1, 2, 2), math.log(3.0))  # sigmoid = 3/4
    assert nsgan_generator_loss([logit]).item() == pytest.approx(-math.log(0.75))
    # fake term -log(1 - 3/4) = ln 4, real term at logit -ln 3 (sigmoid 1/4): -log(1/4) = ln 4
    assert nsgan_discriminator_loss([logit], [-logit]).item() == pytest.approx(2 * math.log(4.0))


def test_nsgan_losses_match_sigmoid_bce_and_sum_over_scales() -> None:
    g = torch.Generator().manual_seed(0)
    fakes = [torch.randn(2, 1, 14, 14, generator=g) * 3, torch.randn(2, 1, 7, 7, generator=g) * 3,
             torch.randn(2, 1, 3, 3, generator=g) * 3]
    reals = [torch.randn(f.shape, generator=g) * 3 for f in fakes]
    gen_ref = sum(F.binary_cross_entropy(torch.sigmoid(f), torch.ones_like(f)) for f in fakes)
    dis_ref = sum(F.binary_cross_entropy(torch.sigmoid(f), torch.zeros_like(f))
                  + F.binary_cross_entropy(torch.sigmoid(r), torch.ones_like(r))
                  for f, r in zip(fakes, reals, strict=True))
    assert isinstance(gen_ref, torch.Tensor) and isinstance(dis_ref, torch.Tensor)
    torch.testing.assert_close(nsgan_generator_loss(fakes), gen_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(nsgan_discriminator_loss(fakes, reals), dis_ref, rtol=1e-5, atol=1e-6)
    per_scale = sum(nsgan_generator_loss(f) for f in fakes)
    assert isinstance(per_scale, torch.Tensor)
    torch.testing.assert_close(nsgan_generator_loss(tuple(fakes)), per_scale)


def test_nsgan_losses_are_stable_and_float32() -> None:
    big = torch.tensor([[200.0, -200.0]])
    assert torch.isfinite(nsgan_generator_loss(big))
    assert nsgan_generator_loss(big).item() == pytest.approx(100.0)  # (0 + 200) / 2
    assert torch.isfinite(nsgan_discriminator_loss(big, big))
    half = torch.zeros(2, 1, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    loss = nsgan_generator_loss([half])
    assert loss.dtype == torch.float32
    loss.backward()
    assert half.grad is not None
    torch.testing.assert_close(half.grad.float(), torch.full((2, 1, 4, 4), -0.5 / 32))


def test_nsgan_bad_inputs() -> None:
    with pytest.raises(TrainingError):
        nsgan_generator_loss([])
    with pytest.raises(TrainingError):
        nsgan_discriminator_loss([torch.zeros(1, 1, 2, 2)] * 2, [torch.zeros(1, 1, 2, 2)])
    with pytest.raises(TrainingError):
        unit_kl(torch.zeros(0))
