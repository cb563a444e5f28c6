"""cmGAN: objective signs and schedule (docs/reference/methods.md#cmgan-6-8), the K-step alternation
through a real TrainStepper, heads, configs.
"""

from __future__ import annotations

import math

import pytest
import torch

from vireid.config import load_config
from vireid.core import ConfigError, TrainingError
from vireid.engine.stepper import TrainStepper
from vireid.losses.cmgan import (
    generator_loss,
    generator_objective,
    literal_discriminator_objective,
    modality_accuracy,
    modality_cross_entropy,
    split_discriminator_objective,
)
from vireid.methods import build_method
from vireid.methods.cmgan import is_discriminator_step
from vireid.models.discriminator import IdHead, ModalityDiscriminator

from .helpers import REPO, tiny_batch, tiny_config

NUM_CLASSES = 6
SMALL = ("sampler.num_ids=2", "sampler.num_pos=2")  # 8 images a batch: 2 ids x (2 visible + 2 infrared)


def _method(*overrides: str, seed: int = 0):
    cfg = tiny_config("cmgan", *SMALL, *overrides)
    torch.manual_seed(seed)
    method = build_method(cfg, NUM_CLASSES)
    method.train()
    return cfg, method


class RecordingStepper:
    """A Stepper that records what it is asked to step and updates nothing."""

    def __init__(self, epoch: int = 0, global_step: int = 0) -> None:
        self.epoch, self.global_step = epoch, global_step
        self.calls: list[tuple[str, float]] = []

    def __call__(self, loss, name="main", *, retain_graph=False, parts=None):
        self.calls.append((name, float(loss.detach())))


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before: list[torch.Tensor], params) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


# ---------------------------------------------------------------- docs/reference/methods.md#cmgan-6-8 numbers


def test_alternation_sign_spec_numbers():
    # docs/reference/methods.md#cmgan-6-8-1: l_gen = 2.0, l_dis = 0.6, gamma = 0.05, eta = 1
    assert generator_objective(2.0, 0.6, 0.05) == pytest.approx(1.97)
    assert literal_discriminator_objective(2.0, 0.6, 0.05, 1.0) == pytest.approx(-1.97)
    assert split_discriminator_objective(0.6, 0.05, 1.0) == pytest.approx(0.03)
    # the same on tensors, and eta scales the D-step objectives
    g, d = torch.tensor(2.0), torch.tensor(0.6)
    assert float(generator_objective(g, d, 0.05)) == pytest.approx(1.97)
    assert float(literal_discriminator_objective(g, d, 0.05, 2.0)) == pytest.approx(-3.94)
    assert float(split_discriminator_objective(d, 0.05, 2.0)) == pytest.approx(0.06)
    assert generator_loss(0.5, 1.5, alpha=1.0, beta=1.0) == pytest.approx(2.0)
    assert generator_loss(0.5, 1.5, alpha=2.0, beta=0.5) == pytest.approx(1.75)


def test_schedule_k5_discriminator_steps():
    # docs/reference/methods.md#cmgan-6-8-2: with K = 5, e = 0, 5, 10 are D-steps, all others G-steps
    assert [e for e in range(12) if is_discriminator_step(e, 5)] == [0, 5, 10]
    assert [e for e in range(4) if is_discriminator_step(e, 1)] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="alternate_every"):
        is_discriminator_step(3, 0)


def test_modality_cross_entropy_and_accuracy_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0]])
    codes = torch.tensor([0, 1, 1, 0], dtype=torch.int8)
    # -log softmax: log(1+e^-2) twice, log(1+e^1), log 2
    expected = (2 * math.log1p(math.exp(-2.0)) + math.log1p(math.e) + math.log(2.0)) / 4
    assert float(modality_cross_entropy(logits, codes)) == pytest.approx(expected, rel=1e-6)
    # rows 0, 1 right, row 2 wrong, row 3 a tie resolved to code 0 (right)
    assert float(modality_accuracy(logits, codes)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="3 modality codes for 4"):
        modality_cross_entropy(logits, codes[:3])


# ---------------------------------------------------------------- heads


def test_heads_have_the_documented_layers():
    head = IdHead(2048, 395)
    assert (head.fc1.in_features, head.fc1.out_features, head.fc2.out_features) == (2048, 512, 395)
    assert head.fc1.bias is not None and head.fc2.bias is not None
    hidden, logits = head(torch.randn(3, 2048))
    assert hidden.shape == (3, 512) and logits.shape == (3, 395)
    disc = ModalityDiscriminator(2048)
    linears = [m for m in disc.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 1000), (1000, 500), (500, 2)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in disc.net) == 2  # none after the logits
    assert disc(torch.randn(4, 2048)).shape == (4, 2)
    assert isinstance(head.act, torch.nn.ReLU)
    leaky = IdHead(4, 3, hidden_dim=2, activation="leaky_relu")
    with torch.no_grad():
        leaky.fc1.weight.fill_(-1.0)
        leaky.fc1.bias.zero_()
    x = torch.ones(2, 4)
    hidden, _ = leaky(x)
    assert torch.equal(hidden, torch.full((2, 2), -4.0))
    # slope 0.1: a negative unit still passes gradient
    assert torch.allclose(leaky.act(hidden), torch.full((2, 2), -0.4))
    with pytest.raises(ValueError, match="IdHead activation must be one of"):
        IdHead(4, 3, activation="tanh")
    assert ModalityDiscriminator(8, hidden=[16]).widths == (8, 16, 2)
    with pytest.raises(ValueError, match="ModalityDiscriminator: every layer width must be >= 1"):
        ModalityDiscriminator(8, hidden=[0])


# ---------------------------------------------------------------- alternation through the Stepper


def test_split_alternation_over_ten_steps_with_a_real_stepper():
    cfg, method = _method()
    batch = tiny_batch(cfg, NUM_CLASSES)
    optimizers = method.optimizers()
    assert set(optimizers) == {"gen", "disc"}
    stepper = TrainStepper(optimizers)
    disc = list(method.discriminator.parameters())
    gen = method.generator_parameters()
    assert len(gen) + len(disc) == len(list(method.parameters()))
    disc_changed, gen_changed = [], []
    for e in range(10):
        d0, g0 = _snapshot(disc), _snapshot(gen)
        scalars = method.training_step(batch, stepper)
        stepper.global_step += 1  # what the Trainer does after each training_step
        disc_changed.append(_changed(d0, disc))
        gen_changed.append(_changed(g0, gen))
        assert scalars["d_step"] == float(e % 5 == 0)
    assert stepper.step_counts == {"gen": 8, "disc": 2}
    assert [e for e, c in enumerate(disc_changed) if c] == [0, 5]
    assert [e for e, c in enumerate(gen_changed) if c] == [1, 2, 3, 4, 6, 7, 8, 9]


def test_g_step_computes_no_discriminator_gradient_and_unfreezes_it():
    cfg, method = _method()
    stepper = TrainStepper(method.optimizers())
    stepper.global_step = 1  # a G-step
    method.training_step(tiny_batch(cfg, NUM_CLASSES), stepper)
    disc = list(method.discriminator.parameters())
    assert all(p.grad is None for p in disc)
    assert all(p.requires_grad for p in disc)  # frozen only for the step
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())


def test_split_mode_steps_the_spec_objectives():
    cfg, method = _method()
    batch = tiny_batch(cfg, NUM_CLASSES)
    gamma, eta = cfg.method.gamma, cfg.method.eta
    d = RecordingStepper(global_step=10)
    s = method.training_step(batch, d)
    assert d.calls[0][0] == "disc" and s["d_step"] == 1.0
    assert d.calls[0][1] == pytest.approx(eta * gamma * s["disc"], rel=1e-5)
    g = RecordingStepper(global_step=3)
    s = method.training_step(batch, g)
    assert g.calls[0][0] == "gen" and s["d_step"] == 0.0
    assert s["gen"] == pytest.approx(s["triplet"] + s["ide"], rel=1e-5)
    assert g.calls[0][1] == pytest.approx(s["gen"] - gamma * s["disc"], rel=1e-5)
    assert s["objective"] == pytest.approx(g.calls[0][1])


def test_literal_mode_one_optimizer_and_sign_flip():
    cfg, method = _method("method.mode=literal", "method.eta=2.0")
    batch = tiny_batch(cfg, NUM_CLASSES)
    optimizers = method.optimizers()
    assert set(optimizers) == {"main"}
    opt = optimizers["main"][0]
    stepped = {id(p) for grp in opt.param_groups for p in grp["params"]}
    assert stepped == {id(p) for p in method.parameters() if p.requires_grad}
    disc_lrs = [grp["lr"] for grp in opt.param_groups if any(p is method.discriminator.net[0].weight
                                                             for p in grp["params"])]
    assert disc_lrs == [pytest.approx(cfg.method.disc_lr)]
    gamma = cfg.method.gamma
    rec = RecordingStepper(global_step=5)
    s = method.training_step(batch, rec)
    assert rec.calls[0][0] == "main"
    assert rec.calls[0][1] == pytest.approx(2.0 * (gamma * s["disc"] - s["gen"]), rel=1e-5)
    rec = RecordingStepper(global_step=6)
    s = method.training_step(batch, rec)
    assert rec.calls[0][1] == pytest.approx(s["gen"] - gamma * s["disc"], rel=1e-5)
    # read literally, a G-step also moves the discriminator (towards a higher CE of its own)
    stepper = TrainStepper(optimizers)
    stepper.global_step = 1
    d0 = _snapshot(method.discriminator.parameters())
    method.training_step(batch, stepper)
    assert _changed(d0, method.discriminator.parameters())


def test_alternation_can_count_epochs():
    cfg, method = _method("method.alternate_over=epochs")
    batch = tiny_batch(cfg, NUM_CLASSES)
    rec = RecordingStepper(epoch=5, global_step=3)
    method.training_step(batch, rec)
    assert rec.calls[0][0] == "disc"
    rec = RecordingStepper(epoch=1, global_step=5)
    method.training_step(batch, rec)
    assert rec.calls[0][0] == "gen"


def test_split_optimizers_use_the_two_learning_rates():
    cfg, method = _method("optim.lr=0.0001", "method.disc_lr=0.001")
    opts = method.optimizers()
    gen, disc = opts["gen"][0], opts["disc"][0]
    assert [g["lr"] for g in gen.param_groups] == [pytest.approx(1e-4)] * 2  # backbone, ID head
    assert [g["lr"] for g in disc.param_groups] == [pytest.approx(1e-3)]
    disc_ids = {id(p) for p in method.discriminator.parameters()}
    assert not disc_ids & {id(p) for g in gen.param_groups for p in g["params"]}
    assert disc_ids == {id(p) for g in disc.param_groups for p in g["params"]}


def test_epoch_summary_is_the_mean_discriminator_accuracy():
    cfg, method = _method()
    batch = tiny_batch(cfg, NUM_CLASSES)
    method.on_epoch_start(0)
    assert method.epoch_summary() == {}
    accs = [method.training_step(batch, RecordingStepper(global_step=e))["disc_acc"] for e in range(6)]
    summary = method.epoch_summary()
    assert summary["disc_acc"] == pytest.approx(sum(accs) / 6)
    assert summary["disc_updates"] == 2.0  # e = 0 and 5
    method.on_epoch_start(1)
    assert method.epoch_summary() == {}


def test_random_mining_is_seeded_by_the_step():
    cfg, method = _method("method.mining=random")
    batch = tiny_batch(cfg, NUM_CLASSES)
    method.eval()  # same BN statistics for every call
    a = method.training_step(batch, RecordingStepper(global_step=7))["triplet"]
    b = method.training_step(batch, RecordingStepper(global_step=7))["triplet"]
    assert a == b
    hard_cfg, hard = _method()
    hard.eval()
    h = hard.training_step(batch, RecordingStepper(global_step=7))["triplet"]
    assert h >= a - 1e-5  # the hardest triplets cost at least as much as random ones on the same weights


# ---------------------------------------------------------------- errors and embedding


def test_batch_without_both_modalities_is_refused():
    cfg, method = _method()
    batch = tiny_batch(cfg, NUM_CLASSES)
    only_visible = type(batch)(images=batch.images, labels=batch.labels,
                               modalities=torch.zeros_like(batch.modalities), camids=batch.camids,
                               indices=batch.indices)
    with pytest.raises(TrainingError, match="both modalities .* 8 visible and 0 infrared"):
        method.training_step(only_visible, RecordingStepper())
    vis = batch.modalities == 0
    labels = batch.labels.clone()
    labels[~vis] = labels[~vis] + 100  # no identity appears in both modalities
    disjoint = type(batch)(images=batch.images, labels=labels, modalities=batch.modalities,
                           camids=batch.camids, indices=batch.indices)
    with pytest.raises(TrainingError, match="identity with images in both modalities"):
        method.training_step(disjoint, RecordingStepper())


@pytest.mark.parametrize("key,value", [("mode", "both"), ("alternate_over", "batches"), ("mining", "semi"),
                                       ("bn_feature", "neck"), ("id_activation", "gelu")])
def test_bad_options_are_config_errors(key, value):
    cfg = tiny_config("cmgan", *SMALL, f"method.{key}={value}")
    with pytest.raises(ConfigError, match=f"method.{key} must be one of"):
        build_method(cfg, NUM_CLASSES)


def test_embed_bn_is_the_gap_feature_by_default_or_the_hidden_layer():
    cfg, method = _method()
    method.eval()
    images = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    out = method.embed(images, torch.tensor([0, 1], dtype=torch.int8))
    assert torch.equal(out["bn"], out["pool"])
    assert method.feature_dims() == {"bn": 512, "pool": 512, "hidden": 512}  # resnet18: 512-d GAP
    cfg2, other = _method("method.bn_feature=hidden", "method.id_hidden=32")
    other.eval()
    out = other.embed(images, torch.tensor([0, 1], dtype=torch.int8))
    assert other.feature_dims() == {"bn": 32, "pool": 512, "hidden": 32}
    assert torch.equal(out["bn"], out["hidden"]) and out["bn"].shape == (2, 32)


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["sysu", "regdb"])
def test_benchmark_configs_carry_the_paper_values(name):
    cfg = load_config(REPO / "configs" / name / "cmgan.yaml")
    m = cfg.method
    assert (m.name, m.mode, m.alternate_every, m.margin, m.gamma, m.alpha, m.beta) == (
        "cmgan", "split", 5, 1.4, 0.05, 1.0, 1.0)
    assert (cfg.optim.lr, m.disc_lr, cfg.optim.backbone_lr_mult) == (1e-4, 1e-3, 1.0)
    assert (cfg.model.arch, cfg.model.last_stride, cfg.model.modality_specific, cfg.model.pooling) == (
        "resnet50", 2, [], "avg")
    assert (m.id_hidden, m.id_activation, m.disc_hidden, m.mining) == (512, "relu", [1000, 500], "hard")
    assert 2 * cfg.sampler.num_ids * cfg.sampler.num_pos == 20  # the paper's batch size
    assert cfg.data.name == name and cfg.eval.protocol == name


def test_synthetic_preset_is_a_small_cpu_model():
    cfg = load_config(REPO / "configs" / "synthetic" / "cmgan.yaml")
    assert (cfg.model.arch, cfg.model.pretrained, cfg.data.height, cfg.data.width) == ("resnet18", "none", 128, 64)
    assert cfg.data.root == "data/synthetic-sysu" and cfg.sampler.kind == "agw"
    assert cfg.method.disc_lr == pytest.approx(10 * cfg.optim.lr)
