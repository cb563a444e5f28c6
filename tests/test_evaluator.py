"""Evaluator: embed once, sign convention, aggregation (docs/reference/protocols.md#tv-15), results.json,
merging, .npz files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vireid.core import ConfigError, EvalTrial, EvaluationError, Modality, Sample
from vireid.engine.evaluate import evaluate_npz
from vireid.engine.evaluator import Evaluator, unique_samples
from vireid.engine.results import EvalResults, FeatureResult, ProtocolResult, TrialResult, mean_std, merge_results


def _vis(i, pid, cam=1):
    return Sample(f"/v/{i}.jpg", pid, cam, Modality.VISIBLE)


def _ir(i, pid, cam=3):
    return Sample(f"/i/{i}.jpg", pid, cam, Modality.INFRARED)


def test_tv10_sign_convention_ranks_by_negative_similarity():
    q = [_ir(0, 7)]
    g = [_vis(0, 5), _vis(1, 6), _vis(2, 7)]
    feats = {q[0]: [1.0, 0.0], g[0]: [0.8, 0.6], g[1]: [0.0, 1.0], g[2]: [1.0, 0.0]}

    def extract(samples):
        return {"bn": torch.tensor([feats[s] for s in samples])}

    # similarity [0.8, 0, 1] -> order [2, 0, 1]: pid 7 at rank 1, pid 5 at rank 2, pid 6 at rank 3
    for pid, rank in ((7, 1), (5, 2), (6, 3)):
        query = [Sample(q[0].path, pid, 3, Modality.INFRARED)]
        feats[query[0]] = [1.0, 0.0]
        trial = EvalTrial("t/trial0", query, g, "none", "image", {"protocol": "t"})
        res = Evaluator([trial], features=("bn",)).run(extract)
        m = res.get("t", "bn").trials[0].metrics
        assert m.first_hit.tolist() == [rank]
    # Euclidean on these unit vectors gives the same order
    trial = EvalTrial("t/trial0", q, g, "none", "image", {"protocol": "t"})
    res = Evaluator([trial], features=("bn",), distance="euclidean").run(extract)
    assert res.get("t", "bn").trials[0].metrics.first_hit.tolist() == [1]


def _toy_trials(num_trials=3):
    rng = np.random.default_rng(0)
    query = [_ir(i, i % 5, 3 if i % 2 else 6) for i in range(20)]
    pool = [_vis(i, i % 5, 1 + i % 4) for i in range(40)]
    trials = []
    for t in range(num_trials):
        gallery = [pool[j] for j in sorted(rng.choice(40, 15, replace=False))]
        trials.append(EvalTrial(f"toy/all/trial{t}", query, gallery, "sysu_location", "identity",
                                {"protocol": "toy/all", "dataset": "toy", "direction": "infrared_to_visible",
                                 "gallery_sampler": "random", "options": {"trials": num_trials}}))
    return trials


class CountingExtract:
    def __init__(self, dim=8, seed=0):
        self.calls = []
        self.rng = np.random.default_rng(seed)
        self.centers = self.rng.normal(size=(10, dim))

    def __call__(self, samples):
        self.calls.append(list(samples))
        f = np.stack([self.centers[s.pid] + 0.7 * self.rng.normal(size=self.centers.shape[1]) for s in samples])
        return {"bn": f, "pool": torch.tensor(f * 2.0)}


def test_extract_is_called_once_on_unique_samples():
    trials = _toy_trials()
    ex = CountingExtract()
    ev = Evaluator(trials)
    res = ev.run(ex)
    assert len(ex.calls) == 1
    expected = {s for t in trials for s in list(t.query) + list(t.gallery)}
    assert len(ex.calls[0]) == len(expected) == len(set(ex.calls[0]))
    assert set(ex.calls[0]) == expected
    assert unique_samples(trials) == ex.calls[0]
    entry = res["toy/all"]
    assert set(entry.features) == {"bn", "pool"}
    assert [t.name for t in entry.features["bn"].trials] == ["toy/all/trial0", "toy/all/trial1", "toy/all/trial2"]


def test_tv15_aggregation_mean_and_sample_std():
    rows = [{"rank1": 0.4, "mAP": 0.5}, {"rank1": 0.5, "mAP": 0.4}, {"rank1": 0.6, "mAP": 0.6}]
    rows = [{**{k: 0.0 for k in ("rank5", "rank10", "rank20", "mINP")}, **r} for r in rows]
    mean, std = mean_std(rows)
    assert mean["rank1"] == pytest.approx(0.5) and mean["mAP"] == pytest.approx(0.5)
    assert std["rank1"] == pytest.approx(0.1)  # sample std (ddof=1), not the population 0.0816
    assert std["mAP"] == pytest.approx(0.1)
    one_mean, one_std = mean_std(rows[:1])
    assert one_std["rank1"] == 0.0


def test_mean_cmc_is_elementwise_and_non_decreasing():
    trials = [TrialResult(f"t{i}", {k: 0.0 for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")},
                          1, 1, 1, cmc) for i, cmc in enumerate([[0.2, 0.5, 1.0], [0.4, 0.7, 0.9]])]
    fr = FeatureResult("bn", False, trials)
    np.testing.assert_allclose(fr.mean_cmc(), [0.3, 0.6, 0.95])
    assert np.all(np.diff(fr.mean_cmc()) >= 0)


def test_results_json_schema_and_atomic_write(tmp_path):
    trials = _toy_trials(2)
    res = Evaluator(trials, meta={"flip": True, "flip_style": "caj"}).run(CountingExtract(), out_dir=tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["schema"] == "vireid.results/1"
    entry = data["protocols"]["toy/all"]
    for key in ("dataset", "protocol", "options", "direction", "gallery_sampler", "flip", "distance", "rerank"):
        assert key in entry, key
    assert entry["flip"] is True and entry["distance"] == "cosine" and entry["rerank"] is False
    bn = entry["features"]["bn"]
    keys = {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}
    assert set(bn["mean"]) == keys and set(bn["std"]) == keys
    assert all(0.0 <= v <= 1.0 for v in bn["mean"].values())
    t0 = bn["trials"][0]
    assert t0["name"] == "toy/all/trial0" and t0["num_query"] == 20 and t0["num_gallery"] == 15
    assert 0 < t0["num_valid_query"] <= 20
    assert bn["mean"]["rank1"] == pytest.approx(np.mean([t["rank1"] for t in bn["trials"]]))
    assert not list(tmp_path.glob(".results.json*"))  # no temporary left behind
    assert (tmp_path / "galleries" / "toy" / "all" / "trial1.txt").read_text().splitlines() == \
        [s.path for s in trials[1].gallery]
    again = EvalResults.load(tmp_path / "results.json")
    assert again.get("toy/all", "bn").mean() == res.get("toy/all", "bn").mean()
    table = res.format_table()
    for word in ("toy", "toy/all", "infrared_to_visible", "random", "bn", "yes (caj)", "R1", "±"):
        assert word in table


def _regdb_like(split: int, rank1: float) -> EvalResults:
    vals = {"rank1": rank1, "rank5": 1.0, "rank10": 1.0, "rank20": 1.0, "mAP": rank1, "mINP": rank1}
    info = {"dataset": "regdb", "options": {"trial": split, "direction": "visible_to_thermal"},
            "direction": "visible_to_thermal", "gallery_sampler": "none", "rule": "none", "cmc": "image",
            "flip": False, "distance": "cosine", "rerank": False, "rerank_params": None, "max_rank": 20}
    fr = FeatureResult("bn", False, [TrialResult(f"regdb/v2t/trial{split}", vals, 10, 10, 10, [rank1, 1.0])])
    return EvalResults({"regdb/v2t": ProtocolResult("regdb/v2t", info, {"bn": fr})}, {"distance": "cosine"})


def test_merge_results_concatenates_splits_and_rejects_conflicts():
    merged = merge_results([_regdb_like(1, 0.4), _regdb_like(2, 0.6), _regdb_like(3, 0.5)])
    fr = merged.get("regdb/v2t", "bn")
    assert [t.name for t in fr.trials] == ["regdb/v2t/trial1", "regdb/v2t/trial2", "regdb/v2t/trial3"]
    assert fr.mean()["rank1"] == pytest.approx(0.5) and fr.std()["rank1"] == pytest.approx(0.1)
    assert merged["regdb/v2t"].info["options"] == {"trial": [1, 2, 3], "direction": "visible_to_thermal"}
    with pytest.raises(EvaluationError, match="appear in two runs"):
        merge_results([_regdb_like(1, 0.4), _regdb_like(1, 0.6)])
    other = _regdb_like(2, 0.6)
    other["regdb/v2t"].info["flip"] = True
    with pytest.raises(EvaluationError, match="setting 'flip' differs"):
        merge_results([_regdb_like(1, 0.4), other])
    # different protocols sit side by side
    both = merge_results([_regdb_like(1, 0.4), Evaluator(_toy_trials(1)).run(CountingExtract())])
    assert set(both.protocols) == {"regdb/v2t", "toy/all"}


def test_evaluator_input_errors():
    trials = _toy_trials(1)
    with pytest.raises(ConfigError, match="distance"):
        Evaluator(trials, distance="manhattan")
    with pytest.raises(EvaluationError, match="at least one trial"):
        Evaluator([])
    with pytest.raises(EvaluationError, match="no feature 'bn'"):
        Evaluator(trials, features=("bn",)).run(lambda s: {"pool": np.zeros((len(s), 4))})
    with pytest.raises(EvaluationError, match=r"shape \(3, 4\)"):
        Evaluator(trials, features=("bn",)).run(lambda s: {"bn": np.zeros((3, 4))})

    def nan_extract(samples):
        f = np.ones((len(samples), 4))
        f[5, 1] = np.nan
        return {"bn": f}

    with pytest.raises(EvaluationError, match="non-finite values in 1 of .* row 5"):
        Evaluator(trials, features=("bn",)).run(nan_extract)
    empty = EvalTrial("e/trial0", trials[0].query, [], "none", "image", {"protocol": "e"})
    with pytest.raises(EvaluationError, match="empty gallery"):
        Evaluator([empty], features=("bn",)).run(lambda s: {"bn": np.ones((len(s), 4))})
    strangers = EvalTrial("s/trial0", [_ir(0, 1)], [_vis(0, 2)], "none", "image", {"protocol": "s"})
    with pytest.raises(EvaluationError, match="no valid query"):
        Evaluator([strangers], features=("bn",)).run(lambda s: {"bn": np.ones((len(s), 4))})


# ----------------------------------------------------------------------- saved feature files


def _llcm_npz(path, with_kinds=True, drop=None):
    rng = np.random.default_rng(2)
    paths, pids, cams, mods = [], [], [], []
    for pid in (1, 2, 3, 4):
        for cam in (1, 2, 4):
            for mod, key in ((0, "vis"), (1, "nir")):
                for i in range(3):
                    paths.append(f"/llcm/test_{key}/cam{cam}/{pid:04d}/{i}.jpg")
                    pids.append(pid), cams.append(cam), mods.append(mod if i else ["visible", "nir"][mod])
    centers = rng.normal(size=(5, 16))
    feats = np.stack([centers[p] + 0.3 * rng.normal(size=16) for p in pids]).astype(np.float32)
    arrays = {"paths": np.array(paths), "pids": np.array(pids), "camids": np.array(cams),
              "modalities": np.array([str(m) if isinstance(m, str) else str(m) for m in mods])}
    if with_kinds:
        arrays["features_bn"] = feats
        arrays["features_pool"] = feats * 3
    else:
        arrays["features"] = feats
    if drop:
        arrays.pop(drop)
    np.savez(path, **arrays)
    return path


def test_evaluate_npz_builds_trials_from_the_file(tmp_path):
    f = _llcm_npz(tmp_path / "feats.npz")
    res = evaluate_npz(f, "llcm", {"direction": "ir_to_visible", "trials": 3}, out_dir=tmp_path / "out")
    entry = res["llcm/ir2vis"]
    assert set(entry.features) == {"bn", "pool"}
    assert len(entry.features["bn"].trials) == 3
    assert entry.features["bn"].trials[0].num_query == 36 and entry.features["bn"].trials[0].num_gallery == 12
    assert entry.features["bn"].mean() == entry.features["pool"].mean()  # same features up to scale
    assert res.meta["features_file"] == str(f)
    assert (tmp_path / "out" / "results.json").is_file()
    plain = evaluate_npz(_llcm_npz(tmp_path / "plain.npz", with_kinds=False), "llcm", {"trials": 1})
    assert set(plain["llcm/ir2vis"].features) == {"features"}


def test_evaluate_npz_missing_array_names_file_and_key(tmp_path):
    f = _llcm_npz(tmp_path / "bad.npz", drop="camids")
    with pytest.raises(EvaluationError, match=r"bad\.npz: missing array 'camids'"):
        evaluate_npz(f, "llcm")
    with pytest.raises(EvaluationError, match="does not exist"):
        evaluate_npz(tmp_path / "nope.npz", "llcm")


def test_rerank_variant_is_chosen_and_recorded():
    rng = np.random.default_rng(3)
    query = [_ir(i, i % 6) for i in range(24)]
    gallery = [_vis(i, i % 6) for i in range(30)]
    trial = EvalTrial("r/trial0", query, gallery, "none", "image", {"protocol": "r"})
    feats = {s: rng.normal(size=8) + (s.pid * 0.7) for s in query + gallery}

    def extract(samples):
        return {"bn": np.stack([feats[s] for s in samples]).astype(np.float32)}

    runs = {v: Evaluator([trial], features=("bn",), rerank=True, rerank_params=(5, 3, 0.3), rerank_variant=v)
            .run(extract) for v in ("reference", "vireid_v0")}
    for variant, res in runs.items():
        assert res.meta["rerank_params"] == {"k1": 5, "k2": 3, "lambda": 0.3, "variant": variant}
    ref, old = (runs[v]["r"].features["bn+rerank"].trials[0].values for v in ("reference", "vireid_v0"))
    assert ref != old  # k1 = 5: the two variants round k1/2 differently (2 vs 3)
    with pytest.raises(ConfigError, match="rerank_variant must be one of reference, vireid_v0, got 'zhong'"):
        Evaluator([trial], rerank=True, rerank_variant="zhong")
