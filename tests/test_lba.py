"""LbA: CMAlign mechanics and pairing, dense triplet reductions, ID consistency, schedule, method.

Reference: docs/reference/methods.md#lba-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vireid.config import load_config
from vireid.core import Batch, ConfigError, Modality, TrainingError
from vireid.losses.lba import dense_triplet, dense_triplet_map, id_consistency, lba_objective
from vireid.methods import build_method
from vireid.models import BNNeck, Classifier, ResNetBackbone
from vireid.models.cmalign import (
    CMAlign,
    Pairs,
    coattention,
    cross_modal_pairs,
    feature_similarity,
    identity_blocks,
    matching_probability,
    person_mask,
    reconstruct,
    soft_warp,
)
from vireid.optim import lr_factor

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.arch=resnet18", "model.pretrained=none", "data.height=32", "data.width=16", "train.device=cpu"]
V, IR = Modality.VISIBLE.code, Modality.INFRARED.code


def _cfg(preset: str = "synthetic", *overrides: str):
    return load_config(REPO / "configs" / preset / "lba.yaml", [*TINY, *overrides])


def _method(*overrides: str, num_classes: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    return build_method(_cfg("synthetic", *overrides), num_classes)


def _agw_layout(p: int = 8, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """labels, modalities of a P x K visible + the same P x K infrared batch (sampler kind agw)."""
    labels = torch.arange(p).repeat_interleave(k)
    return torch.cat([labels, labels]), torch.tensor([V] * (p * k) + [IR] * (p * k), dtype=torch.int8)


class _Step:
    """A stand-in Stepper that records the loss it is handed (no optimizer)."""

    def __init__(self, global_step: int = 0) -> None:
        self.epoch, self.global_step, self.loss, self.parts = 0, global_step, None, None

    def __call__(self, loss, name="main", *, retain_graph=False, parts=None):
        self.loss, self.parts = loss.detach(), parts


# -------------------------------------------- docs/reference/methods.md#lba-5-8 test 1: GeM


def test_gem_spec_vector_through_the_method_pooling():
    method = _method()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    assert method.pool(x).item() == pytest.approx(2.924018, abs=1e-6)
    assert not any(True for _ in method.pool.parameters())  # p = 3 fixed, not learned


# ---------------------------------------- docs/reference/methods.md#lba-5-8 test 2: pairing


def test_pairing_property_on_a_32_plus_32_batch():
    labels, mods = _agw_layout(8, 4)
    pairs = cross_modal_pairs(labels, mods, torch.Generator().manual_seed(0))
    pos, neg = pairs.positive.tolist(), pairs.negative.tolist()
    for a in range(32):
        b = a // 4
        assert 32 + 4 * b <= pos[a] < 32 + 4 * b + 4
        assert neg[a] >= 32 and (neg[a] - 32) // 4 != b
    for a in range(32, 64):  # symmetric for infrared anchors
        b = (a - 32) // 4
        assert 4 * b <= pos[a] < 4 * b + 4
        assert neg[a] < 32 and neg[a] // 4 != b
    for start in list(range(0, 64, 4)):
        block = range(start, start + 4)
        assert sorted(pos[a] % 4 for a in block) == [0, 1, 2, 3]  # a permutation of the block
        assert len({(neg[a] % 32) // 4 for a in block}) == 4  # 4 different negative identities
        assert sorted(neg[a] % 4 for a in block) == [0, 1, 2, 3]  # at permuted positions


def test_pairing_follows_labels_and_modalities_not_positions():
    labels, mods = _agw_layout(6, 4)
    order = torch.randperm(48, generator=torch.Generator().manual_seed(3))
    labels, mods = labels[order], mods[order]
    pairs = cross_modal_pairs(labels, mods, torch.Generator().manual_seed(1))
    assert torch.equal(labels[pairs.positive], labels)
    assert bool((mods[pairs.positive] != mods).all()) and bool((mods[pairs.negative] != mods).all())
    assert bool((labels[pairs.negative] != labels).all())
    for pid in range(6):
        for m in (V, IR):
            anchors = (labels == pid) & (mods == m)
            assert len(set(pairs.positive[anchors].tolist())) == 4
            assert len(set(labels[pairs.negative[anchors]].tolist())) == 4


def test_pairing_is_reproducible_from_the_generator():
    labels, mods = _agw_layout(8, 4)
    a = cross_modal_pairs(labels, mods, torch.Generator().manual_seed(5))
    b = cross_modal_pairs(labels, mods, torch.Generator().manual_seed(5))
    c = cross_modal_pairs(labels, mods, torch.Generator().manual_seed(6))
    assert torch.equal(a.positive, b.positive) and torch.equal(a.negative, b.negative)
    assert not (torch.equal(a.positive, c.positive) and torch.equal(a.negative, c.negative))


def test_identity_blocks_of_the_agw_layout():
    labels, mods = _agw_layout(3, 2)
    vis, ir = identity_blocks(labels, mods)
    assert vis.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert ir.tolist() == [[6, 7], [8, 9], [10, 11]]


@pytest.mark.parametrize("case, message", [
    ("missing_ir", r"identity label 2 has no infrared image"),
    ("unequal", r"identity label 0 has 4 visible but 3 infrared"),
    ("few_ids", r"4 identities of 4 images .*raise sampler.num_ids to at least 5"),
    ("ragged", r"different numbers of images per modality .*\[2, 4\]"),
])
def test_pairing_refuses_batches_it_cannot_pair(case, message):
    labels, mods = _agw_layout(8, 4)
    keep = torch.ones(64, dtype=torch.bool)
    if case == "missing_ir":
        keep[32 + 8:32 + 12] = False
    elif case == "unequal":
        keep[32] = False
    elif case == "few_ids":
        labels, mods = _agw_layout(4, 4)
        keep = torch.ones(32, dtype=torch.bool)
    elif case == "ragged":
        keep[[0, 1, 32, 33]] = False
    with pytest.raises(TrainingError, match=message):
        cross_modal_pairs(labels[keep], mods[keep], torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- CMAlign mechanics


def _reference_align(fa: np.ndarray, ft: np.ndarray, beta: float):
    """Straight numpy transcription of docs/reference/methods.md#lba-5-1 steps 2-7 for one image pair (C, N)."""
    an = fa / np.linalg.norm(fa, axis=0, keepdims=True)
    tn = ft / np.linalg.norm(ft, axis=0, keepdims=True)
    sim = an.T @ tn  # (N, N)
    e = np.exp(beta * (sim - sim.max(axis=1, keepdims=True)))
    prob = e / e.sum(axis=1, keepdims=True)
    warped = ft @ prob.T  # (C, N)

    def minmax(x):
        x = x - x.min()
        return x / (x.max() + 1e-12)

    ma, mt = minmax(np.linalg.norm(fa, axis=0)), minmax(np.linalg.norm(ft, axis=0))
    recon = ma * warped + (1 - ma) * fa
    co = minmax(ma * (prob @ mt))
    return prob, ma, recon, co


def test_cmalign_matches_a_direct_transcription_of_the_spec():
    g = torch.Generator().manual_seed(0)
    feat = torch.rand(4, 5, 3, 2, generator=g, dtype=torch.float64)
    pairs = Pairs(torch.tensor([2, 3, 0, 1]), torch.tensor([3, 2, 1, 0]))
    out = CMAlign(temperature=7.0)(feat, pairs)
    f = feat.numpy().reshape(4, 5, 6)
    for i in range(4):
        prob, mask, recon, co = _reference_align(f[i], f[pairs.positive[i]], 7.0)
        np.testing.assert_allclose(out.prob_pos[i].numpy(), prob, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.mask[i].reshape(-1).numpy(), mask, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.recon_pos[i].reshape(5, 6).numpy(), recon, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.coattention[i].reshape(-1).numpy(), co, rtol=1e-5, atol=1e-6)
        _, _, recon_neg, _ = _reference_align(f[i], f[pairs.negative[i]], 7.0)
        np.testing.assert_allclose(out.recon_neg[i].reshape(5, 6).numpy(), recon_neg, rtol=1e-5, atol=1e-6)


def test_cmalign_pieces_shapes_ranges_and_detaching():
    g = torch.Generator().manual_seed(1)
    anchor = torch.rand(2, 8, 4, 3, generator=g, requires_grad=True)
    target = torch.rand(2, 8, 4, 3, generator=g, requires_grad=True)
    sim = feature_similarity(anchor, target)
    assert sim.shape == (2, 12, 12) and float(sim.detach().abs().max()) <= 1 + 1e-6
    prob = matching_probability(sim)
    assert torch.allclose(prob.sum(-1), torch.ones(2, 12))
    mask = person_mask(anchor)
    assert mask.shape == (2, 1, 4, 3) and not mask.requires_grad
    assert torch.allclose(mask.flatten(1).min(1).values, torch.zeros(2))
    assert torch.allclose(mask.flatten(1).max(1).values, torch.ones(2))
    co = coattention(prob, mask, person_mask(target))
    assert co.shape == (2, 1, 4, 3) and not co.requires_grad
    warped = soft_warp(prob, target)
    recon = reconstruct(mask, warped, anchor)
    # where M = 1 the reconstruction is the warped target, where M = 0 the anchor
    m = mask.expand_as(recon)
    assert torch.allclose(recon[m == 1], warped[m == 1]) and torch.allclose(recon[m == 0], anchor[m == 0])
    recon.sum().backward()  # gradients reach the target through P and the warp
    assert target.grad is not None and float(target.grad.abs().sum()) > 0


def test_self_alignment_with_a_sharp_softmax_reconstructs_the_anchor():
    # distinct directions at every position: each position matches itself, so f_hat = f_a
    feat = torch.eye(6).reshape(1, 6, 3, 2) * torch.arange(1.0, 7.0).reshape(1, 6, 1, 1) + 0.01
    out = CMAlign()(feat, Pairs(torch.tensor([0]), torch.tensor([0])))
    assert torch.allclose(out.prob_pos[0], torch.eye(6), atol=1e-6)
    assert torch.allclose(out.recon_pos, feat, atol=1e-5)


def test_cmalign_has_no_parameters():
    assert sum(p.numel() for p in CMAlign().parameters()) == 0
    assert not list(CMAlign().buffers())


# --------------------------------------------------------------------------- losses


def _maps(seed: int = 0, b: int = 3, c: int = 4, h: int = 3, w: int = 2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, h, w, generator=g, dtype=torch.float64) for _ in range(3)]


def test_dense_triplet_map_is_torch_triplet_loss_per_position():
    a, p, n = _maps(0)
    flat = [x.permute(0, 2, 3, 1).reshape(-1, 4) for x in (a, p, n)]
    expected = F.triplet_margin_loss(*flat, margin=0.3, p=2.0, eps=1e-6, reduction="none").reshape(3, 3, 2)
    assert torch.allclose(dense_triplet_map(a, p, n, 0.3).double(), expected, atol=1e-6)


def test_dense_triplet_reductions_against_direct_formulas():
    a, p, n = _maps(1)
    att = torch.rand(3, 1, 3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    an, pn, nn_, A = (x.numpy() for x in (a, p, n, att))
    d_ap = np.linalg.norm(an - pn + 1e-6, axis=1)
    d_an = np.linalg.norm(an - nn_ + 1e-6, axis=1)
    loss = np.maximum(0.0, 0.3 + d_ap - d_an)  # (B, H, W)
    A = A[:, 0]
    official = np.mean(A.mean(axis=0) * loss.mean(axis=0))
    per_sample = np.mean(A * loss)
    # PyTorch 1.7's broadcast (B,1,H,W) * (B,H,W) -> (B,B,H,W), then torch.mean: the official value
    broadcast = np.mean(att.numpy() * loss[None])
    assert official == pytest.approx(broadcast, rel=1e-12)
    got_official = dense_triplet(a, p, n, att, 0.3, "official_1p7").item()
    got_per_sample = dense_triplet(a, p, n, att, 0.3, "per_sample").item()
    assert got_official == pytest.approx(official, rel=1e-5)
    assert got_per_sample == pytest.approx(per_sample, rel=1e-5)
    assert abs(got_official - got_per_sample) > 1e-3  # the coupling across samples differs


def test_dense_triplet_reductions_agree_for_constant_attention():
    a, p, n = _maps(3)
    const = torch.full((3, 1, 3, 2), 0.7, dtype=torch.float64)
    official = dense_triplet(a, p, n, const, 0.3, "official_1p7").item()
    assert official == pytest.approx(dense_triplet(a, p, n, const, 0.3, "per_sample").item(), rel=1e-6)
    assert official == pytest.approx(0.7 * dense_triplet(a, p, n, None).item(), rel=1e-6)
    # attention constant per image but differing across images: the reductions split again
    per_image = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64).reshape(3, 1, 1, 1).expand(3, 1, 3, 2)
    assert dense_triplet(a, p, n, per_image, 0.3, "official_1p7").item() != pytest.approx(
        dense_triplet(a, p, n, per_image, 0.3, "per_sample").item(), rel=1e-3)


def test_dense_triplet_rejects_unknown_reduction_and_bad_shapes():
    a, p, n = _maps(0)
    with pytest.raises(ValueError, match="official_1p7"):
        dense_triplet(a, p, n, None, reduction="mean")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        dense_triplet_map(a, p[:, :2], n)


def test_id_consistency_is_the_sum_of_two_cross_entropies():
    g = torch.Generator().manual_seed(0)
    z3, z4 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    expected = F.cross_entropy(z3, y) + F.cross_entropy(z4, y)
    assert id_consistency(z3, z4, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert id_consistency(None, z4, y).item() == pytest.approx(F.cross_entropy(z4, y).item(), rel=1e-6)


def test_loss_weights_spec_vector():
    t = torch.tensor
    # CE = 2.0, triplet = 0.5, CE_ic3 = 2.2, CE_ic4 = 2.1, DT3 = 0.1, DT4 = 0.2: L = 2.5 + 4.3 + 0.5 * 0.3
    total = lba_objective(t(2.0), t(0.5), t(2.2) + t(2.1), t(0.1) + t(0.2))
    assert total.item() == pytest.approx(6.95, abs=1e-6)
    opts = _cfg("sysu").method
    assert (opts.ic_weight, opts.dt_weight, opts.margin, opts.dt_margin, opts.temperature) == (1.0, 0.5, 0.3, 0.3, 50.0)


# --------------------------------------- docs/reference/methods.md#lba-5-8 test 3: schedule


@pytest.mark.parametrize("epoch, head, backbone", [
    (0, 0.01, 0.001), (9, 0.1, 0.01), (10, 0.1, 0.01), (15, 0.1, 0.01), (19, 0.1, 0.01),
    (20, 0.01, 0.001), (49, 0.01, 0.001), (50, 0.001, 0.0001), (80, 0.001, 0.0001),
])
def test_sysu_preset_learning_rates(epoch, head, backbone):
    cfg = _cfg("sysu")
    assert cfg.optim.lr * lr_factor(epoch, cfg.optim) == pytest.approx(head, rel=1e-9)
    assert cfg.optim.lr * cfg.optim.backbone_lr_mult * lr_factor(epoch, cfg.optim) == pytest.approx(backbone, rel=1e-9)
    assert cfg.optim.nesterov and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4
    assert cfg.train.epochs == 81


def test_optimizer_groups_follow_the_schedule():
    torch.manual_seed(0)
    method = build_method(_cfg("sysu"), 8)
    opt, sched = method.optimizers()["main"]
    head_ids = {id(p) for p in method.head_parameters()}
    groups = {("head" if id(g["params"][0]) in head_ids else "backbone"): g for g in opt.param_groups}
    assert len(opt.param_groups) == 2
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in _trained_head_params(method)}
    seen = {}
    for epoch in range(51):
        seen[epoch] = (groups["head"]["lr"], groups["backbone"]["lr"])
        opt.step()  # no gradients: a no-op that keeps the scheduler's call-order check quiet
        sched.step()
    for epoch, (head, backbone) in {0: (0.01, 0.001), 9: (0.1, 0.01), 10: (0.1, 0.01),
                                    20: (0.01, 0.001), 50: (0.001, 0.0001)}.items():
        assert seen[epoch] == pytest.approx((head, backbone), rel=1e-9), epoch


def _trained_head_params(method):
    # BN-neck weight and classifier; the BN bias is frozen at 0 and not optimised
    return [method.neck.bn.weight, method.classifier.fc.weight]


# --------------------------------------------------------------------------- the method


def test_presets_list_the_official_feature_first_and_match_the_spec():
    for preset in ("sysu", "regdb", "llcm", "synthetic"):
        cfg = load_config(REPO / "configs" / preset / "lba.yaml")
        assert cfg.eval.features[0] == "pool", preset
        assert cfg.sampler.kind == "agw" and cfg.sampler.num_ids - 1 >= cfg.sampler.num_pos, preset
        assert cfg.augment.random_erasing == 0.0 and not cfg.augment.channel_aug and cfg.augment.flip, preset
        assert cfg.model.modality_specific == ["stem"] and cfg.model.last_stride == 1, preset
        assert cfg.model.pooling == "gem" and cfg.model.gem_p == 3.0, preset
    sysu = load_config(REPO / "configs" / "sysu" / "lba.yaml")
    assert (sysu.data.height, sysu.data.width, sysu.sampler.num_ids, sysu.sampler.num_pos) == (288, 144, 8, 4)
    assert sysu.augment.pad == 0 and sysu.model.arch == "resnet50"


def test_heads_follow_the_spec_inits():
    method = _method(num_classes=395)
    assert method.classifier.fc.bias is None
    assert method.classifier.fc.weight.std().item() == pytest.approx(0.001, rel=0.05)
    w = method.neck.bn.weight
    assert w.mean().item() == pytest.approx(1.0, abs=0.005) and 0.005 < w.std().item() < 0.02
    assert not method.neck.bn.bias.requires_grad and float(method.neck.bn.bias.abs().sum()) == 0.0


def test_test_time_parameters_are_the_backbone_and_neck_only():
    cfg = _cfg("synthetic")
    method = _method()
    bare = ResNetBackbone.from_config(cfg.model)
    neck = BNNeck(bare.out_channels, weight_init="normal")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(method.cmalign) == 0
    assert count(method.backbone) + count(method.neck) == count(bare) + count(neck)
    assert count(method) == count(bare) + count(neck) + count(Classifier(bare.out_channels, 8))


def _batch(p: int = 6, k: int = 4, seed: int = 0) -> Batch:
    labels, mods = _agw_layout(p, k)
    g = torch.Generator().manual_seed(seed)
    n = labels.numel()
    return Batch(images=torch.randn(n, 3, 32, 16, generator=g), labels=labels, modalities=mods,
                 camids=torch.where(mods == V, 1, 3).long(), indices=torch.arange(n))


def test_training_step_combines_the_losses_with_the_spec_weights():
    method = _method("sampler.num_ids=6", num_classes=6)
    method.train()
    step = _Step(global_step=7)
    scalars = method.training_step(_batch(), step)
    assert {"loss", "ce", "triplet", "ic", "dt", "dt_layer3", "dt_layer4", "acc"} <= set(scalars)
    expected = scalars["ce"] + scalars["triplet"] + scalars["ic"] + 0.5 * scalars["dt"]
    assert scalars["loss"] == pytest.approx(expected, rel=1e-5)
    assert scalars["dt"] == pytest.approx(scalars["dt_layer3"] + scalars["dt_layer4"], rel=1e-5)
    assert scalars["ic"] > 0 and scalars["dt"] > 0
    assert step.loss.item() == pytest.approx(scalars["loss"], rel=1e-6)


@pytest.mark.slow
def test_training_step_is_reproducible_and_pairs_depend_on_the_step():
    results = []
    for global_step in (3, 3, 4):
        method = _method("sampler.num_ids=6", num_classes=6)
        method.train()
        results.append(method.training_step(_batch(), _Step(global_step=global_step)))
    assert results[0] == results[1]
    assert results[0]["dt"] != results[2]["dt"]


@pytest.mark.parametrize("overrides, present, absent", [
    (["method.align_stages=[]"], set(), {"dt_layer3", "dt_layer4"}),
    (["method.align_stages=[layer4]", "method.dt_reduction=per_sample"], {"dt_layer4"}, {"dt_layer3"}),
])
def test_training_step_variants(overrides, present, absent):
    method = _method("sampler.num_ids=6", *overrides, num_classes=6)
    method.train()
    scalars = method.training_step(_batch(), _Step())
    assert present <= set(scalars) and not absent & set(scalars)
    if not present:
        assert scalars["ic"] == 0.0 and scalars["dt"] == 0.0


def test_training_step_refuses_an_unpairable_batch_before_the_forward_pass():
    method = _method("sampler.num_ids=6", num_classes=6)
    batch = _batch(p=4, k=4)
    with pytest.raises(TrainingError, match=r"sampler.num_ids to at least 5"):
        method.training_step(batch, _Step())


def test_embed_pool_is_the_normalised_pre_bn_gem_feature():
    method = _method()
    method.eval()
    x = torch.randn(3, 3, 32, 16, generator=torch.Generator().manual_seed(0))
    out = method.embed(x, Modality.INFRARED)
    with torch.no_grad():
        pooled = method.pool(method.backbone(x, Modality.INFRARED))
    assert torch.allclose(out["pool"], F.normalize(pooled, dim=1), atol=1e-6)
    assert torch.allclose(out["bn"], F.normalize(method.neck(pooled), dim=1), atol=1e-6)
    assert method.feature_dims() == {"pool": 512, "bn": 512}
    # the stems are per modality (both start from the same weights): change the visible one only
    with torch.no_grad():
        method.backbone.stem["visible"].conv1.weight.mul_(1.5)
    assert torch.equal(method.embed(x, Modality.INFRARED)["pool"], out["pool"])
    assert not torch.allclose(method.embed(x, Modality.VISIBLE)["pool"], out["pool"])


def test_correspondences_for_a_visible_infrared_pair():
    method = _method()
    method.train()
    g = torch.Generator().manual_seed(0)
    vis, ir = torch.randn(2, 3, 32, 16, generator=g), torch.randn(2, 3, 32, 16, generator=g)
    out = method.correspondences(vis, ir, stage="layer3")
    assert method.training  # mode restored
    assert out["size"].tolist() == [2, 1]
    assert out["prob"].shape == (2, 2, 2) and torch.allclose(out["prob"].sum(-1), torch.ones(2, 2))
    for key in ("mask_anchor", "mask_target", "coattention"):
        assert out[key].shape == (2, 1, 2, 1), key
    with pytest.raises(ValueError, match="stage must be one of"):
        method.correspondences(vis, ir, stage="layer2")


@pytest.mark.parametrize("override, message", [
    ("method.align_stages=[layer2]", "method.align_stages"),
    ("method.dt_reduction=mean", "method.dt_reduction"),
    ("method.temperature=0", "method.temperature"),
])
def test_bad_options_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        _method(override)
