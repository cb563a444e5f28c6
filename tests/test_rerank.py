"""k-reciprocal re-ranking: a hand-made neighbourhood, the authors' reference re-done in NumPy, a set-by-set
reading of the paper, the three details where vireid_v0 differs, and separate reporting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vireid.core import EvalTrial, EvaluationError, Modality, Sample
from vireid.engine.evaluator import Evaluator
from vireid.metrics import k_reciprocal_rerank, k_reciprocal_sets


def _sq(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


# Probe p at the origin. Gallery: an impostor a (the nearest point to p) that sits in its own tight
# cluster {a, a2, a3}, and a true match t1 a bit farther whose neighbourhood {t1, t2, p} holds p.
P = np.array([[0.0, 0.0]])
GAL = np.array([[0.5, 0.0], [0.6, 0.3], [0.6, -0.3], [0.0, 0.6], [0.0, 0.7]])  # a, a2, a3, t1, t2
A, T1 = 0, 3


def test_hand_made_neighbourhood_reorders_as_the_paper_says():
    d = np.sqrt(_sq(np.vstack([P, GAL]), np.vstack([P, GAL])))
    qg, qq, gg = d[:1, 1:], d[:1, :1], d[1:, 1:]
    assert int(np.argmin(qg[0])) == A  # before: the impostor is rank 1
    # N(p, 2) = {p, a, t1} but N(a, 2) = {a, a2, a3}: a is not k-reciprocal to p, t1 is.
    r, r_star = k_reciprocal_sets(torch.tensor(d, dtype=torch.float32), 2)
    assert set(np.nonzero(r[0].numpy())[0].tolist()) == {0, 1 + T1}
    new = k_reciprocal_rerank(qg, qq, gg, k1=2, k2=1, lambda_=0.0).numpy()
    assert int(np.argmin(new[0])) == T1  # after: the true match is rank 1
    # The impostor shares no k-reciprocal neighbour with p: Jaccard distance exactly 1.
    assert new[0, A] == pytest.approx(1.0, abs=1e-6)
    assert new[0, T1] < 1.0


def test_lambda_one_keeps_the_original_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    d = _sq(x, x)
    qg, qq, gg = d[:10, 10:], d[:10, :10], d[10:, 10:]
    new = k_reciprocal_rerank(qg, qq, gg, k1=5, k2=3, lambda_=1.0).numpy()
    np.testing.assert_array_equal(np.argsort(new, 1, kind="stable"), np.argsort(qg, 1, kind="stable"))
    # The reference scales row p of the pool matrix by its own maximum (the Q x (Q+G) rows here).
    np.testing.assert_allclose(new, qg / d[:10].max(1, keepdims=True), rtol=1e-5)
    old = k_reciprocal_rerank(qg, qq, gg, k1=5, k2=3, lambda_=1.0, variant="vireid_v0").numpy()
    np.testing.assert_allclose(old, qg / d.max(), rtol=1e-5)


def reference_rerank(d, nq, k1, k2, lam, variant="reference"):
    """The paper's definitions evaluated set by set with Python sets and loops (float64), with the
    arithmetic of `variant` (row or global maximum, > or >= 2/3, k1/2 half to even or half up)."""
    n = len(d)
    ref = variant == "reference"
    d = d / d.max(1, keepdims=True) if ref else d / d.max()  # d is symmetric here
    order = [np.argsort(d[i], kind="stable") for i in range(n)]

    def nbrs(p, k):
        return set(order[p][:k + 1].tolist())

    def recip(p, k):
        return {g for g in nbrs(p, k) if p in nbrs(g, k)}

    kh = round(k1 / 2) if ref else int(math.floor(k1 / 2 + 0.5))
    v = np.zeros((n, n))
    for p in range(n):
        r = recip(p, k1)
        rs = set(r)
        for q in r:
            rq = recip(q, kh)
            if (3 * len(r & rq) > 2 * len(rq)) if ref else (3 * len(r & rq) >= 2 * len(rq)):
                rs |= rq
        for g in rs:
            v[p, g] = math.exp(-d[p, g])
        v[p] /= v[p].sum()
    vq = np.stack([v[order[p][:k2]].mean(0) for p in range(n)])
    out = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(nq, n):
            dj = 1 - np.minimum(vq[i], vq[j]).sum() / np.maximum(vq[i], vq[j]).sum()
            out[i, j - nq] = (1 - lam) * dj + lam * d[i, j]
    return out


@pytest.mark.parametrize("variant", ["reference", "vireid_v0"])
@pytest.mark.parametrize("k1,k2,lam", [(4, 3, 0.3), (6, 1, 0.0), (3, 2, 0.5), (5, 2, 0.3)])
def test_vectorised_rerank_matches_set_by_set_reference(k1, k2, lam, variant):
    rng = np.random.default_rng(k1 * 10 + k2)
    centers = rng.normal(size=(5, 4)) * 2
    x = centers[rng.integers(0, 5, 28)] + rng.normal(size=(28, 4))
    d = _sq(x, x)
    nq = 9
    ref = reference_rerank(d, nq, k1, k2, lam, variant)
    got = k_reciprocal_rerank(d[:nq, nq:], d[:nq, :nq], d[nq:, nq:], k1=k1, k2=k2, lambda_=lam,
                              variant=variant).numpy()
    np.testing.assert_allclose(got, ref, atol=2e-6)


def zhong_reference(qg, qq, gg, k1, k2, lam, *, row_max=True, strict=True, half_even=True):
    """Zhong et al.'s `re_ranking` (person-re-ranking, as copied by fast-reid / AGW / DDAG) re-done in
    NumPy float32 on squared distances, with a stable argsort in place of its unstable one.

    Each flag set to False swaps in vireid_v0's choice for one detail: the global maximum instead of
    each row's, >= 2/3 instead of > 2/3, k1/2 rounded half up instead of NumPy's half to even.
    """
    nq = qg.shape[0]
    pool = np.block([[qq, qg], [qg.T, gg]]).astype(np.float32)
    n = len(pool)
    # The reference scales each column by its maximum and transposes (row maxima for symmetric input).
    dist = (pool / pool.max(axis=0)).T if row_max else pool / pool.max()
    rank = np.argsort(dist, axis=1, kind="stable")
    half = int(np.around(k1 / 2)) if half_even else int(np.floor(k1 / 2 + 0.5))

    def reciprocal_lists(k):
        top = rank[:, :k + 1]
        return [top[p][(top[top[p]] == p).any(axis=1)] for p in range(n)]

    r_k1, r_half = reciprocal_lists(k1), reciprocal_lists(half)
    v = np.zeros((n, n), dtype=np.float32)
    for p in range(n):
        core = set(r_k1[p].tolist())
        grown = set(core)
        for q in r_k1[p]:
            cand = r_half[q].tolist()
            shared = len(core.intersection(cand))
            if (shared > 2.0 / 3 * len(cand)) if strict else (shared >= 2.0 / 3 * len(cand)):
                grown.update(cand)
        cols = np.array(sorted(grown), dtype=np.int64)
        w = np.exp(-dist[p, cols])
        v[p, cols] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[p, :k2]].mean(axis=0) for p in range(n)])
    jac = np.empty((nq, n - nq), dtype=np.float32)
    for i in range(nq):
        nz = np.flatnonzero(v[i])
        m = np.minimum(v[i, nz], v[nq:, nz]).sum(axis=1)
        jac[i] = 1 - m / (2 - m)  # every row of V has mass 1: sum max = 2 - sum min
    return jac * (1 - lam) + dist[:nq, nq:] * lam


def _pool_split(d, nq):
    return d[:nq, nq:], d[:nq, :nq], d[nq:, nq:]


def _tied_case(seed, n=48, nq=14, levels=3, dim=3):
    """Integer features on a small grid: many duplicate points and exactly equal distances."""
    x = np.random.default_rng(seed).integers(0, levels, size=(n, dim)).astype(np.float64)
    return _pool_split(_sq(x, x).astype(np.float32), nq)


@pytest.mark.parametrize("k1,k2,lam", [(1, 1, 0.3), (2, 2, 0.3), (3, 2, 0.0), (5, 3, 0.3), (6, 1, 0.5),
                                       (9, 4, 0.3), (20, 6, 0.3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_equals_zhong_reference_with_exact_ties(seed, k1, k2, lam):
    for levels, dim in ((3, 3), (2, 4), (2, 2)):
        qg, qq, gg = _tied_case(seed, levels=levels, dim=dim)
        want = zhong_reference(qg, qq, gg, k1, k2, lam)
        got = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_=lam).numpy()
        assert np.abs(got - want).max() <= 1e-6


def _sysu_sized(dim=256, seed=0, nq=3803, ng=301, ids=96):
    """A random case the size of SYSU-MM01 all-search single-shot: identity centres plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    q_pid, g_pid = rng.integers(0, ids, nq), np.arange(ng) % ids
    x = np.concatenate([centres[q_pid], centres[g_pid]]) + 1.5 * rng.normal(size=(nq + ng, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = np.clip(2.0 - 2.0 * x @ x.T, 0.0, None).astype(np.float32)
    return _pool_split(d, nq)


@pytest.mark.slow
def test_default_equals_zhong_reference_sysu_sized():
    qg, qq, gg = _sysu_sized()
    want = zhong_reference(qg, qq, gg, 20, 6, 0.3)
    got = k_reciprocal_rerank(qg, qq, gg).numpy()
    assert got.shape == (3803, 301)
    assert np.abs(got - want).max() <= 1e-6


@pytest.mark.parametrize("detail", ["row_max", "strict", "half_even"])
def test_each_reference_detail_changes_the_result(detail):
    # k1 = 5: np.around(2.5) = 2 but half up gives 3. Each case: the default equals the reference, the
    # reference with only `detail` switched to vireid_v0's choice does not, and neither does vireid_v0.
    qg, qq, gg = _tied_case(0)
    want = zhong_reference(qg, qq, gg, 5, 2, 0.3)
    flipped = zhong_reference(qg, qq, gg, 5, 2, 0.3, **{detail: False})
    assert np.abs(flipped - want).max() > 1e-2
    got = k_reciprocal_rerank(qg, qq, gg, k1=5, k2=2, lambda_=0.3).numpy()
    assert np.abs(got - want).max() <= 1e-6
    old = k_reciprocal_rerank(qg, qq, gg, k1=5, k2=2, lambda_=0.3, variant="vireid_v0").numpy()
    assert np.abs(old - want).max() > 1e-2
    all_old = zhong_reference(qg, qq, gg, 5, 2, 0.3, row_max=False, strict=False, half_even=False)
    np.testing.assert_allclose(old, all_old, atol=1e-6)


def test_variants_share_the_reciprocal_sets_but_not_their_expansion():
    # On one (row-scaled) distance matrix: > vs >= 2/3 and the k1/2 rounding only touch the expansion.
    qg, qq, gg = _tied_case(0)
    d = torch.tensor(np.block([[qq, qg], [qg.T, gg]]))
    d = d / d.max(1, keepdim=True).values
    r_new, star_new = k_reciprocal_sets(d, 5)
    r_old, star_old = k_reciprocal_sets(d, 5, variant="vireid_v0")
    assert torch.equal(r_new, r_old) and not torch.equal(star_new, star_old)


GOLDEN_V0 = np.array([  # the pre-change k_reciprocal_rerank on the case below (k1=5, k2=2, lambda=0.3)
    [0.3133855, 0.1442761, 0.6029936, 0.1246050, 0.5227317, 0.5880010],
    [0.2441548, 0.1211991, 0.4876090, 0.1476819, 0.4535009, 0.5649240],
    [0.2858366, 0.1910850, 0.7542195, 0.1422518, 0.3812163, 0.2806836]])


def test_vireid_v0_keeps_the_previous_numbers():
    # Global maximum, >= 2/3 and k1/2 = 3 (half up); the default (k1/2 = 2, ...) gives other numbers.
    x = np.array([[0, 0], [1, 0], [0, 2], [2, 1], [1, 1], [3, 0], [0, 1], [2, 2], [1, 3]], dtype=np.float64)
    qg, qq, gg = _pool_split(_sq(x, x), 3)
    got = k_reciprocal_rerank(qg, qq, gg, k1=5, k2=2, lambda_=0.3, variant="vireid_v0").numpy()
    np.testing.assert_allclose(got, GOLDEN_V0, atol=1e-6)
    new = k_reciprocal_rerank(qg, qq, gg, k1=5, k2=2, lambda_=0.3).numpy()
    assert np.abs(new - GOLDEN_V0).max() > 0.1


def test_unknown_variant_is_rejected():
    with pytest.raises(EvaluationError, match="variant"):
        k_reciprocal_rerank(np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3)), variant="fast-reid")


def test_rerank_rejects_negative_distances_and_bad_shapes():
    with pytest.raises(EvaluationError, match="non-negative"):
        k_reciprocal_rerank(-np.ones((2, 3)), np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(EvaluationError, match=r"q_q \(3, 3\)"):
        k_reciprocal_rerank(np.ones((2, 3)), np.zeros((3, 3)), np.zeros((3, 3)))


def test_rerank_results_are_reported_separately_and_never_overwrite_plain_ones():
    rng = np.random.default_rng(1)
    query = [Sample(f"q{i}.jpg", i % 4, 3 + 3 * (i % 2), Modality.INFRARED) for i in range(12)]
    gallery = [Sample(f"g{i}.jpg", i % 4, 1 + i % 2, Modality.VISIBLE) for i in range(16)]
    trials = [EvalTrial("toy/trial0", query, gallery, "none", "image", {"protocol": "toy"})]
    feats = {s: rng.normal(size=16) + 0.5 * np.eye(16)[s.pid] for s in query + gallery}

    def extract(samples):
        return {"bn": np.stack([feats[s] for s in samples])}

    plain = Evaluator(trials, features=("bn",)).run(extract)
    both = Evaluator(trials, features=("bn",), rerank=True, rerank_params=(5, 2, 0.3)).run(extract)
    entry = both["toy"]
    assert set(entry.features) == {"bn", "bn+rerank"}
    assert entry.features["bn+rerank"].rerank is True and entry.features["bn"].rerank is False
    assert entry.features["bn"].mean() == plain["toy"].features["bn"].mean()
    js = both.to_json()["protocols"]["toy"]["features"]
    assert js["bn"]["rerank"] is False and js["bn+rerank"]["rerank"] is True
    assert "yes (k1=5, k2=2, lambda=0.3)" in both.format_table()
