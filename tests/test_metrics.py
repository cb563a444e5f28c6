"""evaluate_ranking: the hand-computed vectors of docs/reference/protocols.md#sec-9 and a per-query reference loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vireid.core import EvaluationError
from vireid.metrics import evaluate_ranking, fuse_flip, rank_queries

G6 = [1, 2, 1, 3, 1, 2]


def _one(row, q_pid, g_pids, q_cam=None, g_cams=None, rule="none", cmc="image", max_rank=20):
    return evaluate_ranking(np.array([row], dtype=float), [q_pid], g_pids,
                            None if q_cam is None else [q_cam], g_cams, rule=rule, cmc=cmc, max_rank=max_rank)


def test_tv1_ap_inp_basics():
    m = _one([1, 2, 3, 4, 5, 6], 1, G6)
    np.testing.assert_allclose(m.cmc, [1.0] * 6)
    assert m.mAP == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)
    assert m.mAP == pytest.approx(0.755556, abs=1e-6)
    assert m.mINP == pytest.approx(0.6, abs=1e-12)
    assert m.first_hit.tolist() == [1]


def test_tv2_regdb_rule():
    m = _one([1, 2, 3, 5, 6, 4], 2, G6)
    np.testing.assert_allclose(m.cmc, [0, 1, 1, 1, 1, 1])
    assert m.mAP == pytest.approx(0.5, abs=1e-12)
    assert m.mINP == pytest.approx(0.5, abs=1e-12)
    assert m.first_hit.tolist() == [2]


def test_tv3_averaging_and_invalid_query():
    dist = np.array([[1, 2, 3, 4, 5, 6], [1, 2, 3, 5, 6, 4], [1, 2, 3, 4, 5, 6]], dtype=float)
    m = evaluate_ranking(dist, [1, 2, 9], G6, None, None, rule="none", cmc="image", max_rank=6)
    np.testing.assert_allclose(m.cmc, [0.5, 1, 1, 1, 1, 1])
    assert m.mAP == pytest.approx(0.627778, abs=1e-6)
    assert m.mINP == pytest.approx(0.55, abs=1e-12)
    assert m.num_valid_queries == 2
    assert m.first_hit.tolist() == [1, 2, -1]
    assert np.isnan(m.ap[2]) and np.isnan(m.inp[2])


def test_tv4_positives_at_the_bottom():
    m = _one([1, 2, 3, 4], 5, [1, 2, 5, 5])
    np.testing.assert_allclose(m.cmc, [0, 0, 1, 1])
    assert m.mAP == pytest.approx(0.416667, abs=1e-6)
    assert m.mINP == pytest.approx(0.5, abs=1e-12)


TV5_G = [1, 2, 1, 3, 2]
TV5_C = [2, 1, 4, 2, 5]
TV5_ROW = [1, 3, 4, 2, 5]


def test_tv5_sysu_camera_skip_cam3():
    m = _one(TV5_ROW, 1, TV5_G, 3, TV5_C, rule="sysu_location", cmc="identity", max_rank=3)
    np.testing.assert_allclose(m.cmc, [0, 1, 1])
    assert m.mAP == pytest.approx(0.5) and m.mINP == pytest.approx(0.5)


def test_tv5_sysu_camera_skip_cam6():
    m = _one(TV5_ROW, 1, TV5_G, 6, TV5_C, rule="sysu_location", cmc="identity", max_rank=3)
    np.testing.assert_allclose(m.cmc, [1, 1, 1])
    assert m.mAP == pytest.approx(0.75) and m.mINP == pytest.approx(0.5)


def test_tv5_joint_is_padded_where_reference_crashes():
    dist = np.array([TV5_ROW, TV5_ROW], dtype=float)
    m = evaluate_ranking(dist, [1, 1], TV5_G, [3, 6], TV5_C, rule="sysu_location", cmc="identity", max_rank=3)
    np.testing.assert_allclose(m.cmc, [0.5, 1, 1])
    assert m.mAP == pytest.approx(0.625) and m.mINP == pytest.approx(0.5)


def test_tv6_identity_vs_image_cmc():
    args = ([1, 2, 3, 4, 5], 1, [2, 2, 1, 3, 1], 6, [1, 4, 5, 1, 4])
    ident = _one(*args, rule="sysu_location", cmc="identity", max_rank=3)
    image = _one(*args, rule="none", cmc="image", max_rank=5)
    np.testing.assert_allclose(ident.cmc, [0, 1, 1])
    np.testing.assert_allclose(image.cmc, [0, 0, 1, 1, 1])
    for m in (ident, image):
        assert m.mAP == pytest.approx(0.366667, abs=1e-6)
        assert m.mINP == pytest.approx(0.4, abs=1e-12)
    assert ident.first_hit.tolist() == [2] and image.first_hit.tolist() == [3]


def test_tv7_cam3_query_whose_only_positive_is_in_cam2():
    dist = np.array([[1, 2, 3], [1, 3, 2]], dtype=float)
    m = evaluate_ranking(dist, [1, 2], [1, 2, 3], [3, 3], [2, 1, 4], rule="sysu_location", cmc="identity")
    # TV-7 (docs/reference/protocols.md#tv-7) gives [0, 1]; max_rank is clipped to the 3 gallery images,
    # so the curve is padded (docs/reference/protocols.md#p5)
    np.testing.assert_allclose(m.cmc, [0, 1, 1])
    assert m.num_valid_queries == 1
    assert m.mAP == pytest.approx(0.5) and m.mINP == pytest.approx(0.5)
    assert m.first_hit.tolist() == [-1, 2]


def test_max_rank_clipped_to_gallery_images_and_rank_lookup():
    m = _one([3, 1, 2], 7, [7, 8, 9])
    assert len(m.cmc) == 3
    np.testing.assert_allclose(m.cmc, [0, 0, 1])
    assert m.rank(20) == 1.0  # flat past the gallery size (docs/reference/protocols.md#p5)
    m10 = evaluate_ranking(np.array([[3.0, 1, 2]]), [7], [7, 8, 9], None, None, rule="none", cmc="image", max_rank=2)
    assert m10.rank(20) is None  # not computed: asked max_rank=2
    assert m10.summary()["rank1"] == 0.0


def test_same_pid_same_cam_rule_drops_only_same_identity_same_camera():
    # gallery: pid1 cam1 (dropped), pid2 cam1 (kept: other identity), pid1 cam2 (kept)
    m = _one([1, 2, 3], 1, [1, 2, 1], 1, [1, 1, 2], rule="same_pid_same_cam", cmc="identity")
    assert m.first_hit.tolist() == [2]
    assert m.mAP == pytest.approx(0.5) and m.mINP == pytest.approx(0.5)


def test_stable_sort_keeps_gallery_order_on_ties():
    # all distances tie: the stable order is the gallery order, so the match at index 2 is rank 3.
    m = _one([0.5, 0.5, 0.5, 0.5], 4, [1, 2, 4, 4])
    assert m.first_hit.tolist() == [3]
    assert m.mAP == pytest.approx((1 / 3 + 2 / 4) / 2)


# ----------------------------------------------------------------------- reference loop


def reference_loop(dist, q_pids, g_pids, q_cams, g_cams, rule, cmc, max_rank):
    """Straightforward per-query NumPy evaluation (the reference way, with stable sort and padding)."""
    max_rank = min(max_rank, dist.shape[1])
    rows, aps, inps, hits = [], [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        if rule == "sysu_location":
            keep = ~((q_cams[i] == 3) & (g_cams[order] == 2))
        elif rule == "same_pid_same_cam":
            keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        else:
            keep = np.ones(len(order), dtype=bool)
        order = order[keep]
        match = (g_pids[order] == q_pids[i]).astype(int)
        if match.sum() == 0:
            aps.append(np.nan), inps.append(np.nan), hits.append(-1)
            continue
        if cmc == "identity":
            seen, ids = set(), []
            for p in g_pids[order]:
                if p not in seen:
                    seen.add(p)
                    ids.append(p)
            hit = ids.index(q_pids[i]) + 1
        else:
            hit = int(np.argmax(match)) + 1
        cum = np.cumsum(match)
        pos = np.nonzero(match)[0] + 1
        aps.append(float(np.mean(cum[pos - 1] / pos)))
        inps.append(match.sum() / pos[-1])
        hits.append(hit)
        row = (np.arange(1, max_rank + 1) >= hit).astype(float)
        rows.append(row)
    return np.mean(rows, 0), np.nanmean(aps), np.nanmean(inps), np.array(aps), np.array(inps), np.array(hits)


@pytest.mark.parametrize("strategy", ["auto", "sort", "count"])
@pytest.mark.parametrize("rule", ["sysu_location", "same_pid_same_cam", "none"])
@pytest.mark.parametrize("cmc", ["identity", "image"])
def test_matches_reference_loop_on_random_data(rule, cmc, strategy, monkeypatch):
    import vireid.metrics.ranking as ranking

    monkeypatch.setattr(ranking, "_STRATEGY", strategy)  # both ranking paths must agree with the loop
    rng = np.random.default_rng([["sysu_location", "same_pid_same_cam", "none"].index(rule), len(cmc)])
    for trial in range(4):
        nq, ng = int(rng.integers(5, 60)), int(rng.integers(1, 45))
        q_pids = rng.integers(0, 12, nq)
        g_pids = rng.integers(0, 12, ng)
        q_cams = rng.choice([3, 6, 1], nq)
        g_cams = rng.integers(1, 7, ng)
        # coarse values create ties on purpose: both sides must use a stable sort
        dist = rng.integers(0, 6, (nq, ng)).astype(np.float64) if trial % 2 else rng.normal(size=(nq, ng))
        max_rank = int(rng.integers(1, 25))
        try:
            ref = reference_loop(dist, q_pids, g_pids, q_cams, g_cams, rule, cmc, max_rank)
        except ZeroDivisionError:
            continue
        if (ref[5] < 0).all():
            with pytest.raises(EvaluationError, match="no valid query"):
                evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, rule=rule, cmc=cmc, max_rank=max_rank)
            continue
        for chunk in (None, 1, 7):
            m = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, rule=rule, cmc=cmc, max_rank=max_rank,
                                 chunk_size=chunk)
            np.testing.assert_allclose(m.cmc, ref[0], atol=1e-12)
            assert m.mAP == pytest.approx(ref[1], abs=1e-12)
            assert m.mINP == pytest.approx(ref[2], abs=1e-12)
            np.testing.assert_allclose(m.ap, ref[3], atol=1e-12, equal_nan=True)
            np.testing.assert_allclose(m.inp, ref[4], atol=1e-12, equal_nan=True)
            np.testing.assert_array_equal(m.first_hit, ref[5])


def test_torch_inputs_and_rank_queries_agree_with_numpy():
    rng = np.random.default_rng(3)
    dist = rng.normal(size=(30, 20)).astype(np.float32)
    q, g = rng.integers(0, 5, 30), rng.integers(0, 5, 20)
    qc, gc = rng.choice([3, 6], 30), rng.integers(1, 6, 20)
    a = evaluate_ranking(dist, q, g, qc, gc, rule="sysu_location")
    b = evaluate_ranking(torch.from_numpy(dist), torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(qc),
                         torch.from_numpy(gc), rule="sysu_location")
    np.testing.assert_allclose(a.cmc, b.cmc)
    assert a.mAP == b.mAP and a.mINP == b.mINP
    ap, inp, hit = rank_queries(dist, q, g, qc, gc, rule="sysu_location")
    np.testing.assert_array_equal(hit, a.first_hit)
    np.testing.assert_allclose(ap, a.ap, equal_nan=True)


# ----------------------------------------------------------------------- bad inputs


def test_nan_and_inf_are_counted_and_located():
    dist = np.arange(12, dtype=float).reshape(3, 4)
    dist[1, 2] = np.nan
    dist[2, 0] = np.inf
    with pytest.raises(EvaluationError, match=r"2 non-finite.*\(query 1, gallery 2\)"):
        evaluate_ranking(dist, [1, 2, 3], [1, 2, 3, 4], None, None, rule="none", chunk_size=1)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(EvaluationError, match=r"g_pids has shape \(3,\) but dist has shape \(2, 4\)"):
        evaluate_ranking(np.zeros((2, 4)), [1, 2], [1, 2, 3], None, None, rule="none")
    with pytest.raises(EvaluationError, match=r"q_camids has shape \(3,\) but dist has shape \(2, 4\)"):
        evaluate_ranking(np.zeros((2, 4)), [1, 2], [1, 2, 3, 4], [3, 3, 3], [1, 1, 1, 1], rule="sysu_location")


def test_no_valid_query_says_why():
    with pytest.raises(EvaluationError, match="no valid query.*do not overlap"):
        evaluate_ranking(np.zeros((2, 3)), [7, 8], [1, 2, 3], None, None, rule="none")
    # the only match is in cam2 and the query is cam3: the filter removed it
    with pytest.raises(EvaluationError, match="no valid query.*filter removes every true match"):
        evaluate_ranking(np.zeros((1, 2)), [1], [1, 2], [3], [2, 1], rule="sysu_location")


def test_empty_gallery_and_unknown_rule_or_cmc():
    with pytest.raises(EvaluationError, match="empty gallery"):
        evaluate_ranking(np.zeros((2, 0)), [1, 2], [], None, None, rule="none")
    with pytest.raises(EvaluationError, match="unknown rule 'market'"):
        evaluate_ranking(np.zeros((1, 1)), [1], [1], None, None, rule="market")
    with pytest.raises(EvaluationError, match="unknown cmc kind 'top'"):
        evaluate_ranking(np.zeros((1, 1)), [1], [1], None, None, rule="none", cmc="top")


def test_tv16_flip_fusion_styles():
    f, ff = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(fuse_flip(f, ff, "caj"), [[0.707107, 0.707107]], atol=1e-6)
    deen = fuse_flip(torch.tensor(f), torch.tensor(ff), "deen")
    assert isinstance(deen, torch.Tensor)
    np.testing.assert_allclose(deen.numpy(), [[1.0, 1.0]])
    assert float(deen.norm()) == pytest.approx(1.414214, abs=1e-6)
    caj_t = fuse_flip(torch.tensor(f), torch.tensor(ff), "caj")
    np.testing.assert_allclose(caj_t.numpy(), [[0.707107, 0.707107]], atol=1e-6)
    with pytest.raises(EvaluationError, match="unknown flip fusion style"):
        fuse_flip(f, ff, "mean")
