"""JSIA-ReID the method: spec 3.10 cases, the official iteration's parameter updates, official weight names."""

from __future__ import annotations

import pytest
import torch

from vireid.config import load_config
from vireid.core import Batch, CheckpointError, ConfigError, Modality, TrainingError
from vireid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vireid.engine.stepper import TrainStepper
from vireid.methods import build_method
from vireid.methods.generative import from_gan_image, to_gan_image
from vireid.methods.jsia import (
    JSIA,
    load_official_weights,
    official_key_map,
    official_state_dicts,
    to_gray,
)

from .helpers import REPO, tiny_batch, tiny_config

NUM_CLASSES = 6


def _method(*overrides: str, seed: int = 0) -> tuple:
    cfg = tiny_config("jsia", *overrides)
    torch.manual_seed(seed)
    method = build_method(cfg, NUM_CLASSES)
    method.train()
    return cfg, method


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before: list[torch.Tensor], params) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def _r50(*overrides: str, num_classes: int = 395, seed: int = 0) -> JSIA:
    cfg = load_config(REPO / "configs" / "sysu" / "jsia.yaml", ["model.pretrained=none", *overrides])
    torch.manual_seed(seed)
    return build_method(cfg, num_classes)


# ---------------------------------------------------------------- spec 3.10 cases 2, 4, 5


@pytest.mark.parametrize("pixel,gray", [((0.5, 0.5, 0.5), 0.18251), ((0.0, 0.0, 0.0), -2.03371),
                                        ((1.0, 1.0, 1.0), 2.39873), ((1.0, 0.0, 0.0), -0.72847)])
def test_case2_gray_of_imagenet_normalised_channels(pixel, gray):
    x = _normalise(torch.tensor(pixel).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone())
    g = to_gray(x)
    assert g.shape == (1, 3, 2, 2)
    assert torch.allclose(g, torch.full_like(g, gray), atol=1e-5)


def test_set_level_encoder_sees_only_the_gray_value():
    cfg, method = _method()
    method.eval()
    x = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    same_gray = x.clone()
    same_gray[:, 0] += 0.7
    same_gray[:, 1] -= 0.7 * 0.2989 / 0.5870  # keeps 0.2989 c0 + 0.5870 c1 + 0.1140 c2
    assert not torch.allclose(x, same_gray)
    assert torch.allclose(method.set_level(x), method.set_level(same_gray), atol=1e-5)
    # no ReLU after bn1, as the official E_sl: the stem's output reaching layer1 keeps negative values
    stem = method.backbone.stem
    assert (stem.maxpool(stem.bn1(stem.conv1(to_gray(x)))) < 0).any()


def test_case4_shapes_of_the_resnet50_method_at_256x128():
    method = _r50()
    method.eval()
    x = torch.randn(2, 3, 256, 128)
    content = method.set_level(x)
    assert content.shape == (2, 256, 64, 32)  # E_sl
    assert method.gan_size == (128, 64)
    gan = to_gan_image(x, method.gan_size)
    style = method.generator_rgb.style(gan)
    assert style.shape == (2, 128, 1, 1)
    assert method.generator_rgb.mlp(style).shape == (2, 2048)  # 2 blocks x 2 convs x 2 x 256
    assert method.generator_rgb.decode(content, style).shape == (2, 3, 128, 64)
    fmap, pooled, feat = method(x)
    assert fmap.shape == (2, 2048, 16, 8) and pooled.shape == feat.shape == (2, 2048)
    assert [o.shape[-2:] for o in method.discriminator_rgb(gan)] == [(8, 4), (4, 2)]
    out = method.embed(x, Modality.VISIBLE)
    assert out["bn"].shape == out["pool"].shape == (2, 2048)


def test_shapes_at_128x64():
    method = _r50("data.height=128", "data.width=64")
    method.eval()
    x = torch.randn(2, 3, 128, 64)
    assert method.set_level(x).shape == (2, 256, 32, 16)
    assert method.gan_size == (64, 32)
    t = method.translate(to_gan_image(x, method.gan_size), to_gan_image(x.flip(0), method.gan_size))
    for key in ("rec_rgb", "rec_ir", "fake_rgb", "fake_ir", "cyc_rgb", "cyc_ir"):
        assert t[key].shape == (2, 3, 64, 32), key
    assert t["c_rgb2"].shape == t["c_rgb"].shape == (2, 256, 32, 16)
    assert t["s_ir2"].shape == (2, 128, 1, 1)
    assert [o.shape[-2:] for o in method.discriminator_ir(t["fake_ir"])] == [(4, 2), (2, 1)]


def test_case5_schedule_and_the_four_optimizers():
    cfg = load_config(REPO / "configs" / "sysu" / "jsia.yaml", ["model.pretrained=none", "model.arch=resnet18"])
    assert cfg.train.max_steps_per_epoch == 200  # one official epoch
    assert cfg.method.gan_warmup_epochs == 600 and cfg.train.epochs == 650
    method = build_method(cfg, NUM_CLASSES)
    optimizers = method.optimizers()
    assert list(optimizers) == ["sl_enc", "il_enc", "gen", "dis"]
    settings = {name: (opt.defaults["lr"], opt.defaults["betas"], opt.defaults["weight_decay"])
                for name, (opt, _) in optimizers.items()}
    assert settings == {"sl_enc": (4.5e-4, (0.9, 0.999), 5e-4), "il_enc": (4.5e-4, (0.9, 0.999), 5e-4),
                        "gen": (1e-4, (0.5, 0.999), 1e-4), "dis": (1e-4, (0.5, 0.999), 1e-4)}
    base = {name: lr for name, (lr, _, _) in settings.items()}
    seen: dict[int, dict[str, float]] = {}
    for epoch in range(650):
        seen[epoch] = {name: opt.param_groups[0]["lr"] for name, (opt, _) in optimizers.items()}
        for opt, sched in optimizers.values():
            opt.step()
            sched.step()
    for epoch in (0, 600, 629):
        assert seen[epoch] == pytest.approx(base)
    for epoch in (630, 649):
        assert seen[epoch] == pytest.approx({k: v * 0.1 for k, v in base.items()})


def test_parameter_groups_partition_the_model():
    _, method = _method()
    groups = method.parameter_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(method.parameters()))
    stem = method.backbone.stem
    assert {id(p) for p in (*stem.conv1.parameters(), *method.backbone.layer1.parameters())} <= {
        id(p) for p in groups["sl_enc"]}
    assert {id(p) for p in method.classifier.parameters()} <= {id(p) for p in groups["il_enc"]}


# ---------------------------------------------------------------- the official iteration


class RecordingStepper(TrainStepper):
    """A real TrainStepper that notes, before each backward, which E_sl parameters already hold a gradient."""

    def __init__(self, method: JSIA, epoch: int) -> None:
        super().__init__(method.optimizers())
        self.epoch = epoch
        self.sl = method.parameter_groups()["sl_enc"]
        self.before: list[tuple[str, bool]] = []
        self.after: list[tuple[str, bool]] = []

    def backward(self, loss, *, retain_graph=False, parts=None, what="the objective"):
        self.before.append((what, any(p.grad is not None and p.grad.abs().sum() > 0 for p in self.sl)))
        super().backward(loss, retain_graph=retain_graph, parts=parts, what=what)
        self.after.append((what, any(p.grad is not None and p.grad.abs().sum() > 0 for p in self.sl)))


def _one_iteration(epoch: int):
    cfg, method = _method()
    groups = method.parameter_groups()
    before = {name: _snapshot(params) for name, params in groups.items()}
    stepper = RecordingStepper(method, epoch)
    scalars = method.training_step(tiny_batch(cfg, NUM_CLASSES), stepper)
    changed = {name: _changed(before[name], params) for name, params in groups.items()}
    return method, stepper, scalars, changed


def test_warmup_iteration_updates_generators_and_discriminators_only():
    _, stepper, scalars, changed = _one_iteration(epoch=0)
    assert changed == {"sl_enc": False, "il_enc": False, "gen": True, "dis": True}
    assert stepper.step_counts == {"sl_enc": 0, "il_enc": 0, "gen": 1, "dis": 1}
    assert set(scalars) == {"gen_gan", "gen_rec", "gen_feat", "dis"}
    assert [what for what, _ in stepper.before] == [
        "the latent reconstruction loss", "the generator image loss", "the discriminator loss"]


def test_joint_iteration_steps_all_four_optimizers():
    cfg, method = _method()
    _, stepper, scalars, changed = _one_iteration(epoch=cfg.method.gan_warmup_epochs)
    assert changed == {"sl_enc": True, "il_enc": True, "gen": True, "dis": True}
    assert stepper.step_counts == {"sl_enc": 1, "il_enc": 1, "gen": 1, "dis": 1}
    assert {"pixel", "cls", "triplet", "acc"} <= set(scalars)
    assert all(torch.isfinite(torch.tensor(v)) for v in scalars.values())
    assert [what for what, _ in stepper.before][-2:] == ["the alignment loss", "the re-ID loss"]


@pytest.mark.parametrize("joint", [False, True])
def test_latent_reconstruction_leaves_no_gradient_on_the_set_level_encoder(joint):
    cfg, method = _method()
    epoch = cfg.method.gan_warmup_epochs if joint else 0
    _, stepper, _, _ = _one_iteration(epoch)
    first, second = stepper.after[0], stepper.before[1]
    assert first == ("the latent reconstruction loss", True)  # the re-encoding runs through E_sl ...
    assert second == ("the generator image loss", False)  # ... and those gradients are dropped before the next loss
    assert stepper.after[1] == ("the generator image loss", True)  # the image losses do reach E_sl


def test_discriminator_gradients_of_the_generator_loss_are_dropped():
    cfg, method = _method()
    dis = method.parameter_groups()["dis"]
    seen: list[bool] = []

    class Spy(TrainStepper):
        def backward(self, loss, **kw):
            if kw.get("what") == "the discriminator loss":
                seen.append(any(p.grad is not None for p in dis))
            super().backward(loss, **kw)

    method.training_step(tiny_batch(cfg, NUM_CLASSES), Spy(method.optimizers()))
    assert seen == [False]


def test_gan_sub_batch_is_identity_aligned():
    cfg, method = _method("sampler.num_ids=4", "sampler.num_pos=4")
    batch = tiny_batch(cfg, NUM_CLASSES)
    rgb, ir = method._aligned_pairs(batch)
    assert len(rgb) == len(ir) == cfg.method.gan_ids * cfg.method.gan_per_id
    assert torch.equal(batch.labels[rgb], batch.labels[ir])
    assert batch.visible_mask[rgb].all() and batch.infrared_mask[ir].all()
    assert len(set(batch.labels[rgb].tolist())) == cfg.method.gan_ids


def test_batch_without_enough_cross_modal_identities_is_refused():
    cfg, method = _method()
    batch = tiny_batch(cfg, NUM_CLASSES)
    only_visible = Batch(images=batch.images, labels=batch.labels,
                         modalities=torch.full_like(batch.modalities, Modality.VISIBLE.code),
                         camids=batch.camids, indices=batch.indices)
    with pytest.raises(TrainingError, match="needs 3 identities with images in both modalities"):
        method.training_step(only_visible, TrainStepper(method.optimizers()))


@pytest.mark.parametrize("switches", [
    ("method.variation=true",), ("method.local_regions=2",), ("method.unseen_mix=true",),
    ("method.reconstruct_ir_with=ir", "method.cycle_style=reencoded", "method.alignment_kl=one_way"),
])
def test_switches_train_with_finite_losses(switches):
    cfg, method = _method(*switches)
    groups = method.parameter_groups()
    before = {name: _snapshot(params) for name, params in groups.items()}
    stepper = TrainStepper(method.optimizers())
    stepper.epoch = cfg.method.gan_warmup_epochs
    scalars = method.training_step(tiny_batch(cfg, NUM_CLASSES), stepper)
    assert all(torch.isfinite(torch.tensor(v)) for v in scalars.values())
    assert all(_changed(before[name], params) for name, params in groups.items())
    if "method.local_regions=2" in switches:
        assert len(method.local_heads) == 2
        assert all(p.grad is not None for p in method.local_heads.parameters() if p.requires_grad)


def test_reconstruct_ir_with_picks_the_decoder():
    _, method = _method()
    method.eval()
    size = method.gan_size
    rgb, ir = torch.rand(2, 3, *size) * 2 - 1, torch.rand(2, 3, *size) * 2 - 1
    t_code = method.translate(rgb, ir)
    method.cfg.method.reconstruct_ir_with = "ir"
    t_paper = method.translate(rgb, ir)
    c_ir, s_ir = t_code["c_ir"], t_code["s_ir"]
    assert torch.allclose(t_code["rec_ir"], method.generator_rgb.decode(c_ir, s_ir), atol=1e-6)
    assert torch.allclose(t_paper["rec_ir"], method.generator_ir.decode(c_ir, s_ir), atol=1e-6)
    assert not torch.allclose(t_code["rec_ir"], t_paper["rec_ir"])


@pytest.mark.parametrize("override,message", [
    ("method.reconstruct_ir_with=gray", "method.reconstruct_ir_with must be one of"),
    ("method.alignment_kl=js", "method.alignment_kl must be one of"),
    ("method.gan_ids=0", "method.gan_ids must be >= 1"),
    ("method.betas_gan=[0.5]", "method.betas_gan must be two numbers"),
    ("optim.name=sgd", "jsia trains with Adam"),
    ("data.width=34", "divisible by 4"),
    ("model.modality_specific=[layer1]", "one encoder for both modalities"),
])
def test_bad_options_are_config_errors(override, message):
    cfg = tiny_config("jsia", override)
    with pytest.raises(ConfigError, match=message):
        build_method(cfg, NUM_CLASSES)


def test_images_too_small_for_the_discriminators_are_refused():
    cfg = tiny_config("jsia")
    low = JSIA.min_input_size(cfg)
    cfg = tiny_config("jsia", f"data.height={low[0] - 4}")
    with pytest.raises(ConfigError, match=f"at least {low[0]}x{low[1]}"):
        build_method(cfg, NUM_CLASSES)


# ---------------------------------------------------------------- inference and translations


def test_embed_is_the_same_path_for_both_modalities():
    cfg, method = _method()
    method.eval()
    x = torch.randn(3, 3, cfg.data.height, cfg.data.width)
    vis, ir = method.embed(x, Modality.VISIBLE), method.embed(x, Modality.INFRARED)
    assert set(vis) == set(method.feature_dims()) == {"bn", "pool"}
    for key in vis:
        assert vis[key].shape == (3, 512)
        assert torch.allclose(vis[key], ir[key])
        assert torch.allclose(vis[key].norm(dim=1), torch.ones(3), atol=1e-5)
    _, pooled, feat = method(x)
    assert torch.allclose(vis["bn"], torch.nn.functional.normalize(feat, dim=1), atol=1e-6)


def test_image_translations_pair_the_modalities():
    cfg, method = _method()
    method.train()
    images = torch.randn(5, 3, cfg.data.height, cfg.data.width)
    modality = torch.tensor([Modality.VISIBLE.code] * 3 + [Modality.INFRARED.code] * 2, dtype=torch.int8)
    out = method.image_translations(images, modality)
    assert set(out) == {"real_visible", "real_infrared", "reconstructed_visible", "reconstructed_infrared",
                        "fake_infrared", "fake_visible", "cycle_visible", "cycle_infrared"}
    for name, img in out.items():
        assert img.shape == (2, 3, *method.gan_size), name
        assert 0 <= img.min() and img.max() <= 1, name
    assert method.training  # restored
    expected = to_gan_image(images[:2], method.gan_size) * 0.5 + 0.5
    assert torch.allclose(out["real_visible"], expected.clamp(0, 1))
    with pytest.raises(ValueError, match="both modalities"):
        method.image_translations(images[:3], modality[:3])


def test_gan_and_reid_image_conversions_invert_at_the_same_size():
    x = torch.rand(2, 3, 16, 8)
    reid = _normalise(x)
    assert torch.allclose(to_gan_image(reid, (16, 8)), x * 2 - 1, atol=1e-5)
    assert torch.allclose(from_gan_image(x * 2 - 1, (16, 8)), reid, atol=1e-5)


# ---------------------------------------------------------------- the official code's weight names

# Written from a reading of the official core/networks.py (Encoder, Generator, Discriminator), independent of the
# mapping code: (file index, official key, shape).
OFFICIAL_SAMPLES = [
    (0, "module.mod_invar_enc.resnet_conv1.0.weight", (64, 3, 7, 7)),
    (0, "module.mod_invar_enc.resnet_conv1.1.running_var", (64,)),
    (0, "module.mod_invar_enc.resnet_conv1.3.0.downsample.0.weight", (256, 64, 1, 1)),
    (1, "module.mod_invar_enc.resnet_conv1.3.2.bn3.bias", (256,)),
    (0, "module.mod_invar_enc.resnet_conv2.0.0.conv1.weight", (128, 256, 1, 1)),
    (0, "module.mod_invar_enc.resnet_conv2.2.0.downsample.1.weight", (2048,)),
    (0, "module.mod_invar_enc.resnet_conv2.2.2.conv3.weight", (2048, 512, 1, 1)),
    (0, "module.mod_invar_enc.classifier.bn.weight", (2048,)),
    (0, "module.mod_invar_enc.classifier.classifier.weight", (395, 2048)),
    (0, "module.mod_spec_enc.classifier.weight", (395, 128)),
    (1, "module.dec.model.0.model.1.model.1.conv.weight", (256, 256, 3, 3)),
    (1, "module.dec.model.2.norm.gamma", (128,)),
    (0, "module.dec.model.3.conv.weight", (3, 128, 7, 7)),
    (2, "module.cnns.0.0.conv.weight", (32, 3, 4, 4)),
    (3, "module.cnns.1.4.weight", (1, 256, 1, 1)),
]


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    method = _r50(seed=1)
    folder = tmp_path_factory.mktemp("official")
    dicts = official_state_dicts(method)
    for i, d in enumerate(dicts):
        torch.save(d, folder / f"model-{i}_649.pkl")
    return method, folder, dicts


def test_official_state_dicts_carry_the_official_names(official_files):
    method, _, dicts = official_files
    for index, key, shape in OFFICIAL_SAMPLES:
        assert key in dicts[index], (index, key)
        assert tuple(dicts[index][key].shape) == shape, key
    assert all(k.startswith("module.") for d in dicts for k in d)
    encoder = {k for k in dicts[0] if k.startswith("module.mod_invar_enc.")}
    assert encoder == {k for k in dicts[1] if k.startswith("module.mod_invar_enc.")}
    reid_part = [k for k in method.state_dict() if k.split(".")[0] in ("backbone", "neck", "classifier")]
    assert len(encoder) == len(reid_part)
    assert not any("fc." in k for k in encoder)  # torchvision's fc is not part of the official Encoder
    assert sum(len(d) for d in dicts) == len(method.state_dict()) + len(encoder)


def test_official_weights_round_trip_with_no_missing_or_unexpected_keys(official_files):
    source, folder, _ = official_files
    target = _r50(seed=2)
    assert not torch.equal(target.classifier.fc.weight, source.classifier.fc.weight)
    load_official_weights(target, folder, epoch=649)
    mine, theirs = target.state_dict(), source.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_official_weights_without_batch_counters_load(official_files, tmp_path):
    source, _, dicts = official_files
    paths = []
    for i, d in enumerate(dicts):
        paths.append(tmp_path / f"m{i}.pkl")
        torch.save({k: v for k, v in d.items() if not k.endswith("num_batches_tracked")}, paths[-1])
    target = _r50(seed=2)
    load_official_weights(target, paths)
    assert torch.equal(target.backbone.layer4.blocks[2].conv3.weight, source.backbone.layer4.blocks[2].conv3.weight)


def test_official_weights_errors(official_files, tmp_path):
    _, folder, dicts = official_files
    target = _r50(seed=2)
    with pytest.raises(CheckpointError, match="pass the epoch"):
        load_official_weights(target, folder)
    with pytest.raises(CheckpointError, match="model-0_7.pkl does not exist"):
        load_official_weights(target, folder, epoch=7)
    with pytest.raises(CheckpointError, match="four files"):
        load_official_weights(target, [folder / "model-0_649.pkl"])
    extra = tmp_path / "extra.pkl"
    torch.save({**dicts[2], "module.cnns.9.weight": torch.zeros(1)}, extra)
    paths = [folder / f"model-{i}_649.pkl" for i in range(4)]
    with pytest.raises(CheckpointError, match="no place for.*module.cnns.9.weight"):
        load_official_weights(target, [paths[0], paths[1], extra, paths[3]])
    short = tmp_path / "short.pkl"
    torch.save({k: v for k, v in dicts[3].items() if not k.startswith("module.cnns.1.")}, short)
    with pytest.raises(CheckpointError):
        load_official_weights(target, [*paths[:3], short])
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read .*garbage.pkl"):
        load_official_weights(target, [*paths[:3], garbage])


def test_official_names_exist_only_for_the_official_architecture():
    _, method = _method("method.variation=true")
    with pytest.raises(CheckpointError, match="variation"):
        official_key_map(method)
