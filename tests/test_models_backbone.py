"""ResNetBackbone: shapes, strides, modality-specific stages, stage-wise forward, non-local placement."""

from __future__ import annotations

import pytest
import torch

from vireid.core import Modality
from vireid.models import ModalitySpecific, NonLocalBlock, ResNetBackbone

V, IR = Modality.VISIBLE.code, Modality.INFRARED.code


def _tiny(**kw) -> ResNetBackbone:
    torch.manual_seed(0)
    kw.setdefault("arch", "resnet18")
    return ResNetBackbone(**kw).eval()


def _images(n: int, c: int = 3, h: int = 64, w: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _perturb_infrared(net: ResNetBackbone, stage: str) -> None:
    # copies start equal; make them differ so a swapped copy shows up in the outputs
    with torch.no_grad():
        for p in net.branch(stage, Modality.INFRARED).parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("last_stride, hw4", [(1, (4, 2)), (2, (2, 1))])
def test_resnet18_shapes_and_channels(last_stride, hw4):
    net = _tiny(last_stride=last_stride)
    x = _images(2)
    codes = torch.tensor([V, IR], dtype=torch.int8)
    assert net.forward_until(x, codes, "stem").shape == (2, 64, 16, 8)
    assert net.forward_until(x, codes, "layer3").shape == (2, 256, 4, 2)
    assert net(x, codes).shape == (2, 512, *hw4)
    assert net.out_channels == 512
    assert [net.channels(s) for s in net.stages] == [64, 64, 128, 256, 512]


def test_last_stride_sets_the_first_block_of_layer4():
    net = _tiny(last_stride=1)
    first = net.layer4.blocks[0]
    assert first.conv1.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    net2 = _tiny(last_stride=2)
    assert net2.layer4.blocks[0].conv1.stride == (2, 2)


@pytest.mark.parametrize("size, l3, l4", [((288, 144), (1, 1024, 18, 9), (1, 2048, 18, 9)),
                                          ((384, 128), (1, 1024, 24, 8), (1, 2048, 24, 8))])
def test_resnet50_last_stride1_shapes(size, l3, l4):
    torch.manual_seed(0)
    net = ResNetBackbone("resnet50", last_stride=1).eval()
    assert net.layer4.blocks[0].conv2.stride == (1, 1)
    assert net.layer4.blocks[0].downsample[0].stride == (1, 1)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        f3 = net.forward_until(x, Modality.INFRARED, "layer3")
        f4 = net.forward_from(f3, Modality.INFRARED, "layer3")
    assert f3.shape == l3 and f4.shape == l4
    assert net.out_channels == 2048 and net.channels("layer3") == 1024


def test_modality_specific_copies_are_distinct_parameters_with_equal_init():
    net = _tiny(modality_specific=("stem", "layer2"))
    assert isinstance(net.stem, ModalitySpecific) and isinstance(net.layer2, ModalitySpecific)
    assert not isinstance(net.layer1, ModalitySpecific)
    vis, ir = net.branch("stem", "visible"), net.branch("stem", "infrared")
    assert vis is not ir
    assert vis.conv1.weight.data_ptr() != ir.conv1.weight.data_ptr()
    assert torch.equal(vis.conv1.weight, ir.conv1.weight)
    assert net.branch("layer1", Modality.VISIBLE) is net.branch("layer1", Modality.INFRARED)
    ids_v = {id(p) for p in net.layer2["visible"].parameters()}
    assert ids_v.isdisjoint(id(p) for p in net.layer2["infrared"].parameters())


@pytest.mark.parametrize("specific", [("stem",), ("stem", "layer1"), ("layer3",)])
def test_mixed_batch_keeps_order_and_uses_each_modality_copy(specific):
    net = _tiny(modality_specific=specific)
    for stage in specific:
        _perturb_infrared(net, stage)
    x = _images(5)
    codes = torch.tensor([IR, V, V, IR, V], dtype=torch.int8)
    with torch.no_grad():
        out = net(x, codes)
        for k in range(5):
            alone = net(x[k:k + 1], Modality.from_code(int(codes[k])))
            torch.testing.assert_close(out[k:k + 1], alone, rtol=1e-4, atol=1e-4)
        # the other modality's copy gives a different answer: the copies really differ
        wrong = net(x[:1], Modality.VISIBLE)
    assert (out[:1] - wrong).abs().max() > 1e-2


def test_single_modality_argument_equals_code_tensor_and_bool_mask():
    net = _tiny()
    _perturb_infrared(net, "stem")
    x = _images(3)
    with torch.no_grad():
        a = net(x, Modality.INFRARED)
        b = net(x, torch.ones(3, dtype=torch.int8))
        c = net(x, torch.ones(3, dtype=torch.bool))
        d = net(x, "ir")
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def test_absent_modality_copy_gets_no_gradient_and_present_one_does():
    net = _tiny().train()
    x = _images(2)
    net(x, torch.zeros(2, dtype=torch.long)).sum().backward()
    assert net.stem["visible"].conv1.weight.grad is not None
    assert net.stem["infrared"].conv1.weight.grad is None


def test_mixed_batch_trains_both_copies():
    net = _tiny().train()
    x = _images(4)
    net(x, torch.tensor([V, IR, V, IR])).pow(2).mean().backward()
    assert net.stem["visible"].conv1.weight.grad.abs().sum() > 0
    assert net.stem["infrared"].conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("stage", ["stem", "layer1", "layer2", "layer3"])
def test_forward_until_then_from_equals_forward(stage):
    net = _tiny(modality_specific=("stem", "layer2"))
    _perturb_infrared(net, "stem")
    _perturb_infrared(net, "layer2")
    x = _images(4)
    codes = torch.tensor([IR, V, IR, V])
    with torch.no_grad():
        full = net(x, codes)
        mid = net.forward_until(x, codes, stage)
        rest = net.forward_from(mid, codes, stage)
        l3 = net.forward_from(mid, codes, stage, until="layer3") if stage != "layer3" else mid
    torch.testing.assert_close(full, rest, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.forward_until(x, codes, "layer3"), l3, rtol=1e-5, atol=1e-5)


def test_one_stream_ignores_modalities():
    net = _tiny(modality_specific=())
    assert not any(isinstance(m, ModalitySpecific) for m in net.modules())
    x = _images(2)
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor([V, IR])), net(x, Modality.VISIBLE))


def test_four_channel_conv1_extra_channel_is_mean_of_rgb_filters():
    net = _tiny(in_channels=4)
    w = net.stem["visible"].conv1.weight
    assert w.shape == (64, 4, 7, 7)
    assert torch.allclose(w[:, 3], w[:, :3].mean(dim=1))
    assert net(_images(2, c=4), Modality.VISIBLE).shape == (2, 512, 4, 2)


def test_non_local_placement_resnet50_matches_agw():
    torch.manual_seed(0)
    net = ResNetBackbone("resnet50", non_local=True, non_local_inter=1)
    assert sorted(net.layer2.non_local.keys()) == ["2", "3"]
    assert sorted(net.layer3.non_local.keys()) == ["3", "4", "5"]
    assert len(net.layer1.non_local) == 0 and len(net.layer4.non_local) == 0
    assert net.layer3.non_local["3"].g.out_channels == 1


def test_non_local_resnet18_after_available_blocks_and_starts_as_identity():
    net = _tiny(non_local=True, non_local_inter=4)
    assert sorted(net.layer2.non_local.keys()) == ["0", "1"]
    assert sorted(net.layer3.non_local.keys()) == ["0", "1"]
    assert net.layer2.non_local["0"].g.out_channels == 4
    x = _images(2)
    with torch.no_grad():
        with_nl = net.forward_until(x, Modality.VISIBLE, "layer3")
        y = net.forward_until(x, Modality.VISIBLE, "layer1")
        for stage in (net.layer2, net.layer3):
            for block in stage.blocks:
                y = block(y)
    torch.testing.assert_close(with_nl, y, rtol=1e-5, atol=1e-5)


def test_non_local_block_matches_formula():
    torch.manual_seed(0)
    nl = NonLocalBlock(6, inter_channels=2).eval()
    with torch.no_grad():
        nl.W[1].weight.fill_(0.5)
        nl.W[1].bias.fill_(0.1)
    x = torch.randn(2, 6, 3, 4)
    n = 12
    g = torch.einsum("oc,bcn->bon", nl.g.weight[:, :, 0, 0], x.flatten(2)) + nl.g.bias[None, :, None]
    th = torch.einsum("oc,bcn->bon", nl.theta.weight[:, :, 0, 0], x.flatten(2)) + nl.theta.bias[None, :, None]
    ph = torch.einsum("oc,bcn->bon", nl.phi.weight[:, :, 0, 0], x.flatten(2)) + nl.phi.bias[None, :, None]
    f = torch.einsum("bci,bcj->bij", th, ph) / n
    y = torch.einsum("bij,bcj->bci", f, g)
    wy = torch.einsum("oc,bcn->bon", nl.W[0].weight[:, :, 0, 0], y) + nl.W[0].bias[None, :, None]
    bn = nl.W[1]
    wy = (wy - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + bn.eps) * 0.5 + 0.1
    expected = x + wy.reshape(2, 6, 3, 4)
    with torch.no_grad():
        assert torch.allclose(nl(x), expected, atol=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="layer5.*model.modality_specific"):
        ResNetBackbone("resnet18", modality_specific=("layer5",))
    with pytest.raises(ValueError, match="resnet101"):
        ResNetBackbone("resnet101")
    with pytest.raises(ValueError, match="last_stride"):
        ResNetBackbone("resnet18", last_stride=3)
    net = _tiny()
    with pytest.raises(ValueError, match=r"found \[2\]"):
        net(_images(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="3 modality codes for a batch of 2"):
        net(_images(2), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="unknown stage 'layer9'"):
        net.forward_until(_images(1), Modality.VISIBLE, "layer9")
    with pytest.raises(ValueError, match="last stage"):
        net.forward_from(_images(1), Modality.VISIBLE, "layer4")


def test_from_config_uses_model_section():
    from vireid.config import ModelConfig

    cfg = ModelConfig(arch="resnet18", last_stride=2, modality_specific=[], in_channels=4)
    net = ResNetBackbone.from_config(cfg)
    assert net.last_stride == 2 and net.modality_specific == () and net.in_channels == 4
    assert ResNetBackbone.from_config(cfg, modality_specific=("stem",)).modality_specific == ("stem",)
