"""D2RL the method: spec 2.8 cases, which parameters each update of an iteration changes, L_F's gradient into T_I,
the multi-spectral test path, options and their errors, UNIT checkpoints."""

from __future__ import annotations

import pytest
import torch

from vireid.config import load_config
from vireid.core import Batch, CheckpointError, ConfigError, Modality, TrainingError
from vireid.engine.stepper import TrainStepper
from vireid.losses import batch_hard_triplet
from vireid.losses.d2rl import feature_level_loss, image_level_loss, joint_objective
from vireid.methods import build_method
from vireid.methods.d2rl import (
    D2RL,
    IR_MEAN,
    IR_STD,
    infrared_channel,
    load_unit_weights,
    multispectral,
)
from vireid.methods.generative import to_gan_image

from .helpers import REPO, tiny_batch, tiny_config

NUM_CLASSES = 6


def _method(*overrides: str, seed: int = 0) -> tuple:
    # D2RL's own head (HHL's) unless a test asks for another; the synthetic preset uses bnneck
    cfg = tiny_config("d2rl", "method.head=hhl", *overrides)
    torch.manual_seed(seed)
    method = build_method(cfg, NUM_CLASSES)
    method.train()
    return cfg, method


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before: list[torch.Tensor], params) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def _r50(*overrides: str, num_classes: int = 395) -> D2RL:
    cfg = load_config(REPO / "configs" / "sysu" / "d2rl.yaml", ["model.pretrained=none", *overrides])
    torch.manual_seed(0)
    return build_method(cfg, num_classes)


# ---------------------------------------------------------------- spec 2.8


def test_case2_loss_composition():
    assert image_level_loss(0.2, 0.05, 0.3, 0.04) == pytest.approx(12.02)
    assert joint_objective(3.0, 5.0, 0.2) == pytest.approx(3.4)
    assert feature_level_loss(0.5, 0.25) == pytest.approx(7.5)
    assert image_level_loss(0.2, 0.05, 0.3, 0.04, 1.0, weight_cycle_kl=0.1) == pytest.approx(12.12)


def test_case3_batch_hard_triplet_with_margin_0_8():
    features = torch.tensor([[0.0], [1.0], [1.5], [3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(features, labels, margin=0.8).item() == pytest.approx(0.925, abs=1e-5)


def test_case4_shapes_of_the_resnet50_method():
    method = _r50("data.height=256", "data.width=128").eval()
    u = torch.randn(2, 4, 256, 128)
    out = method.features(u)
    assert out["f"].shape == (2, 1024) and out["triplet"].shape == (2, 128) and out["logits"].shape == (2, 395)
    assert out["pool"].shape == (2, 2048)
    assert method.backbone.stem.conv1.weight.shape == (64, 4, 7, 7)
    x = torch.rand(2, 3, 228, 228) * 2 - 1
    mu = method.generator_rgb.encode(x)
    assert mu.shape == (2, 256, 57, 57)
    assert method.generator_ir.decode(mu).shape == (2, 3, 228, 228)
    # the discriminators' three scales on 228x228: 228 -> 14, 114 -> 7, 57 -> 3 after four stride-2 convs
    assert [tuple(o.shape) for o in method.discriminator_rgb(x)] == [(2, 1, 14, 14), (2, 1, 7, 7), (2, 1, 3, 3)]


def test_multispectral_input_channels():
    rgb = torch.rand(2, 3, 8, 4) * 2 - 1
    ir = torch.rand(2, 3, 8, 4) * 2 - 1
    u = multispectral(rgb, ir, "mean")
    assert u.shape == (2, 4, 8, 4)
    assert torch.allclose(to_gan_image(u[:, :3]), rgb.clamp(-1, 1), atol=1e-5)  # the RGB part is ImageNet-normalised
    expected_ir = ((ir.mean(dim=1) + 1) / 2 - IR_MEAN) / IR_STD
    assert torch.allclose(u[:, 3], expected_ir, atol=1e-6)
    assert torch.equal(infrared_channel(ir, "2"), ir[:, 2:3])
    assert torch.allclose(multispectral(rgb, ir, "0")[:, 3], ((ir[:, 0] + 1) / 2 - IR_MEAN) / IR_STD)


# ---------------------------------------------------------------- the iteration


class Recorder(TrainStepper):
    """A real TrainStepper that snapshots every parameter group before each optimizer step it is asked for."""

    def __init__(self, method: D2RL, epoch: int) -> None:
        super().__init__(method.optimizers())
        self.epoch = epoch
        self.groups = method.parameter_groups()
        self.snapshots: list[tuple[tuple[str, ...], dict[str, list[torch.Tensor]]]] = []
        self.grads: list[dict[str, bool]] = []

    def step_optimizers(self, *names: str) -> None:
        self.grads.append({g: any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
                           for g, params in self.groups.items()})
        self.snapshots.append((names, {g: _snapshot(params) for g, params in self.groups.items()}))
        super().step_optimizers(*names)


def _iteration(epoch: int, *overrides: str):
    cfg, method = _method(*overrides)
    groups = method.parameter_groups()
    before = {g: _snapshot(params) for g, params in groups.items()}
    stepper = Recorder(method, epoch)
    scalars = method.training_step(tiny_batch(cfg, NUM_CLASSES), stepper)
    after = {g: _snapshot(params) for g, params in groups.items()}
    return cfg, method, stepper, scalars, before, after


def _moved(a: dict, b: dict) -> dict[str, bool]:
    return {g: any(not torch.equal(x, y) for x, y in zip(a[g], b[g], strict=True)) for g in a}


def test_parameter_groups_partition_the_model():
    _, method = _method()
    groups = method.parameter_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(method.parameters()))


def test_discriminator_step_first_then_the_joint_step_of_t_i_and_t_f():
    _, _, stepper, scalars, before, after = _iteration(epoch=5)
    (d_names, at_d), (g_names, at_g) = stepper.snapshots
    assert d_names == ("dis",) and g_names == ("gen", "reid")
    assert stepper.step_counts == {"gen": 1, "dis": 1, "reid": 1}
    # the discriminator step changes the discriminators only
    assert _moved(at_d, at_g) == {"gen": False, "dis": True, "reid": False}
    # the discriminator loss puts gradients on the discriminators only (the translations are detached)
    assert stepper.grads[0] == {"gen": False, "dis": True, "reid": False}
    assert _moved(at_g, after) == {"gen": True, "dis": False, "reid": True}
    assert {"kl", "recon", "gan", "cycle", "cycle_kl", "L_I", "dis", "ce", "triplet", "L_F", "acc"} == set(scalars)
    assert all(torch.isfinite(torch.tensor(v)) for v in scalars.values())


def test_dis_every_skips_discriminator_updates_between():
    cfg, method = _method("method.dis_every=2")
    stepper = Recorder(method, epoch=3)
    batch = tiny_batch(cfg, NUM_CLASSES)
    for global_step in range(3):
        stepper.global_step = global_step
        method.training_step(batch, stepper)
    assert [names for names, _ in stepper.snapshots] == [("dis",), ("gen", "reid"), ("gen", "reid"), ("dis",),
                                                         ("gen", "reid")]


def test_t_i_pretraining_leaves_t_f_untouched():
    cfg, _, stepper, scalars, before, after = _iteration(0, "method.ti_pretrain_epochs=1")
    assert stepper.step_counts == {"gen": 1, "dis": 1, "reid": 0}
    assert _moved(before, after) == {"gen": True, "dis": True, "reid": False}
    assert "L_F" not in scalars


def test_feature_loss_gradient_reaches_t_i_through_the_translations():
    cfg, method = _method()
    batch = tiny_batch(cfg, NUM_CLASSES)
    vis, ir = batch.visible_mask, batch.infrared_mask
    images = to_gan_image(batch.images)
    t = method.translate(images[vis], images[ir])
    method.zero_grad()
    method.feature_loss(t, batch.labels[vis], batch.labels[ir])["L_F"].backward()
    groups = method.parameter_groups()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["gen"])
    # both generators' decoders are reached: x_hat comes from G_i, y_hat from G_v
    for gen in (method.generator_rgb, method.generator_ir):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.dec.parameters())
    assert all(p.grad is None for p in groups["dis"])


def test_a_batch_without_one_modality_is_refused():
    cfg, method = _method()
    batch = tiny_batch(cfg, NUM_CLASSES)
    only_visible = Batch(images=batch.images, labels=batch.labels,
                         modalities=torch.full_like(batch.modalities, Modality.VISIBLE.code),
                         camids=batch.camids, indices=batch.indices)
    with pytest.raises(TrainingError, match="visible and infrared images in every batch"):
        method.training_step(only_visible, TrainStepper(method.optimizers()))


@pytest.mark.parametrize("switches", [
    ("method.gan_kind=lsgan",), ("method.share_latent=true",), ("method.head_order=hhl", "method.ir_channel=0"),
    ("method.ir_filter_init=zero",),
])
def test_switches_train_with_finite_losses(switches):
    _, _, _, scalars, before, after = _iteration(3, *switches)
    assert all(torch.isfinite(torch.tensor(v)) for v in scalars.values())
    assert all(_moved(before, after).values())


def test_share_latent_shares_exactly_the_two_residual_blocks():
    _, method = _method("method.share_latent=true", "method.gen_res_blocks=2")
    rgb, ir = method.generator_rgb, method.generator_ir
    assert rgb.enc.model[-1].model[-1] is ir.enc.model[-1].model[-1]
    assert rgb.dec.model[0].model[0] is ir.dec.model[0].model[0]
    assert rgb.enc.model[-1].model[0] is not ir.enc.model[-1].model[0]
    _, plain = _method("method.gen_res_blocks=2")
    shared = {id(p) for p in rgb.parameters()} & {id(p) for p in ir.parameters()}
    assert len(shared) == 2 * 4  # two blocks x two convs x (weight, bias)
    assert not {id(p) for p in plain.generator_rgb.parameters()} & {id(p) for p in plain.generator_ir.parameters()}


def test_gan_kinds_give_their_losses():
    cfg, method = _method()
    _, lsgan = _method("method.gan_kind=lsgan")
    lsgan.load_state_dict(method.state_dict())
    batch = tiny_batch(cfg, NUM_CLASSES)
    images = to_gan_image(batch.images)
    vis, ir = batch.visible_mask, batch.infrared_mask
    torch.manual_seed(1)
    t = method.translate(images[vis], images[ir])
    ns, ls = method.image_loss(t)["gan"], lsgan.image_loss(t)["gan"]
    outs = method.discriminator_ir(t["fake_ir"]) + method.discriminator_rgb(t["fake_rgb"])
    expected_ls = sum(((o - 1) ** 2).mean() for o in outs)
    expected_ns = sum(torch.nn.functional.softplus(-o).mean() for o in outs)  # -log sigmoid(o)
    assert ls.item() == pytest.approx(expected_ls.item(), rel=1e-5)
    assert ns.item() == pytest.approx(expected_ns.item(), rel=1e-5)


def test_head_order_moves_dropout_before_or_after_the_triplet_head():
    _, paper = _method()
    _, hhl = _method("method.head_order=hhl")
    u = torch.randn(8, 4, 32, 32)
    torch.manual_seed(0)
    a = paper.features(u)
    torch.manual_seed(0)
    b = hhl.features(u)
    assert torch.allclose(a["f"], b["f"]) and torch.allclose(a["logits"], b["logits"])
    assert torch.allclose(b["triplet"], hhl.triplet(b["f"]), atol=1e-6)  # hhl: on f itself
    assert not torch.allclose(a["triplet"], b["triplet"])  # paper: on the dropped-out f
    paper.eval()
    hhl.eval()
    assert torch.allclose(paper.features(u)["triplet"], hhl.features(u)["triplet"], atol=1e-6)


def test_bnneck_head_puts_the_baselines_head_on_the_pooled_feature():
    cfg, method = _method("method.head=bnneck")
    assert not hasattr(method, "feat") and not hasattr(method, "triplet")
    u = torch.randn(8, 4, 32, 32)
    out = method.features(u)
    dim = method.dim
    assert out["f"].shape == (8, dim) and out["logits"].shape == (8, NUM_CLASSES)
    assert torch.equal(out["triplet"], out["pool"])  # the batch-hard triplet on the pooled feature
    assert torch.allclose(out["f"], method.neck(out["pool"]))
    assert method.classifier.fc.bias is None and not method.neck.bn.bias.requires_grad
    head = {id(p) for p in method.head_parameters()}
    assert head == {id(p) for p in [*method.neck.parameters(), *method.classifier.parameters()]}
    method.eval()
    x = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    emb = method.embed(x, Modality.INFRARED)
    assert set(emb) == set(method.feature_dims()) == {"bn", "pool"} and emb["bn"].shape == (2, dim)
    # one training iteration steps the BN-neck head with T_F
    method.train()
    _, _, stepper, scalars, before, after = _iteration(5, "method.head=bnneck")
    assert stepper.step_counts == {"gen": 1, "dis": 1, "reid": 1} and torch.isfinite(torch.tensor(scalars["ce"]))
    with pytest.raises(ConfigError, match="method.head"):
        _method("method.head=fc")


def test_ir_filter_init_zero_and_rgb_mean():
    _, zero = _method("method.ir_filter_init=zero")
    assert zero.backbone.stem.conv1.weight[:, 3].abs().sum() == 0
    _, mean = _method()
    w = mean.backbone.stem.conv1.weight
    assert torch.allclose(w[:, 3], w[:, :3].mean(dim=1), atol=1e-6)


@pytest.mark.parametrize("override,message", [
    ("method.gamma=1.0", "method.gamma must be in \\(0, 1\\)"),
    ("method.gan_kind=wgan", "method.gan_kind must be one of"),
    ("method.ir_channel=3", "method.ir_channel must be one of"),
    ("method.head_order=late", "method.head_order must be one of"),
    ("model.in_channels=3", "set model.in_channels=4"),
    ("optim.name=sgd", "set optim.name=adam"),
    ("method.ti_pretrain_epochs=-1", "ti_pretrain_epochs must be >= 0"),
    ("model.modality_specific=[stem]", "set model.modality_specific=\\[\\]"),
])
def test_bad_options_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        _method(override)


def test_images_too_small_for_the_discriminators_are_refused():
    with pytest.raises(ConfigError, match="at least 64x64 .*disc_scales=3"):
        _method("method.disc_scales=3", "data.height=64", "data.width=32")
    with pytest.raises(ConfigError, match="divisible by 2\\*\\*method.gen_downsample = 4"):
        _method("data.height=34")


# ---------------------------------------------------------------- test time


def test_embed_takes_the_modality_path_and_per_item_codes_agree():
    cfg, method = _method()
    method.eval()
    x = torch.randn(4, 3, cfg.data.height, cfg.data.width)
    vis = method.embed(x, Modality.VISIBLE)
    ir = method.embed(x, Modality.INFRARED)
    assert set(vis) == {"bn", "pool", "triplet"} and vis["bn"].shape == (4, 1024)
    assert not torch.allclose(vis["bn"], ir["bn"])  # different multi-spectral images
    codes = torch.tensor([Modality.VISIBLE.code, Modality.INFRARED.code] * 2)
    mixed = method.embed(x, codes)
    for key in vis:
        expected = torch.where((codes == Modality.INFRARED.code).unsqueeze(1), ir[key], vis[key])
        assert torch.allclose(mixed[key], expected, atol=1e-6), key
    g = to_gan_image(x)
    u = multispectral(g, method.generator_ir.decode(method.generator_rgb.encode(g)))
    assert torch.allclose(vis["bn"], torch.nn.functional.normalize(method.features(u)["f"], dim=1), atol=1e-6)
    assert method.inference_spec().modality_specific and method.feature_dims()["bn"] == 1024


def test_image_translations_pair_the_modalities():
    cfg, method = _method()
    images = torch.randn(5, 3, cfg.data.height, cfg.data.width)
    modality = torch.tensor([Modality.VISIBLE.code] * 3 + [Modality.INFRARED.code] * 2, dtype=torch.int8)
    out = method.image_translations(images, modality)
    assert set(out) == {"real_visible", "real_infrared", "reconstructed_visible", "reconstructed_infrared",
                        "fake_infrared", "fake_visible", "cycle_visible", "cycle_infrared"}
    for name, img in out.items():
        assert img.shape == (2, 3, cfg.data.height, cfg.data.width), name
        assert 0 <= img.min() and img.max() <= 1, name
    assert method.training
    g = to_gan_image(images[:2])
    method.eval()
    assert torch.allclose(out["fake_infrared"],
                          method.generator_ir.decode(method.generator_rgb.encode(g)) * 0.5 + 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="both modalities"):
        method.image_translations(images[:3], modality[:3])


# ---------------------------------------------------------------- UNIT checkpoints


def _unit_files(method: D2RL, tmp_path, visible: str = "a"):
    ir = "b" if visible == "a" else "a"
    gen = {visible: method.generator_rgb.state_dict(), ir: method.generator_ir.state_dict()}
    dis = {visible: method.discriminator_rgb.state_dict(), ir: method.discriminator_ir.state_dict()}
    torch.save(gen, tmp_path / "gen_00010000.pt")
    torch.save(dis, tmp_path / "dis_00010000.pt")
    return tmp_path / "gen_00010000.pt", tmp_path / "dis_00010000.pt"


@pytest.mark.parametrize("visible", ["a", "b"])
def test_unit_checkpoints_load_into_t_i(tmp_path, visible):
    _, source = _method(seed=1)
    gen, dis = _unit_files(source, tmp_path, visible)
    _, target = _method(seed=2)
    load_unit_weights(target, gen, dis, visible=visible)
    for name in ("generator_rgb", "generator_ir", "discriminator_rgb", "discriminator_ir"):
        own, src = getattr(target, name).state_dict(), getattr(source, name).state_dict()
        assert all(torch.equal(own[k], src[k]) for k in own), name
    assert not torch.equal(target.backbone.stem.conv1.weight, source.backbone.stem.conv1.weight)  # T_F untouched


def test_unit_checkpoint_errors(tmp_path):
    _, source = _method(seed=1)
    gen, dis = _unit_files(source, tmp_path)
    _, wide = _method(f"method.gen_dim={2 * source.cfg.method.gen_dim}")
    with pytest.raises(CheckpointError, match="does not fit VAEGen.*method.gen_"):
        load_unit_weights(wide, gen)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_unit_weights(source, tmp_path / "nope.pt")
    torch.save({"gen": source.generator_rgb.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a UNIT checkpoint"):
        load_unit_weights(source, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="visible must be 'a' or 'b'"):
        load_unit_weights(source, gen, visible="rgb")
