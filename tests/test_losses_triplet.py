"""Triplet variants and pairwise distances: spec vectors, hand-computed cases, numpy references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vireid.core import Modality
from vireid.losses import (
    batch_hard_triplet,
    caj_triplet,
    cross_modality_triplet,
    pairwise_euclidean,
    weighted_regularized_triplet,
)

V, IR = Modality.VISIBLE.code, Modality.INFRARED.code


def _col(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).reshape(-1, 1)


# ---------------------------------------------------------------- independent numpy references


def _np_dist(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 1e-12))


def _np_weighted(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    d = _np_dist(x)
    n = len(y)
    d_ap, d_an = np.zeros(n), np.zeros(n)
    for i in range(n):
        pos = [j for j in range(n) if y[j] == y[i]]
        neg = [j for j in range(n) if y[j] != y[i]]
        # AGW: the max is taken over the whole row of value*mask (zeros outside the mask count)
        m_p = max(alpha * d[i, j] if j in pos else 0.0 for j in range(n))
        m_n = max(-alpha * d[i, j] if j in neg else 0.0 for j in range(n))
        e_p = {j: math.exp(alpha * d[i, j] - m_p) for j in pos}
        e_n = {j: math.exp(-alpha * d[i, j] - m_n) for j in neg}
        z_p, z_n = sum(e_p.values()) + 1e-6, sum(e_n.values()) + 1e-6
        d_ap[i] = sum(e_p[j] / z_p * d[i, j] for j in pos)
        d_an[i] = sum(e_n[j] / z_n * d[i, j] for j in neg)
    return d_ap, d_an


def _np_soft_margin(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.log1p(np.exp(-y * x))))


def _np_wrt(x, y):
    d_ap, d_an = _np_weighted(x, y, 1.0)
    return _np_soft_margin(d_an - d_ap, np.ones_like(d_ap))


def _np_caj(x, y, alpha, gamma):
    d_ap, d_an = _np_weighted(x, y, alpha)
    diff = np.minimum(gamma * (d_ap - d_an) ** 2, 88.0)
    target = np.where(d_ap > d_an, -1.0, 1.0)
    return _np_soft_margin(diff, target)


def _np_batch_hard(x, y, margin):
    d = _np_dist(x)
    out = []
    for i in range(len(y)):
        ap = max(d[i, j] for j in range(len(y)) if y[j] == y[i])
        an = min(d[i, j] for j in range(len(y)) if y[j] != y[i])
        out.append(max(0.0, ap - an + margin))
    return float(np.mean(out))


def _random_case(seed: int, n_ids: int = 3, per_id: int = 4, dim: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_ids * per_id, dim)) * 0.7
    y = np.repeat(np.arange(n_ids), per_id)
    return x, y


# ---------------------------------------------------------------- distances


def test_pairwise_euclidean_values_and_clamp():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 0.0], [6.0, 8.0], [3.0, 0.0]])
    d = pairwise_euclidean(x, y)
    assert d.shape == (2, 3)
    torch.testing.assert_close(d, torch.tensor([[1e-6, 10.0, 3.0], [5.0, 5.0, 4.0]]))
    torch.testing.assert_close(pairwise_euclidean(x, y, squared=True),
                               torch.tensor([[0.0, 100.0, 9.0], [25.0, 25.0, 16.0]]))
    z = torch.zeros(1, 2, requires_grad=True)
    pairwise_euclidean(z, z).sum().backward()
    assert torch.isfinite(z.grad).all()  # the 1e-12 clamp keeps sqrt's gradient finite at 0
    with pytest.raises(ValueError, match=r"\(2, 2\) and \(1, 3\)"):
        pairwise_euclidean(x, torch.zeros(1, 3))


# ---------------------------------------------------------------- batch-hard


def test_batch_hard_spec_vector():
    # docs/reference/methods.md#common-1-8: d_ap = [1, 1, 1.5, 1.5], d_an = [1.5, 0.5, 0.5, 2], margin 0.8 -> 0.925
    loss = batch_hard_triplet(_col([0.0, 1.0, 1.5, 3.0], torch.float32), torch.tensor([0, 0, 1, 1]), margin=0.8)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(0.925, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_batch_hard_matches_numpy(seed):
    x, y = _random_case(seed)
    got = batch_hard_triplet(torch.from_numpy(x), torch.from_numpy(y), margin=0.3)
    assert got.item() == pytest.approx(_np_batch_hard(x, y, 0.3), rel=1e-9, abs=1e-9)


def test_batch_hard_is_float32_under_autocast():
    x, y = _random_case(2, dim=64)
    f = torch.from_numpy(x).float()
    ref = batch_hard_triplet(f, torch.from_numpy(y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = batch_hard_triplet(f, torch.from_numpy(y))
        got_half = batch_hard_triplet(f.bfloat16(), torch.from_numpy(y))
    assert got.dtype == torch.float32 and got_half.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), abs=1e-6)


def test_batch_hard_gradient_and_label_count_check():
    f = torch.randn(6, 4, requires_grad=True)
    batch_hard_triplet(f, torch.tensor([0, 0, 1, 1, 2, 2]), margin=10.0).backward()
    assert f.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="5 labels for 6 features"):
        batch_hard_triplet(f, torch.tensor([0, 0, 1, 1, 2]))


# ---------------------------------------------------------------- WRT (AGW) and CAJ


def test_wrt_hand_checked_three_points():
    # points 0 (id0), 1 (id0), 3 (id1); self distance sqrt(1e-12) = 1e-6 ~ 0
    e = math.exp
    d_ap = [1 / (1 + e(-1) + 1e-6), 1 / (1 + e(-1) + 1e-6), 0.0]
    d_an = [3 * e(-3) / (e(-3) + 1e-6),  # the row max is 0 (masked zeros), not -3
            2 * e(-2) / (e(-2) + 1e-6),
            (3 * e(-3) + 2 * e(-2)) / (e(-3) + e(-2) + 1e-6)]
    expected = sum(math.log1p(e(ap - an)) for ap, an in zip(d_ap, d_an, strict=True)) / 3
    got = weighted_regularized_triplet(_col([0.0, 1.0, 3.0]), torch.tensor([0, 0, 1]))
    assert got.item() == pytest.approx(expected, abs=1e-5)
    assert got.item() == pytest.approx(0.148195, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 3])
def test_wrt_matches_numpy(seed):
    x, y = _random_case(seed)
    got = weighted_regularized_triplet(torch.from_numpy(x), torch.from_numpy(y))
    assert got.item() == pytest.approx(_np_wrt(x, y), rel=1e-7)


@pytest.mark.parametrize("seed, alpha, gamma", [(0, 1.0, 1.0), (4, 2.0, 0.5), (5, 1.0, 1.0)])
def test_caj_matches_numpy(seed, alpha, gamma):
    x, y = _random_case(seed)
    got = caj_triplet(torch.from_numpy(x), torch.from_numpy(y), alpha=alpha, gamma=gamma)
    assert got.item() == pytest.approx(_np_caj(x, y, alpha, gamma), rel=1e-7)


def test_caj_target_sign_and_clamp():
    lab = torch.tensor([0, 0, 1, 1])
    # satisfied (positives close, negatives at ~3): y = +1, loss below log 2
    sat = _col([0.0, 0.1, 3.0, 3.1])
    assert caj_triplet(sat, lab).item() < math.log(2)
    assert caj_triplet(sat, lab).item() == pytest.approx(_np_caj(sat.numpy(), lab.numpy(), 1.0, 1.0), rel=1e-7)
    # violated (each positive ~5 away, a negative 0.1 away): y = -1; gamma (d_ap - d_an)^2 ~ 10 * 23 > 88
    # is clamped to 88, so every anchor costs log(1 + e^88) = 88 (234 without the clamp)
    bad = _col([0.0, 5.0, 0.1, 5.1])
    got = caj_triplet(bad, lab, gamma=10.0)
    assert got.item() == pytest.approx(88.0, abs=1e-6)
    assert got.item() == pytest.approx(_np_caj(bad.numpy(), lab.numpy(), 1.0, 10.0), rel=1e-9)


def test_agw_weighting_quirk_far_negatives_get_shrunk():
    # the row max subtracted for negatives is 0 (masked zeros), so exp(-20) ~ 2e-9 competes with the
    # 1e-6 in the denominator and the weighted d_an collapses to ~0.08 instead of 20: faithful to AGW/CAJ
    from vireid.losses import weighted_pair_distances

    d_ap, d_an = weighted_pair_distances(_col([0.0, 0.0, 20.0, 20.0]), torch.tensor([0, 0, 1, 1]))
    e20 = math.exp(-20.0)
    assert d_an[0].item() == pytest.approx(20.0 * 2 * e20 / (2 * e20 + 1e-6), rel=1e-6)
    assert d_ap[0].item() == pytest.approx(1e-6, rel=1e-3)


# ---------------------------------------------------------------- cross-modality


_XM_FEATS = [0.0, 2.0, 1.0, 5.0, -1.0]
_XM_LABELS = [0, 1, 0, 1, 0]
_XM_CODES = [V, V, IR, IR, IR]


def test_cross_modality_hard_euclidean_hand_computed():
    # visible anchors: 0 -> max(0, 1-5+.3)=0, 2 -> 3-1+.3=2.3 ; infrared: 1 -> .3, 5 -> 0, -1 -> 0
    loss = cross_modality_triplet(_col(_XM_FEATS), torch.tensor(_XM_LABELS), torch.tensor(_XM_CODES), margin=0.3)
    assert loss.item() == pytest.approx((2.3 / 2 + 0.3 / 3) / 2, abs=1e-9)  # 0.625


def test_cross_modality_hard_squared_hand_computed():
    # squared: visible 0 -> 1-25+1.4<0, 2 -> 9-1+1.4=9.4 ; infrared 1 -> 1-1+1.4, 5 -> 9-25+1.4<0, -1 -> 1-9+1.4<0
    loss = cross_modality_triplet(_col(_XM_FEATS), torch.tensor(_XM_LABELS), torch.tensor(_XM_CODES),
                                  margin=1.4, squared=True)
    assert loss.item() == pytest.approx((9.4 / 2 + 1.4 / 3) / 2, abs=1e-9)  # 2.583333


def test_cross_modality_ignores_same_modality_pairs_and_unmatched_anchors():
    # a visible id2 image with no infrared counterpart, far away: not an anchor, never the closest negative
    feats = _XM_FEATS + [100.0]
    loss = cross_modality_triplet(_col(feats), torch.tensor(_XM_LABELS + [2]), torch.tensor(_XM_CODES + [V]),
                                  margin=0.3)
    assert loss.item() == pytest.approx(0.625, abs=1e-9)
    # a visible id1 image right next to visible anchor 0 is a same-modality negative: ignored
    feats = _XM_FEATS + [0.01]
    loss = cross_modality_triplet(_col(feats), torch.tensor(_XM_LABELS + [1]), torch.tensor(_XM_CODES + [V]),
                                  margin=0.3)
    # visible anchors 0 -> 0, 2 -> 2.3, 0.01 (id1: pos 5 at 4.99, closest IR negative 1 at .99) -> 4.3;
    # infrared anchors now see 0.01 as a visible negative/positive: 1 -> 1-.99+.3, 5 -> 4.99-5+.3, -1 -> 1-1.01+.3
    expected = ((0 + 2.3 + 4.3) / 3 + (0.31 + 0.29 + 0.29) / 3) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-9)


def _enumerate_random_losses(feats, labels, codes, margin):
    x = np.array(feats)
    n = len(x)
    per_anchor = []
    for a in range(n):
        pos = [j for j in range(n) if codes[j] != codes[a] and labels[j] == labels[a]]
        neg = [j for j in range(n) if codes[j] != codes[a] and labels[j] != labels[a]]
        per_anchor.append([max(0.0, abs(x[a] - x[p]) - abs(x[a] - x[q]) + margin) for p in pos for q in neg])
    values = set()
    for combo in itertools.product(*per_anchor):
        vis = [c for c, m in zip(combo, codes, strict=True) if m == V]
        ir = [c for c, m in zip(combo, codes, strict=True) if m == IR]
        values.add(round((np.mean(vis) + np.mean(ir)) / 2, 9))
    return values


def test_cross_modality_random_mining_is_seeded_and_draws_valid_triplets():
    feats, labels, codes = [0.0, 2.0, 7.0, 1.0, 5.0, -1.0, 9.0], [0, 1, 1, 0, 1, 0, 1], [V, V, V, IR, IR, IR, IR]
    args = (_col(feats), torch.tensor(labels), torch.tensor(codes))
    possible = _enumerate_random_losses(feats, labels, codes, 0.3)
    seen = set()
    for seed in range(12):
        a = cross_modality_triplet(*args, margin=0.3, mining="random", generator=torch.Generator().manual_seed(seed))
        b = cross_modality_triplet(*args, margin=0.3, mining="random", generator=torch.Generator().manual_seed(seed))
        assert a.item() == b.item()
        assert round(a.item(), 9) in possible
        seen.add(round(a.item(), 9))
    assert len(seen) > 1  # the draws really depend on the generator


def test_cross_modality_random_equals_hard_when_choice_is_unique():
    f = _col([0.0, 2.0, 1.0, 5.0])
    lab, codes = torch.tensor([0, 1, 0, 1]), torch.tensor([V, V, IR, IR])
    hard = cross_modality_triplet(f, lab, codes, margin=1.4, squared=True)
    rnd = cross_modality_triplet(f, lab, codes, margin=1.4, squared=True, mining="random",
                                 generator=torch.Generator().manual_seed(0))
    assert rnd.item() == pytest.approx(hard.item())


def test_cross_modality_single_modality_batch_is_zero_with_graph_and_errors():
    f = torch.randn(4, 3, requires_grad=True)
    loss = cross_modality_triplet(f, torch.tensor([0, 0, 1, 1]), torch.zeros(4, dtype=torch.int8), margin=0.3)
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="seeded torch.Generator"):
        cross_modality_triplet(f, torch.tensor([0, 0, 1, 1]), torch.tensor([V, IR, V, IR]), 0.3, mining="random")
    with pytest.raises(ValueError, match="'semi'"):
        cross_modality_triplet(f, torch.tensor([0, 0, 1, 1]), torch.tensor([V, IR, V, IR]), 0.3, mining="semi")
    with pytest.raises(ValueError, match="3 modality codes for 4 features"):
        cross_modality_triplet(f, torch.tensor([0, 0, 1, 1]), torch.tensor([V, IR, V]), 0.3)
