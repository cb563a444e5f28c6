"""k-reciprocal re-ranking: a hand-made neighbourhood, a set-by-set reference, and separate reporting."""

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
    np.testing.assert_allclose(new, qg / d.max(), rtol=1e-5)


def reference_rerank(d, nq, k1, k2, lam):
    """The paper's definitions evaluated set by set with Python sets and loops (float64)."""
    n = len(d)
    d = d / d.max()
    order = [np.argsort(d[i], kind="stable") for i in range(n)]

    def nbrs(p, k):
        return set(order[p][:k + 1].tolist())

    def recip(p, k):
        return {g for g in nbrs(p, k) if p in nbrs(g, k)}

    kh = int(math.floor(k1 / 2 + 0.5))
    v = np.zeros((n, n))
    for p in range(n):
        r = recip(p, k1)
        rs = set(r)
        for q in r:
            rq = recip(q, kh)
            if len(r & rq) >= 2 / 3 * len(rq):
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


@pytest.mark.parametrize("k1,k2,lam", [(4, 3, 0.3), (6, 1, 0.0), (3, 2, 0.5)])
def test_vectorised_rerank_matches_set_by_set_reference(k1, k2, lam):
    rng = np.random.default_rng(k1 * 10 + k2)
    centers = rng.normal(size=(5, 4)) * 2
    x = centers[rng.integers(0, 5, 28)] + rng.normal(size=(28, 4))
    d = _sq(x, x)
    nq = 9
    ref = reference_rerank(d, nq, k1, k2, lam)
    got = k_reciprocal_rerank(d[:nq, nq:], d[:nq, :nq], d[nq:, nq:], k1=k1, k2=k2, lambda_=lam).numpy()
    np.testing.assert_allclose(got, ref, atol=2e-6)


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
