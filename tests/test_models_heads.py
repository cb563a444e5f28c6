"""Pooling (GeM, GAP), BN-neck and classifier."""

from __future__ import annotations

import pytest
import torch

from vireid.models import BNNeck, Classifier, GeM, GlobalAvgPool, build_pooling


def test_gem_spec_vector():
    # docs/reference/methods.md#lba-5-8 test 1: ((1 + 8 + 27 + 64)/4 + 1e-12)^(1/3) = 25^(1/3)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    out = GeM()(x)
    assert out.shape == (1, 1)
    assert out.item() == pytest.approx(2.924018, abs=1e-6)


def test_gem_clamps_negatives_and_adds_eps_after_mean():
    x = torch.tensor([-5.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    assert GeM(eps=1e-6)(x).item() == pytest.approx(1e-6 ** (1 / 3), rel=1e-4)
    x = torch.tensor([[2.0, 2.0], [2.0, 2.0]]).reshape(1, 1, 2, 2)
    assert GeM(p=1.0, eps=0.0)(x).item() == pytest.approx(2.0)


def test_gem_half_input_is_computed_in_float32():
    x = torch.full((1, 2, 2, 2), 60.0, dtype=torch.float16)  # 60^3 overflows float16
    out = GeM()(x)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all() and out.float().sub(60.0).abs().max() < 0.1


def test_gem_learnable_p_is_a_parameter():
    g = GeM(p=3.0, learnable=True)
    assert [n for n, _ in g.named_parameters()] == ["p"]
    g(torch.rand(2, 3, 4, 4) + 0.1).sum().backward()
    assert g.p.grad is not None
    assert list(GeM().parameters()) == []


def test_avg_and_build_pooling():
    x = torch.arange(8.0).reshape(1, 2, 2, 2)
    assert torch.equal(GlobalAvgPool()(x), torch.tensor([[1.5, 5.5]]))
    assert isinstance(build_pooling("gem", p=4.0), GeM) and float(build_pooling("gem", 4.0).p) == 4.0
    assert isinstance(build_pooling("avg"), GlobalAvgPool)
    with pytest.raises(ValueError, match="'max'.*model.pooling"):
        build_pooling("max")


def test_bnneck_bias_frozen_zero_and_weight_inits():
    neck = BNNeck(8)
    assert not neck.bn.bias.requires_grad and torch.equal(neck.bn.bias, torch.zeros(8))
    assert torch.equal(neck.bn.weight, torch.ones(8))
    assert BNNeck(8, bias_frozen=False).bn.bias.requires_grad
    for kind in ("normal", "kaiming"):
        w = BNNeck(20000, weight_init=kind, generator=torch.Generator().manual_seed(0)).bn.weight
        assert w.mean().item() == pytest.approx(1.0, abs=1e-3)
        assert w.std().item() == pytest.approx(0.01, rel=0.05)
    a = BNNeck(16, weight_init="normal", generator=torch.Generator().manual_seed(5)).bn.weight
    b = BNNeck(16, weight_init="normal", generator=torch.Generator().manual_seed(5)).bn.weight
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="weight_init"):
        BNNeck(4, weight_init="zeros")


def test_bnneck_bias_stays_zero_after_training_step():
    neck = BNNeck(4)
    opt = torch.optim.SGD([p for p in neck.parameters() if p.requires_grad], lr=1.0)
    neck(torch.randn(6, 4)).pow(2).sum().backward()
    opt.step()
    assert torch.equal(neck.bn.bias, torch.zeros(4))


def test_classifier_init_and_shape():
    c = Classifier(512, 3000, generator=torch.Generator().manual_seed(0))
    assert c.fc.bias is None
    assert c.fc.weight.std().item() == pytest.approx(0.001, rel=0.02)
    assert c(torch.randn(2, 512)).shape == (2, 3000)
    cb = Classifier(4, 3, bias=True, init_std=0.01)
    assert torch.equal(cb.fc.bias, torch.zeros(3))
    torch.manual_seed(0)
    default = Classifier(512, 10, init_std=None)
    # torch's default Linear init is uniform(+-1/sqrt(fan_in)), much wider than N(0, 0.001)
    assert default.fc.weight.abs().max() > 0.02
