"""MPANet: test values (docs/reference/methods.md#mpanet-4-7), losses against reference transcriptions,
EMA schedule, configs, shapes.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from vireid.config import load_config
from vireid.core import Batch, Modality, TrainingError
from vireid.losses.mpanet import center_cluster_loss, center_cluster_terms, mutual_mean_kl, separation_loss
from vireid.methods import build_method
from vireid.methods.mpanet import MPANetOptions, sid_weight, total_loss
from vireid.models.mpanet_modules import MAM, PAM

from .helpers import REPO, tiny_batch, tiny_config

NUM_CLASSES = 6


# ----------------------------------------------------------------------------------------- MAM


def test_mam_with_zero_attention_weights_matches_spec_vector():
    # docs/reference/methods.md#mpanet-4-7 case 1: W = 0 -> m = sigmoid(0) = 0.5 for every channel
    mam = MAM(16)
    with torch.no_grad():
        for p in mam.parameters():
            p.zero_()
    z = torch.randn(1, 16, 2, 2, generator=torch.Generator().manual_seed(0))
    z[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = mam(z)
    assert torch.allclose(mam.gate(z), torch.full((1, 16, 1, 1), 0.5))
    expected = torch.tensor([-0.170818, 0.776394, 1.723606, 2.670818])
    assert torch.allclose(out[0, 0].flatten(), expected, atol=1e-5)
    # IN is the biased per-instance variance: (Z - 2.5) / sqrt(1.25 + 1e-5)
    in_z = mam.instance_norm(z)[0, 0].flatten()
    assert torch.allclose(in_z, torch.tensor([-1.34164, -0.44721, 0.44721, 1.34164]), atol=1e-5)


def test_mam_structure_and_test_time_behaviour():
    mam = MAM(1024)
    convs = [m for m in mam.channel_attention if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape[:2]) for c in convs] == [(64, 1024), (1024, 64)]
    assert all(c.bias is None for c in convs)
    assert not mam.instance_norm.affine and not mam.instance_norm.track_running_stats
    # no running statistics: train and eval give the same output
    z = torch.randn(2, 1024, 3, 2)
    mam.train()
    a = mam(z)
    mam.eval()
    assert torch.allclose(a, mam(z))


# ----------------------------------------------------------------------------------------- PAM


def test_pam_feature_order_matches_reference_loop():
    torch.manual_seed(0)
    pam = PAM(8, num_parts=3)
    assert float(pam.spatial_attention.bias.detach().abs().sum()) == 0.0
    x = torch.randn(2, 8, 4, 3)
    f, masks = pam(x)
    assert f.shape == (2, 4 * 8) and masks.shape == (2, 3, 4, 3)
    # the reference: for each map k, GAP(M_k * F); then GAP(F); concatenated in that order
    ref_masks = torch.sigmoid(pam.spatial_attention(x))
    blocks = [(ref_masks[:, k:k + 1] * x).mean(dim=(2, 3)) for k in range(3)] + [x.mean(dim=(2, 3))]
    assert torch.allclose(masks, ref_masks)
    assert torch.allclose(f, torch.cat(blocks, 1), atol=1e-6)


def test_pam_with_zero_conv_halves_every_pattern():
    pam = PAM(4, num_parts=2)
    with torch.no_grad():
        pam.spatial_attention.weight.zero_()
    x = torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).reshape(2, 4, 2, 2)
    f, _ = pam(x)
    gap = x.mean(dim=(2, 3))
    assert torch.allclose(f, torch.cat([0.5 * gap, 0.5 * gap, gap], 1))


# ----------------------------------------------------------------------------------------- losses


def test_separation_loss_spec_vectors():
    one = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]])
    assert separation_loss(one).item() == pytest.approx(1 / 3, abs=1e-6)
    two = torch.cat([one, torch.ones(1, 3, 2)])
    assert separation_loss(two).item() == pytest.approx(7 / 6, abs=1e-6)
    # (B, l, H, W) maps give the same value as flattened ones
    assert separation_loss(two.reshape(2, 3, 1, 2)).item() == pytest.approx(7 / 6, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 pattern maps"):
        separation_loss(torch.ones(2, 1, 4))


def _reference_center_cluster(inputs: torch.Tensor, targets: torch.Tensor, k_size: int, margin: float) -> torch.Tensor:
    """A transcription of the official CenterTripletLoss (block-ordered batches, anchors 0, k, 2k, ...)."""
    n = inputs.size(0)
    centers = torch.stack([inputs[targets == targets[i]].mean(0) for i in range(n)])
    dist_pc = ((inputs - centers) ** 2).sum(1).sqrt()
    dist = centers.pow(2).sum(dim=1, keepdim=True).expand(n, n)
    dist = dist + dist.t() - 2 * centers @ centers.t()
    dist = dist.clamp(min=1e-12).sqrt()
    mask = targets.expand(n, n).eq(targets.expand(n, n).t())
    dist_an = torch.stack([(margin - dist[i][mask[i] == 0]).clamp(min=0.0).mean() for i in range(0, n, k_size)])
    return dist_pc.mean() + dist_an.mean()


def test_center_cluster_spec_case_a():
    f = torch.tensor([[0.0, 0.0], [0.4, 0.0], [0.2, 0.2], [0.2, 0.6]])
    y = torch.tensor([0, 0, 1, 1])
    pull, push = center_cluster_terms(f, y, margin=0.7)
    assert pull.item() == pytest.approx(0.2, abs=1e-6)
    assert push.item() == pytest.approx(0.3, abs=1e-6)
    assert center_cluster_loss(f, y, margin=0.7).item() == pytest.approx(0.5, abs=1e-6)
    assert _reference_center_cluster(f, y, k_size=2, margin=0.7).item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("ids,k", [(4, 8), (3, 2), (16, 8)])
def test_center_cluster_equals_reference_on_block_ordered_batches(ids, k):
    g = torch.Generator().manual_seed(ids * 100 + k)
    f = torch.randn(ids * k, 5, generator=g) * 0.3  # small spread so some center pairs are inside the margin
    y = torch.arange(ids).repeat_interleave(k)
    ref = _reference_center_cluster(f, y, k_size=k, margin=0.7)
    ours = center_cluster_loss(f, y, margin=0.7)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert ref.item() > 0
    # and it does not depend on the batch order (the reference would pick wrong anchors here)
    perm = torch.randperm(ids * k, generator=g)
    assert center_cluster_loss(f[perm], y[perm], margin=0.7).item() == pytest.approx(ref.item(), rel=1e-5)


def test_center_cluster_unequal_counts_weights_by_entries_and_stays_finite():
    # id0 has one sample (a zero pull distance: the plain sqrt's gradient would be NaN)
    f = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.3, 0.2], [0.0, 0.5]], requires_grad=True)
    y = torch.tensor([0, 1, 1, 2])
    pull, push = center_cluster_terms(f, y, margin=0.7)
    h = {0: np.array([0.0, 0.0]), 1: np.array([0.3, 0.1]), 2: np.array([0.0, 0.5])}
    fn = f.detach().numpy()
    exp_pull = np.mean([np.linalg.norm(fn[i] - h[int(y[i])]) for i in range(4)])
    hinge = lambda a, b: max(0.0, 0.7 - np.linalg.norm(h[a] - h[b]))  # noqa: E731
    # per anchor identity: mean over the batch entries of the other identities
    exp_push = np.mean([(2 * hinge(0, 1) + hinge(0, 2)) / 3, (hinge(1, 0) + hinge(1, 2)) / 2,
                        (hinge(2, 0) + 2 * hinge(2, 1)) / 3])
    assert pull.item() == pytest.approx(exp_pull, abs=1e-6)
    assert push.item() == pytest.approx(exp_push, abs=1e-6)
    (pull + push).backward()
    assert torch.isfinite(f.grad).all()
    with pytest.raises(ValueError, match="at least 2 identities"):
        center_cluster_loss(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def test_mutual_mean_kl_code_and_paper_forms():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float64)
    mean_logits = rng.normal(size=(6, 5)).astype(np.float64)
    codes = np.array([0, 0, 0, 1, 1, 1], dtype=np.int8)  # visible rows first, as the method orders them
    log_p, log_q = _np_log_softmax(logits), _np_log_softmax(mean_logits)
    p, q = np.exp(log_p), np.exp(log_q)
    kl_pq = (p * (log_p - log_q)).sum(1)
    kl_qp = (q * (log_q - log_p)).sum(1)
    exp_code = kl_pq.sum() / 6  # KL(P || Q), batchmean over n + m
    exp_paper = kl_qp[:3].mean() + kl_qp[3:].mean()  # KL(Q || P), per-modality means summed

    t_logits = torch.tensor(logits, requires_grad=True)
    t_mean = torch.tensor(mean_logits, requires_grad=True)
    code = mutual_mean_kl(t_logits, t_mean, torch.tensor(codes), faithful_to="code")
    paper = mutual_mean_kl(t_logits, t_mean, torch.tensor(codes), faithful_to="paper")
    assert code.item() == pytest.approx(exp_code, rel=1e-6)
    assert paper.item() == pytest.approx(exp_paper, rel=1e-6)
    assert abs(code.item() - paper.item()) > 0.1
    # the code form is exactly torch's KLDivLoss(batchmean)(log Q, P) as the official code calls it
    ref = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(t_mean.detach(), 1), torch.softmax(t_logits, 1))
    assert code.item() == pytest.approx(ref.item(), rel=1e-9)
    # Q is a constant: only the trainable logits get a gradient
    (code + paper).backward()
    assert t_logits.grad is not None and t_logits.grad.abs().sum() > 0
    assert t_mean.grad is None
    with pytest.raises(ValueError, match="modality code"):
        mutual_mean_kl(t_logits, t_mean, None, faithful_to="paper")


def test_mutual_mean_kl_is_zero_when_distributions_agree():
    x = torch.randn(4, 3)
    assert mutual_mean_kl(x, x.clone(), faithful_to="code").item() == pytest.approx(0.0, abs=1e-6)


def test_double_counted_sid_weight_code_3_paper_1p5():
    parts = {"sep": 0.0, "cc": 0.0, "ce": 0.0, "ce_v": 2.0, "ce_r": 1.0, "kl": 0.0}
    code, paper = MPANetOptions(weight_sid=0.5), MPANetOptions(weight_sid=0.5, faithful_to="paper")
    assert sid_weight(code) == 1.0 and sid_weight(paper) == 0.5
    assert total_loss(parts, code) == pytest.approx(3.0)
    assert total_loss(parts, paper) == pytest.approx(1.5)
    full = {"sep": 1.0, "cc": 2.0, "ce": 3.0, "ce_v": 2.0, "ce_r": 1.0, "kl": 4.0}
    assert total_loss(full, code) == pytest.approx(0.5 * 1 + 2 + 3 + 3.0 + 2.5 * 4)


# ----------------------------------------------------------------------------------------- method


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_config("mpanet")
    torch.manual_seed(0)
    return cfg, build_method(cfg, NUM_CLASSES)


def test_tiny_method_dims_and_one_stream(tiny):
    cfg, method = tiny
    assert method.feature_dims() == {"bn": 7 * 512, "pool": 7 * 512}
    assert set(method.mam) == {"layer3", "layer4"}
    assert method.backbone.modality_specific == ()
    assert float(method.neck.bn.bias.abs().sum()) == 0 and not method.neck.bn.bias.requires_grad
    assert torch.all(method.neck.bn.weight == 1)
    # the mean classifiers: saved with the model, never trained
    state = method.state_dict()
    assert {"mean_weight_v", "mean_weight_r"} <= set(state)
    names = {n for n, _ in method.named_parameters()}
    assert not any("mean_weight" in n for n in names)


def test_ema_alpha_schedule():
    cfg = tiny_config("mpanet")
    torch.manual_seed(0)
    method = build_method(cfg, NUM_CLASSES)
    assert method.update_rate_at(0) == pytest.approx(0.2)
    assert method.update_rate_at(98) == pytest.approx(0.2)  # 1-based epoch 99
    assert method.update_rate_at(99) == pytest.approx(0.2 * 100 / 101)
    assert method.update_rate_at(139) == pytest.approx(0.141844, abs=1e-6)  # epoch 140 of 140
    method.on_epoch_start(139)
    assert method.update_rate == pytest.approx(0.141844, abs=1e-6)
    assert method.epoch_summary() == {"ema_rate": pytest.approx(0.141844, abs=1e-6)}
    const = build_method(tiny_config("mpanet", "method.update_decay_start=0"), NUM_CLASSES)
    assert const.update_rate_at(139) == pytest.approx(0.2)


def test_ema_update_spec_vector(tiny):
    _, method = tiny
    saved = {k: v.clone() for k, v in method.state_dict().items()}
    try:
        method.update_rate = 0.2
        with torch.no_grad():
            method.mean_weight_v[0, :2] = torch.tensor([1.0, 0.0])
            method.classifier_v.fc.weight[0, :2] = torch.tensor([0.0, 1.0])
        method.update_mean_classifiers()
        assert torch.allclose(method.mean_weight_v[0, :2], torch.tensor([0.8, 0.2]))
    finally:
        method.load_state_dict(saved)


class _Recorder:
    """A Stepper that records the loss and does not step (the EMA update still happens)."""

    epoch, global_step = 0, 0

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def __call__(self, loss, name="main", *, retain_graph=False, parts=None):
        self.losses.append(loss.detach())


def test_training_step_updates_mean_classifiers_before_use():
    cfg = tiny_config("mpanet")
    torch.manual_seed(0)
    method = build_method(cfg, NUM_CLASSES)
    with torch.no_grad():  # make E differ from theta so the update is visible
        method.mean_weight_v.zero_()
        method.mean_weight_r.fill_(1.0)
    theta_v = method.classifier_v.fc.weight.detach().clone()
    theta_r = method.classifier_r.fc.weight.detach().clone()
    method.train()
    method.on_epoch_start(0)
    rec = _Recorder()
    scalars = method.training_step(tiny_batch(cfg, NUM_CLASSES), rec)
    assert torch.allclose(method.mean_weight_v, 0.2 * theta_v)
    assert torch.allclose(method.mean_weight_r, 0.8 + 0.2 * theta_r)
    expected = total_loss({k: scalars[k] for k in ("sep", "cc", "ce", "ce_v", "ce_r", "kl")}, cfg.method)
    assert rec.losses[0].item() == pytest.approx(expected, rel=1e-5)
    assert scalars["cc"] == pytest.approx(scalars["cc_pull"] + scalars["cc_push"], rel=1e-5)


def test_faithful_to_paper_changes_kl_and_id_terms():
    cfg_code = tiny_config("mpanet")
    cfg_paper = tiny_config("mpanet", "method.faithful_to=paper")
    batch = tiny_batch(cfg_code, NUM_CLASSES)
    out = {}
    for name, cfg in (("code", cfg_code), ("paper", cfg_paper)):
        torch.manual_seed(0)
        method = build_method(cfg, NUM_CLASSES)
        method.train()
        out[name] = method.training_step(batch, _Recorder())
    # same network and batch: the shared terms agree, the disputed ones do not
    for k in ("sep", "cc", "ce_v", "ce_r"):
        assert out["paper"][k] == pytest.approx(out["code"][k], rel=1e-5), k
    assert out["paper"]["kl"] != pytest.approx(out["code"]["kl"], rel=1e-3)
    # Eq. 12 sums two per-modality means: about twice the code's mean over n + m
    assert out["paper"]["ce"] == pytest.approx(2 * out["code"]["ce"], rel=0.2)


def test_single_modality_batch_is_refused(tiny):
    cfg, method = tiny
    batch = tiny_batch(cfg, NUM_CLASSES)
    only_ir = Batch(images=batch.images, labels=batch.labels, modalities=torch.ones_like(batch.modalities),
                    camids=batch.camids, indices=batch.indices)
    method.train()
    with pytest.raises(TrainingError, match=r"needs visible and infrared .* 0 visible"):
        method.training_step(only_ir, _Recorder())


def test_pattern_maps_and_bad_options(tiny):
    cfg, method = tiny
    method.eval()
    maps = method.pattern_maps(torch.randn(2, 3, cfg.data.height, cfg.data.width), Modality.INFRARED)
    assert maps.shape == (2, 6, 2, 1) and bool(((maps > 0) & (maps < 1)).all())
    from vireid.core import ConfigError

    with pytest.raises(ConfigError, match="faithful_to"):
        build_method(tiny_config("mpanet", "method.faithful_to=both"), NUM_CLASSES)
    with pytest.raises(ConfigError, match="mam_stages"):
        build_method(tiny_config("mpanet", "method.mam_stages=[layer5]"), NUM_CLASSES)
    with pytest.raises(ConfigError, match="num_parts"):
        build_method(tiny_config("mpanet", "method.num_parts=1"), NUM_CLASSES)


def test_without_pam_the_feature_is_plain_gap():
    cfg = tiny_config("mpanet", "method.num_parts=0")
    torch.manual_seed(0)
    method = build_method(cfg, NUM_CLASSES)
    assert method.feature_dims() == {"bn": 512, "pool": 512}
    method.train()
    scalars = method.training_step(tiny_batch(cfg, NUM_CLASSES), _Recorder())
    assert scalars["sep"] == 0.0 and math.isfinite(scalars["loss"])


def test_resnet50_shapes_at_384x128():
    cfg = load_config(REPO / "configs" / "sysu" / "mpanet.yaml", ["model.pretrained=none", "train.device=cpu"])
    torch.manual_seed(0)
    method = build_method(cfg, 4).eval()
    x = torch.randn(2, 3, 384, 128)
    codes = torch.tensor([0, 1], dtype=torch.int8)
    seen = {}
    for stage in ("layer3", "layer4"):
        method.mam[stage].register_forward_hook(lambda m, i, o, s=stage: seen.__setitem__(s, (i[0].shape, o.shape)))
    t0 = time.perf_counter()
    with torch.no_grad():
        pooled, feat, masks = method(x, codes)
    assert time.perf_counter() - t0 < 120
    assert seen["layer3"] == ((2, 1024, 24, 8), (2, 1024, 24, 8))
    assert seen["layer4"] == ((2, 2048, 24, 8), (2, 2048, 24, 8))
    assert masks.shape == (2, 6, 24, 8)
    assert pooled.shape == feat.shape == (2, 14336)
    assert method.feature_dims()["bn"] == 14336
    assert [m.channel_attention[0].out_channels for m in method.mam.values()] == [64, 128]


# ----------------------------------------------------------------------------------------- configs


def test_paper_setting_configs():
    sysu = load_config(REPO / "configs" / "sysu" / "mpanet.yaml")
    assert (sysu.data.height, sysu.data.width) == (384, 128)
    assert (sysu.sampler.kind, sysu.sampler.num_ids, sysu.sampler.num_pos) == ("mpanet", 16, 4)
    assert (sysu.optim.name, sysu.optim.lr, sysu.optim.weight_decay) == ("adam", 3.5e-4, 5e-4)
    assert (sysu.optim.schedule, sysu.optim.milestones, sysu.train.epochs) == ("step", [80, 120], 140)
    assert sysu.optim.backbone_lr_mult == 1.0 and sysu.model.modality_specific == [] and sysu.model.last_stride == 1
    assert (sysu.augment.random_erasing, sysu.augment.pad, sysu.augment.pad_fill) == (0.5, 10, 127)
    assert sysu.augment.resize_first and not sysu.eval.flip
    regdb = load_config(REPO / "configs" / "regdb" / "mpanet.yaml", ["data.trial=7", "eval.options.trial=7"])
    assert (regdb.data.height, regdb.data.width) == (256, 128)
    assert (regdb.sampler.num_ids, regdb.sampler.num_pos) == (12, 5)
    assert regdb.optim.milestones == [110] and regdb.data.trial == 7
    assert regdb.eval.options == {"trial": 7, "direction": "thermal_to_visible"}
    llcm = load_config(REPO / "configs" / "llcm" / "mpanet.yaml")
    assert set(llcm.eval.options) == {"direction", "trials"}
    for other in (regdb, llcm):  # written out in full: they must not drift from the SYSU settings
        assert other.method == sysu.method and other.model == sysu.model and other.augment == sysu.augment
        assert (other.optim.name, other.optim.lr, other.train.epochs) == ("adam", 3.5e-4, 140)
    assert llcm.sampler == sysu.sampler and llcm.optim == sysu.optim
    synth = load_config(REPO / "configs" / "synthetic" / "mpanet.yaml")
    assert synth.model.arch == "resnet18" and synth.model.pretrained == "none"
    assert (synth.data.height, synth.data.width, synth.sampler.kind) == (64, 32, "mpanet")
