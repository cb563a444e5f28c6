"""MUNIT-style generation blocks and losses (JSIA-ReID spec §3.2-3.4, test cases §3.10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vireid.core import ConfigError, Modality, TrainingError
from vireid.losses import (
    cross_entropy,
    cross_modality_triplet,
    l1_reconstruction,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    one_way_kl,
    symmetric_kl,
)
from vireid.models import (
    AdaIN2d,
    AdaINGenerator,
    AdaINMLP,
    CodeLayerNorm,
    ConvBlock,
    Decoder,
    LinearBlock,
    MultiScaleDiscriminator,
    ResBlock,
    ResBlocks,
    StyleEncoder,
    assign_adain_params,
    num_adain_params,
)

# ---------------------------------------------------------------- official state-dict structure
# Written from a reading of the official core/networks.py (Generator minus mod_invar_enc.*, Discriminator
# with n_layer 4, middle_dim 32, num_scales 2), in state_dict order, with shapes for a 256-channel content code.


def _conv_block(prefix: str, out_c: int, in_c: int, k: int, norm: str = "none") -> list[tuple[str, tuple]]:
    keys: list[tuple[str, tuple]] = []
    if norm == "adain":
        keys += [(f"{prefix}.norm.running_mean", (out_c,)), (f"{prefix}.norm.running_var", (out_c,))]
    if norm == "ln":
        keys += [(f"{prefix}.norm.gamma", (out_c,)), (f"{prefix}.norm.beta", (out_c,))]
    return keys + [(f"{prefix}.conv.weight", (out_c, in_c, k, k)), (f"{prefix}.conv.bias", (out_c,))]


def _official_generator_keys() -> list[tuple[str, tuple]]:
    keys = _conv_block("mod_spec_enc.model.0", 32, 3, 7)
    keys += _conv_block("mod_spec_enc.model.1", 64, 32, 4)
    keys += _conv_block("mod_spec_enc.model.2", 128, 64, 4)
    keys += _conv_block("mod_spec_enc.model.3", 128, 128, 4)
    keys += _conv_block("mod_spec_enc.model.4", 128, 128, 4)
    # model.5 is the global average pooling (no state)
    keys += [("mod_spec_enc.model.6.weight", (128, 128, 1, 1)), ("mod_spec_enc.model.6.bias", (128,)),
             ("mod_spec_enc.classifier.weight", (395, 128)), ("mod_spec_enc.classifier.bias", (395,))]
    for block in range(2):
        for conv in range(2):
            keys += _conv_block(f"dec.model.0.model.{block}.model.{conv}", 256, 256, 3, "adain")
    # dec.model.1 is the nearest upsampling (no state)
    keys += _conv_block("dec.model.2", 128, 256, 5, "ln")
    keys += _conv_block("dec.model.3", 3, 128, 7)
    keys += [("mlp.model.0.fc.weight", (256, 128)), ("mlp.model.0.fc.bias", (256,)),
             ("mlp.model.1.fc.weight", (256, 256)), ("mlp.model.1.fc.bias", (256,)),
             ("mlp.model.2.fc.weight", (2048, 256)), ("mlp.model.2.fc.bias", (2048,))]
    return keys


def _official_discriminator_keys() -> list[tuple[str, tuple]]:
    keys: list[tuple[str, tuple]] = []
    for scale in range(2):
        for i, (out_c, in_c) in enumerate([(32, 3), (64, 32), (128, 64), (256, 128)]):
            keys += _conv_block(f"cnns.{scale}.{i}", out_c, in_c, 4)
        keys += [(f"cnns.{scale}.4.weight", (1, 256, 1, 1)), (f"cnns.{scale}.4.bias", (1,))]
    return keys


def test_generator_state_dict_matches_official_keys_order_and_shapes():
    got = [(k, tuple(v.shape)) for k, v in AdaINGenerator().state_dict().items()]
    assert got == _official_generator_keys()
    assert ("dec.model.0.model.0.model.0.norm.running_mean", (256,)) in got
    assert ("dec.model.2.norm.gamma", (128,)) in got and ("mlp.model.2.fc.bias", (2048,)) in got


def test_discriminator_state_dict_matches_official_keys_order_and_shapes():
    got = [(k, tuple(v.shape)) for k, v in MultiScaleDiscriminator().state_dict().items()]
    assert got == _official_discriminator_keys()
    assert ("cnns.1.4.weight", (1, 256, 1, 1)) in got


def test_official_state_dict_loads_after_prefix_substitution():
    torch.manual_seed(0)
    source = AdaINGenerator()
    official = {f"module.{k}": v.clone() for k, v in source.state_dict().items()}
    official["module.mod_invar_enc.resnet_conv1.0.weight"] = torch.zeros(64, 3, 7, 7)  # the ReID encoder's
    mine = {k[len("module."):]: v for k, v in official.items() if not k.startswith("module.mod_invar_enc.")}
    torch.manual_seed(1)
    target = AdaINGenerator()
    target.load_state_dict(mine, strict=True)
    assert torch.equal(target.mlp.model[2].fc.bias, source.mlp.model[2].fc.bias)


# ---------------------------------------------------------------- spec §3.10 cases 1, 3, 4


def test_case1_label_smoothed_cross_entropy():
    logits, target = torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([0])
    assert cross_entropy(logits, target, label_smoothing=0.1).item() == pytest.approx(0.49075, abs=5e-6)
    assert cross_entropy(logits, target).item() == pytest.approx(0.34075, abs=5e-6)
    assert 2 - math.log(math.e ** 2 + 3) == pytest.approx(-0.34075, abs=5e-6)


def test_label_smoothing_equals_official_cross_entropy_label_smooth():
    # official CrossEntropyLabelSmooth: targets (1 - eps) onehot + eps / K, loss (-t log p).mean(0).sum()
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    t = torch.full((6, 5), 0.1 / 5, dtype=torch.float64)
    t[torch.arange(6), labels] += 0.9
    expected = (-t * torch.log_softmax(logits, dim=1)).mean(0).sum()
    assert cross_entropy(logits, labels, label_smoothing=0.1).item() == pytest.approx(expected.item(), abs=1e-12)


def test_case3_lsgan_single_scale():
    fake, real = torch.tensor([0.2, 0.4]), torch.tensor([0.9, 0.7])
    assert lsgan_discriminator_loss([fake], [real]).item() == pytest.approx(0.15, abs=1e-7)
    assert lsgan_generator_loss([fake]).item() == pytest.approx(0.5, abs=1e-7)


def test_lsgan_sums_over_scales():
    fakes = [torch.tensor([[0.2, 0.4]]), torch.tensor([[0.0]])]
    reals = [torch.tensor([[0.9, 0.7]]), torch.tensor([[0.5]])]
    assert lsgan_discriminator_loss(fakes, reals).item() == pytest.approx(0.15 + 0.25, abs=1e-7)
    assert lsgan_generator_loss(fakes).item() == pytest.approx(0.5 + 1.0, abs=1e-7)
    with pytest.raises(TrainingError, match="2 fake scales but 1 real"):
        lsgan_discriminator_loss(fakes, reals[:1])
    with pytest.raises(TrainingError, match="no discriminator outputs"):
        lsgan_generator_loss([])


def test_case4_shapes_and_mlp_width():
    torch.manual_seed(0)
    gen = AdaINGenerator()
    assert num_adain_params(gen.dec) == 2048 == 2 * 2 * 2 * 256
    images = torch.rand(2, 3, 128, 64) * 2 - 1
    content = torch.randn(2, 256, 64, 32)
    with torch.no_grad():
        style = gen.style(images)
        assert style.shape == (2, 128, 1, 1)
        assert gen.mlp(style).shape == (2, 2048)
        out = gen.decode(content, style)
    assert out.shape == (2, 3, 128, 64)
    assert out.abs().max().item() <= 1.0  # tanh
    outs = MultiScaleDiscriminator()(images)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 8, 4), (2, 1, 4, 2)]


# ---------------------------------------------------------------- shapes of every block


@pytest.mark.parametrize("h,w", [(128, 64), (256, 128)])
def test_block_shapes(h, w):
    torch.manual_seed(0)
    x = torch.randn(1, 3, h, w)
    content = torch.randn(1, 256, h // 4, w // 4)
    with torch.no_grad():
        assert ConvBlock(3, 32, 7, 1, 3)(x).shape == (1, 32, h, w)
        assert ConvBlock(3, 32, 4, 2, 1, activation="lrelu")(x).shape == (1, 32, h // 2, w // 2)
        assert ResBlock(8, norm="in")(torch.randn(1, 8, h // 4, w // 4)).shape == (1, 8, h // 4, w // 4)
        assert ResBlocks(2, 8, norm="ln")(torch.randn(1, 8, h // 4, w // 4)).shape == (1, 8, h // 4, w // 4)
        assert StyleEncoder()(x).shape == (1, 128, 1, 1)
        style, logits = StyleEncoder().predict(x)
        assert style.shape == (1, 128, 1, 1) and logits.shape == (1, 395)
        assert LinearBlock(128, 256)(torch.randn(1, 128)).shape == (1, 256)
        assert AdaINMLP(128, 2048)(torch.randn(1, 128, 1, 1)).shape == (1, 2048)
        gen = AdaINGenerator()
        assert gen.decode(content, gen.style(x)).shape == (1, 3, h // 2, w // 2)
        dec = Decoder(n_upsample=2, n_res=1, dim=16, res_norm="in")
        assert dec(torch.randn(1, 16, h // 4, w // 4)).shape == (1, 3, h, w)
        outs = MultiScaleDiscriminator()(x)
    assert [tuple(o.shape) for o in outs] == [(1, 1, h // 16, w // 16), (1, 1, h // 32, w // 32)]


def test_conv_block_parts():
    block = ConvBlock(3, 8, 4, 2, 1, norm="ln", activation="lrelu", pad_type="reflect")
    assert isinstance(block.pad, nn.ReflectionPad2d) and block.pad.padding == (1, 1, 1, 1)
    assert block.conv.padding == (0, 0) and block.conv.bias is not None
    assert isinstance(block.norm, CodeLayerNorm)
    assert isinstance(block.activation, nn.LeakyReLU) and block.activation.negative_slope == 0.2
    assert isinstance(ConvBlock(3, 8, 3, 1, 1, pad_type="replicate").pad, nn.ReplicationPad2d)
    assert isinstance(ConvBlock(3, 8, 3, 1, 1, pad_type="zero").pad, nn.ZeroPad2d)
    plain = ConvBlock(3, 8, 3, 1, 1, norm="none", activation="none")
    assert plain.norm is None and plain.activation is None
    x = torch.randn(2, 3, 5, 6)
    expected = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"),
                                    plain.conv.weight, plain.conv.bias)
    torch.testing.assert_close(plain(x), expected)
    assert isinstance(ConvBlock(3, 8, 3, 1, 1, activation="tanh").activation, nn.Tanh)
    for kwargs, name in [({"norm": "group"}, "norm"), ({"activation": "gelu"}, "activation"),
                         ({"pad_type": "circular"}, "pad_type")]:
        with pytest.raises(ConfigError, match=name):
            ConvBlock(3, 8, 3, 1, 1, **kwargs)


# ---------------------------------------------------------------- normalisation layers


def _ln_reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        m, s = x[b].mean(), x[b].std(ddof=1)
        out[b] = (x[b] - m) / (s + eps) * gamma[:, None, None] + beta[:, None, None]
    return out


@pytest.mark.parametrize("batch", [1, 3])
def test_code_layer_norm_matches_formula(batch):
    torch.manual_seed(0)
    ln = CodeLayerNorm(4).double()
    with torch.no_grad():
        ln.beta.copy_(torch.randn(4))
    x = torch.randn(batch, 4, 5, 6, dtype=torch.float64) * 3 + 1
    expected = _ln_reference(x.numpy(), ln.gamma.detach().numpy(), ln.beta.detach().numpy(), 1e-5)
    np.testing.assert_allclose(ln(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_code_layer_norm_init_and_eps_on_std():
    torch.manual_seed(0)
    ln = CodeLayerNorm(64)
    assert 0.0 <= ln.gamma.min().item() and ln.gamma.max().item() < 1.0 and ln.gamma.std().item() > 0.2
    assert torch.equal(ln.beta, torch.zeros(64))
    # x = [0, 2]: mean 1, unbiased std sqrt(2); (x - 1) / (sqrt(2) + 1) = -/+ 0.414214 (not 1/sqrt(3))
    ln = CodeLayerNorm(1, eps=1.0, affine=False)
    y = ln(torch.tensor([[[[0.0, 2.0]]]]))
    torch.testing.assert_close(y.flatten(), torch.tensor([-0.414214, 0.414214]), atol=1e-6, rtol=0)


def test_adain_matches_instance_norm_formula_and_leaves_buffers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) * 2 + 0.5
    adain = AdaIN2d(3).double()
    adain.weight = torch.randn(6, generator=g, dtype=torch.float64)
    adain.bias = torch.randn(6, generator=g, dtype=torch.float64)
    got = adain(x)
    xs = x.numpy()
    w, b = adain.weight.numpy().reshape(2, 3), adain.bias.numpy().reshape(2, 3)
    mean = xs.mean(axis=(2, 3), keepdims=True)
    var = xs.var(axis=(2, 3), keepdims=True)  # biased
    expected = (xs - mean) / np.sqrt(var + 1e-5) * w[:, :, None, None] + b[:, :, None, None]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(adain.running_mean, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(adain.running_var, torch.ones(3, dtype=torch.float64))
    assert dict(adain.named_parameters()) == {}


def test_adain_errors():
    adain = AdaIN2d(3)
    with pytest.raises(TrainingError, match="assign_adain_params"):
        adain(torch.randn(2, 3, 4, 4))
    adain.weight, adain.bias = torch.ones(3), torch.zeros(3)
    with pytest.raises(TrainingError, match="batch 2"):
        adain(torch.randn(2, 3, 4, 4))


def test_assign_adain_params_order_bias_then_weight():
    dec = Decoder(n_upsample=1, n_res=2, dim=4, res_norm="adain")
    assert num_adain_params(dec) == 2 * 2 * 2 * 4
    params = torch.arange(2 * 32, dtype=torch.float32).reshape(2, 32)
    assign_adain_params(params, dec)
    layers = [m for m in dec.modules() if isinstance(m, AdaIN2d)]
    assert len(layers) == 4
    for i, m in enumerate(layers):
        assert m.bias is not None and m.weight is not None
        assert m.bias.tolist() == params[:, 8 * i:8 * i + 4].reshape(-1).tolist()
        assert m.weight.tolist() == params[:, 8 * i + 4:8 * i + 8].reshape(-1).tolist()
    assert layers[0].bias.tolist()[:5] == [0.0, 1.0, 2.0, 3.0, 32.0]  # sample 1 starts at index C
    with pytest.raises(TrainingError, match=r"\(B, >= 32\)"):
        assign_adain_params(params[:, :31], dec)


def test_generator_decode_uses_style_and_trains_the_right_parts():
    torch.manual_seed(0)
    gen = AdaINGenerator(content_dim=16, style_dim=8, num_classes=5, style_dim_base=4, mlp_dim=12)
    images = torch.rand(2, 3, 32, 16) * 2 - 1
    content = torch.randn(2, 16, 8, 4)
    style = gen.style(images)
    out = gen.decode(content, style)
    # same as assigning by hand and running the decoder
    assign_adain_params(gen.mlp(style), gen.dec)
    torch.testing.assert_close(out, gen.dec(content))
    # another style gives another image from the same content
    assert (gen.decode(content, torch.randn(2, 8, 1, 1) * 3) - out).abs().max().item() > 1e-2
    out.mean().backward()
    assert gen.mlp.model[0].fc.weight.grad is not None and gen.mod_spec_enc.model[0].conv.weight.grad is not None
    assert gen.mod_spec_enc.classifier.weight.grad is None  # the predict head is unused
    with pytest.raises(TrainingError, match=r"content \(B, 16, h, w\)"):
        gen.decode(torch.randn(2, 8, 8, 4), style)


def test_generator_and_discriminator_run_under_autocast():
    torch.manual_seed(0)
    gen = AdaINGenerator(content_dim=16, style_dim=8, num_classes=5, style_dim_base=4, mlp_dim=12)
    images, content = torch.rand(2, 3, 32, 16) * 2 - 1, torch.randn(2, 16, 8, 4)
    with torch.no_grad():
        full = gen.decode(content, gen.style(images))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # AdaIN gets bf16 activations and bf16 MLP params
            low = gen.decode(content, gen.style(images))
            outs = MultiScaleDiscriminator(n_layer=2, dim=4)(low)
    assert low.shape == full.shape and torch.isfinite(low).all()
    assert (low.float() - full).abs().max().item() < 0.1
    assert [tuple(o.shape) for o in outs] == [(2, 1, 4, 2), (2, 1, 2, 1)]  # 16x8 images, 2 layers


# ---------------------------------------------------------------- discriminator


def test_discriminator_init_statistics_and_seed():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator()
    weights = [m.weight for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert len(weights) == 10
    flat = torch.cat([w.detach().flatten() for w in weights])
    assert flat.std().item() == pytest.approx(0.02, abs=2e-4)
    assert abs(flat.mean().item()) < 1e-4
    for w in weights:  # torch's default would give std 1/sqrt(3 fan_in): 0.083 (first) .. 0.036 (last)
        assert w.std().item() == pytest.approx(0.02, rel=0.2)
    for m in disc.modules():
        if isinstance(m, nn.Conv2d):
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    torch.manual_seed(0)
    again = MultiScaleDiscriminator()
    assert all(torch.equal(a, b) for a, b in zip(disc.state_dict().values(), again.state_dict().values(), strict=True))


def test_discriminator_downsample_excludes_padding_at_borders():
    disc = MultiScaleDiscriminator()
    ones = torch.ones(1, 1, 4, 4)
    assert torch.equal(disc.downsample(ones), torch.ones(1, 1, 2, 2))  # zero padding would give 4/9 at the corner
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    # corner window covers rows 0-1, cols 0-1: mean(0, 1, 4, 5) = 2.5; centre (1, 1) covers rows/cols 1-3
    y = disc.downsample(x)
    assert y[0, 0, 0, 0].item() == pytest.approx(2.5)
    assert y[0, 0, 1, 1].item() == pytest.approx(float(x[0, 0, 1:4, 1:4].mean()))
    assert y[0, 0, 0, 1].item() == pytest.approx(float(x[0, 0, 0:2, 1:4].mean()))


def test_discriminator_scales_see_downsampled_input():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(n_layer=2, dim=4)
    x = torch.randn(1, 3, 32, 16)
    outs = disc(x)
    torch.testing.assert_close(outs[1], disc.cnns[1](disc.downsample(x)))
    torch.testing.assert_close(outs[0], disc.cnns[0](x))


# ---------------------------------------------------------------- reconstruction and KL losses


def test_l1_reconstruction():
    assert l1_reconstruction(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == pytest.approx(1.5)
    with pytest.raises(TrainingError, match="shapes differ"):
        l1_reconstruction(torch.zeros(2, 3), torch.zeros(3))


def test_symmetric_and_one_way_kl_by_hand():
    # row 0: p = softmax([0, ln 3]) = [1/4, 3/4], q = [1/2, 1/2]
    #   KL(q||p) = 1/2 ln 2 + 1/2 ln(2/3) = 0.143841; KL(p||q) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812
    # row 1: p = q, both terms ln(1 + 1e-8) ~ 0
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 2.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    loss = symmetric_kl(logits, target)
    assert loss.item() == pytest.approx((0.143841 + 0.130812) / 2, abs=2e-6)
    assert one_way_kl(logits, target).item() == pytest.approx(0.143841 / 2, abs=2e-6)
    loss.backward()
    assert target.grad is None and logits.grad is not None and logits.grad.abs().sum() > 0


def test_symmetric_kl_matches_official_formula_on_random_logits():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(4, 7, generator=g, dtype=torch.float64), torch.randn(4, 7, generator=g, dtype=torch.float64)
    p, q = a.softmax(1).numpy(), b.softmax(1).numpy()
    kl_qp = (q * np.log(1e-8 + q / (p + 1e-8))).sum(1)
    kl_pq = (p * np.log(1e-8 + p / (q + 1e-8))).sum(1)
    assert symmetric_kl(a, b).item() == pytest.approx(float((kl_qp + kl_pq).mean()), abs=1e-12)
    assert one_way_kl(a, b).item() == pytest.approx(float(kl_qp.mean()), abs=1e-12)
    with pytest.raises(TrainingError, match="logit"):
        symmetric_kl(a, b[:, :3])


# ---------------------------------------------------------------- JSIA's cross-modality triplet


def _official_triplet(anchor: np.ndarray, other: np.ndarray, la: np.ndarray, lo: np.ndarray,
                      margin: float) -> list[float]:
    """Independent transcription of the arithmetic of TripletLoss(margin, 'euclidean')(a, o, o, la, lo, lo)."""
    d = np.sqrt(np.maximum(((anchor[:, None, :] - other[None, :, :]) ** 2).sum(-1), 1e-12))
    losses = []
    for i in range(len(anchor)):
        hard_p = max(d[i, j] for j in range(len(other)) if lo[j] == la[i])
        hard_n = min(d[i, j] for j in range(len(other)) if lo[j] != la[i])
        losses.append(max(0.0, -(hard_n - hard_p) + margin))  # MarginRankingLoss(hard_n, hard_p, y=1) per anchor
    return losses


def test_cross_modality_triplet_equals_official_jsia_usage():
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(4), 3)
    rgb = rng.normal(size=(12, 6)) * 0.25 + labels[:, None] * 0.5
    ir = rng.normal(size=(12, 6)) * 0.25 + labels[:, None] * 0.5
    rgb_to_ir = _official_triplet(rgb, ir, labels, labels, 0.3)
    ir_to_rgb = _official_triplet(ir, rgb, labels, labels, 0.3)
    expected = (np.mean(rgb_to_ir) + np.mean(ir_to_rgb)) / 2
    feats = torch.from_numpy(np.concatenate([rgb, ir]))
    codes = torch.tensor([Modality.VISIBLE.code] * 12 + [Modality.INFRARED.code] * 12)
    got = cross_modality_triplet(feats, torch.from_numpy(np.concatenate([labels, labels])), codes, margin=0.3)
    assert got.item() == pytest.approx(expected, abs=1e-10)
    per_anchor = np.array(rgb_to_ir + ir_to_rgb)
    assert (per_anchor == 0).sum() >= 3 and (per_anchor > 0).sum() >= 3  # hinge both active and inactive
