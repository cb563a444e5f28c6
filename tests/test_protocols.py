"""Protocols: SYSU (agw/official, all/indoor, single/multi), RegDB, LLCM trial construction."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from vireid.core import ConfigError, DatasetError, Modality, Sample
from vireid.data.datasets.base import ReIDDataset
from vireid.metrics import evaluate_ranking
from vireid.protocols import (
    get_protocol,
    llcm_trials,
    load_rand_perm,
    protocol_from_samples,
    regdb_trials,
    sysu_trials,
)
from vireid.runs import RunDir

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sysu-mm01"
RAND_PERM = SHARED / "rand_perm_cam.mat"
needs_rand_perm = pytest.mark.skipif(not RAND_PERM.is_file(), reason=f"official split file absent: {RAND_PERM}")

IR_CAMS = (3, 6)


def _sample(root: str, cam: int, pid: int, i: int) -> Sample:
    mod = Modality.INFRARED if cam in IR_CAMS else Modality.VISIBLE
    return Sample(f"{root}/cam{cam}/{pid:04d}/{i:04d}.jpg", pid, cam, mod)


# --------------------------------------------------------------- a SYSU test set built in memory
# The per-(identity, camera) structure of docs/reference/protocols.md#sec-2-3: 96 ids; cam1 and cam2 for the same 56;
# cam3 93, cam4 94, cam5 95, cam6 96. Two of the ids without cam3 are indoor ids (they have cam1/2),
# so the indoor valid-query count depends on the location rule; every id has some visible image.
PIDS = [100 + 3 * i for i in range(96)]
PRESENT = {
    1: PIDS[:56], 2: PIDS[:56],
    3: [p for j, p in enumerate(PIDS) if j not in (10, 20, 90)],
    4: PIDS[2:], 5: [p for j, p in enumerate(PIDS) if j != 1], 6: PIDS,
}
PER_PAIR = 20


@pytest.fixture(scope="module")
def fake_sysu() -> list[Sample]:
    return [_sample("/fake", cam, pid, i) for cam, pids in PRESENT.items() for pid in pids
            for i in range(1, PER_PAIR + 1)]


def _rule_valid_count(query: list[Sample], mode: str) -> int:
    """Valid queries from the structure alone: a visible gallery camera holding the identity survives the
    location rule (cam3 queries lose cam2)."""
    cams = (1, 2, 4, 5) if mode == "all" else (1, 2)
    n = 0
    for q in query:
        allowed = [c for c in cams if not (q.camid == 3 and c == 2)]
        n += any(q.pid in PRESENT[c] for c in allowed)
    return n


def _valid_queries_per_pair(trial) -> int:
    """Valid queries by evaluate_ranking. Multi-shot galleries cover the same (identity, camera) pairs as
    single-shot ones, with `shots` images each, so validity is checked on one image per pair (fast)."""
    by_pair: dict = {}
    for s in trial.gallery:
        by_pair.setdefault((s.pid, s.camid), []).append(s)
    sizes = {len(v) for v in by_pair.values()}
    assert sizes == {1} or sizes == {10}
    single = type(trial)(trial.name, trial.query, [v[0] for v in by_pair.values()], trial.rule, trial.cmc_kind)
    return _valid_queries(single)


def _valid_queries(trial) -> int:
    rng = np.random.default_rng(0)
    dist = rng.random((len(trial.query), len(trial.gallery)))
    m = evaluate_ranking(dist, [s.pid for s in trial.query], [s.pid for s in trial.gallery],
                         [s.camid for s in trial.query], [s.camid for s in trial.gallery],
                         rule=trial.rule, cmc=trial.cmc_kind)
    return m.num_valid_queries


@pytest.mark.parametrize("mode,shots,size", [("all", 1, 301), ("indoor", 1, 112), ("all", 10, 3010),
                                             ("indoor", 10, 1120)])
def test_fake_sysu_gallery_sizes_and_valid_queries(fake_sysu, mode, shots, size):
    trials = sysu_trials(fake_sysu, mode=mode, shots=shots, gallery_sampler="agw", trials=10)
    assert len(trials) == 10
    query = trials[0].query
    assert len(query) == (93 + 96) * PER_PAIR
    assert all(s.modality is Modality.INFRARED for s in query)
    assert [(s.pid, s.camid, s.path) for s in query] == sorted((s.pid, s.camid, s.path) for s in query)
    for t in trials:
        assert len(t.gallery) == size
        assert len(set(t.gallery)) == size
        assert all(s.modality is Modality.VISIBLE for s in t.gallery)
        assert t.rule == "sysu_location" and t.cmc_kind == "identity"
        assert t.query is query or list(t.query) == list(query)
    expected = _rule_valid_count(list(query), mode)
    assert expected == (3780 if mode == "all" else 54 * 20 + 56 * 20)
    assert _valid_queries_per_pair(trials[0]) == expected
    assert trials[0].gallery != trials[1].gallery  # seeds differ per trial


def test_agw_draws_are_reproducible_and_use_private_rngs(fake_sysu):
    state = random.getstate()
    a = sysu_trials(fake_sysu, trials=3)
    random.seed(12345)  # the global RNG must play no part
    b = sysu_trials(fake_sysu, trials=3)
    assert [t.gallery for t in a] == [t.gallery for t in b]
    assert random.getstate() == random.Random(12345).getstate()
    random.setstate(state)


def test_agw_gallery_matches_the_reference_loop_on_disk(tmp_path):
    """The AGW loop literally: global random.seed(trial), sorted ids, cams 1,2,4,5, folder check,
    random.choice(sorted(os.listdir)); our private-RNG sampler must pick the same files."""
    layout = {1: {6: 5, 10: 3}, 2: {6: 4, 17: 7}, 4: {6: 9, 10: 2, 17: 1}, 5: {10: 6, 17: 8}, 3: {6: 3}, 6: {10: 2}}
    samples = []
    for cam, per in layout.items():
        for pid, n in per.items():
            folder = tmp_path / f"cam{cam}" / f"{pid:04d}"
            folder.mkdir(parents=True)
            for i in range(1, n + 1):
                (folder / f"{i:04d}.jpg").write_bytes(b"")
                samples.append(_sample(str(tmp_path), cam, pid, i))
    state = random.getstate()
    try:
        for mode, cams in (("all", [1, 2, 4, 5]), ("indoor", [1, 2])):
            for trial in range(5):
                random.seed(trial)
                expected = []
                for pid in sorted([6, 10, 17]):
                    for cam in cams:
                        folder = os.path.join(str(tmp_path), f"cam{cam}", f"{pid:04d}")
                        if os.path.isdir(folder):
                            files = sorted(os.listdir(folder))
                            expected.append(os.path.join(folder, random.choice(files)))
                got = sysu_trials(samples, mode=mode, trials=5)[trial].gallery
                assert [s.path for s in got] == expected
    finally:
        random.setstate(state)


# --------------------------------------------------------------- official split (rand_perm_cam.mat)


@pytest.fixture(scope="module")
def official_sysu():
    """A test set with exactly the official per-(camera, identity) image counts."""
    import scipy.io

    rand_perm = load_rand_perm(RAND_PERM)
    test_ids = [int(x) for x in scipy.io.loadmat(str(SHARED / "test_id.mat"))["id"].ravel()]
    samples = []
    for pid in test_ids:
        for cam in range(1, 7):
            entries = rand_perm[cam - 1]
            n = entries[pid - 1].shape[1] if pid - 1 < len(entries) and entries[pid - 1].size else 0
            samples += [_sample("/sysu", cam, pid, i) for i in range(1, n + 1)]
    return samples, rand_perm


@needs_rand_perm
def test_tv12_official_single_shot_images(official_sysu):
    samples, rand_perm = official_sysu
    trials = sysu_trials(samples, gallery_sampler="official", rand_perm=rand_perm, trials=3)

    def first(trial, pid, cam):
        hit = [s for s in trials[trial].gallery if s.pid == pid and s.camid == cam]
        assert len(hit) == 1
        return int(Path(hit[0].path).stem)

    g0 = {(s.pid, s.camid): s.path for s in trials[0].gallery}
    assert g0[(6, 1)] == "/sysu/cam1/0006/0005.jpg"
    assert [first(0, 6, c) for c in (1, 2, 4, 5)] == [5, 7, 10, 15]
    assert [first(1, 6, c) for c in (1, 2, 4, 5)] == [17, 10, 20, 1]
    assert [first(2, 6, c) for c in (1, 2, 4, 5)] == [38, 18, 4, 8]
    assert [first(t, 10, 1) for t in range(3)] == [18, 24, 25]
    assert [first(t, 10, 2) for t in range(3)] == [11, 4, 20]
    assert [first(t, 10, 4) for t in range(3)] == [12, 7, 15]
    assert [first(t, 10, 5) for t in range(3)] == [9, 2, 8]
    assert trials[0].info["rand_perm_row"] == 1


@needs_rand_perm
def test_tv12_official_multi_shot_images(official_sysu):
    samples, rand_perm = official_sysu
    t0 = sysu_trials(samples, shots=10, gallery_sampler="official", rand_perm=rand_perm, trials=1)[0]
    got = [int(Path(s.path).stem) for s in t0.gallery if s.pid == 6 and s.camid == 1]
    assert got == [5, 1, 4, 27, 13, 12, 36, 22, 40, 20]


@needs_rand_perm
@pytest.mark.parametrize("mode,shots,size,valid", [("all", 1, 301, 3803), ("indoor", 1, 112, 2208),
                                                   ("all", 10, 3010, 3803), ("indoor", 10, 1120, 2208)])
def test_tv11_structure_official_counts(official_sysu, mode, shots, size, valid):
    samples, _ = official_sysu
    proto = protocol_from_samples("sysu", samples, mode=mode, shots=shots, gallery_sampler="official",
                                  rand_perm_path=str(RAND_PERM), trials=2)
    trials = list(proto.trials())
    q = trials[0].query
    assert len(q) == 3803
    assert sum(s.camid == 3 for s in q) == 1883 and sum(s.camid == 6 for s in q) == 1920
    assert all(len(t.gallery) == size for t in trials)
    assert _valid_queries_per_pair(trials[0]) == valid
    agw = sysu_trials(samples, mode=mode, shots=shots, gallery_sampler="agw", trials=1)[0]
    assert len(agw.gallery) == size


def test_official_sampler_without_rand_perm_says_where_it_looked(tmp_path, fake_sysu):
    with pytest.raises(DatasetError) as err:
        protocol_from_samples("sysu", fake_sysu, root=tmp_path, gallery_sampler="official")
    msg = str(err.value)
    assert str(tmp_path / "exp" / "rand_perm_cam.mat") in msg and "data_split" in msg and "rand_perm_path" in msg
    with pytest.raises(DatasetError, match="nowhere-else.mat"):
        protocol_from_samples("sysu", fake_sysu, gallery_sampler="official",
                              rand_perm_path=tmp_path / "nowhere-else.mat")
    # get_protocol fails the same way before it scans the dataset
    with pytest.raises(DatasetError, match=r"exp/rand_perm_cam\.mat"):
        get_protocol("sysu", tmp_path, gallery_sampler="official")


@needs_rand_perm
def test_official_sampler_rejects_a_dataset_that_does_not_match(official_sysu):
    samples, rand_perm = official_sysu
    broken = [s for s in samples if s.path != "/sysu/cam1/0006/0005.jpg"]
    with pytest.raises(DatasetError, match=r"cam1/0006/0005\.jpg"):
        sysu_trials(broken, gallery_sampler="official", rand_perm=rand_perm, trials=1)


def test_sysu_option_errors(fake_sysu):
    with pytest.raises(ConfigError, match="mode='outdoor'"):
        protocol_from_samples("sysu", fake_sysu, mode="outdoor")
    with pytest.raises(ConfigError, match="unknown option"):
        protocol_from_samples("sysu", fake_sysu, shot=1)
    with pytest.raises(ConfigError, match="shots"):
        protocol_from_samples("sysu", fake_sysu, shots=5)
    with pytest.raises(ConfigError, match="unknown protocol"):
        protocol_from_samples("market", fake_sysu)


def test_protocol_describe_and_trial_lists(tmp_path, fake_sysu):
    proto = protocol_from_samples("sysu", fake_sysu, mode="indoor", trials=2)
    d = proto.describe()
    assert d["dataset"] == "sysu" and d["protocol"] == "sysu/indoor/single/agw"
    assert d["options"] == {"mode": "indoor", "shots": 1, "gallery_sampler": "agw", "trials": 2}
    assert d["direction"] == "infrared_to_visible" and d["gallery_sampler"] == "agw"
    trials = list(proto.trials())
    assert [t.name for t in trials] == ["sysu/indoor/single/agw/trial0", "sysu/indoor/single/agw/trial1"]
    written = RunDir(tmp_path).write_trial_lists(trials)
    f = tmp_path / "galleries" / "sysu" / "indoor" / "single" / "agw" / "trial1.txt"
    assert f in written
    assert f.read_text().splitlines() == [s.path for s in trials[1].gallery]


# --------------------------------------------------------------- LLCM


def _llcm_samples() -> list[Sample]:
    rng = np.random.default_rng(5)
    out = []
    for pid in (3, 8, 12, 40):
        for cam in range(1, 10):
            for mod, key in ((Modality.VISIBLE, "vis"), (Modality.INFRARED, "nir")):
                if rng.random() < 0.3:
                    continue  # not every identity appears in every camera
                for i in range(int(rng.integers(1, 5))):
                    out.append(Sample(f"/llcm/test_{key}/cam{cam}/{pid:04d}/{pid:04d}_c{cam:02d}_f{i}_{key}.jpg",
                                      pid, cam, mod))
    return out


def test_llcm_ir_to_visible_gallery_one_per_identity_camera():
    samples = _llcm_samples()
    trials = llcm_trials(samples, "ir_to_visible", trials=3)
    nir = [s for s in samples if s.modality is Modality.INFRARED and s.camid != 3]
    assert len(trials[0].query) == len(nir)
    pairs = {(s.pid, s.camid) for s in samples if s.modality is Modality.VISIBLE}
    for t, trial in enumerate(trials):
        assert {(s.pid, s.camid) for s in trial.gallery} == pairs and len(trial.gallery) == len(pairs)
        assert trial.rule == "same_pid_same_cam" and trial.cmc_kind == "identity"
        # independent re-implementation of the draw
        rng = random.Random(t)
        expected = []
        for pid in sorted({s.pid for s in samples}):
            for cam in range(1, 10):
                files = sorted((s for s in samples if s.modality is Modality.VISIBLE and s.pid == pid
                                and s.camid == cam), key=lambda s: Path(s.path).name)
                if files:
                    expected.append(rng.choice(files))
        assert list(trial.gallery) == expected


def test_llcm_visible_to_ir_skips_nir_cam3_and_transposed_is_labelled():
    samples = _llcm_samples() + [Sample("/llcm/test_nir/cam3/0003/x.jpg", 3, 3, Modality.INFRARED)]
    normal = llcm_trials(samples, "visible_to_ir", trials=2)
    assert all(s.camid != 3 for t in normal for s in t.gallery)
    assert all(s.modality is Modality.VISIBLE for s in normal[0].query)
    tr = llcm_trials(samples, "visible_to_ir_transposed", trials=2)
    assert tr[0].name == "llcm/vis2ir_transposed_deen/trial0"
    assert tr[0].info["label"] == "transposed (DEEN script)" and tr[0].info["sampled_side"] == "query"
    assert all(s.modality is Modality.INFRARED for s in tr[0].query)
    assert len(tr[0].gallery) == sum(s.modality is Modality.VISIBLE for s in samples)
    # the transposed queries are the NIR set the normal IR->VIS protocol would sample as a gallery of trial t
    assert list(tr[1].query) == list(llcm_trials(samples, "visible_to_ir", trials=2)[1].gallery)
    proto = protocol_from_samples("llcm", samples, direction="visible_to_ir_transposed")
    assert "transposed (DEEN script)" in proto.describe()["notes"]


# --------------------------------------------------------------- RegDB


def _regdb_samples() -> list[Sample]:
    out = []
    for pid in (1, 5, 9):
        for i in range(10):
            out.append(Sample(f"/regdb/Visible/{pid}/v_{i}.bmp", pid, 1, Modality.VISIBLE))
            out.append(Sample(f"/regdb/Thermal/{pid}/t_{i}.bmp", pid, 2, Modality.INFRARED))
    return out


def test_regdb_directions():
    s = _regdb_samples()
    (v2t,) = regdb_trials(s, "visible_to_thermal", trial=3)
    (t2v,) = regdb_trials(s, "thermal_to_visible", trial=3)
    assert v2t.name == "regdb/v2t/trial3" and t2v.name == "regdb/t2v/trial3"
    assert all(x.modality is Modality.VISIBLE for x in v2t.query) and len(v2t.query) == 30
    assert all(x.modality is Modality.INFRARED for x in v2t.gallery) and len(v2t.gallery) == 30
    assert list(t2v.query) == list(v2t.gallery) and list(t2v.gallery) == list(v2t.query)
    assert v2t.rule == "none" and v2t.cmc_kind == "image"
    with pytest.raises(ConfigError, match="trial"):
        regdb_trials(s, trial=11)


def test_get_protocol_loads_the_dataset_and_passes_the_regdb_split(monkeypatch, tmp_path):
    calls = []

    def fake_load(name, root, **opts):
        calls.append((name, Path(root), opts))
        return ReIDDataset(name=name, root=Path(root), train=[], test=_regdb_samples())

    import vireid.data.datasets as datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    proto = get_protocol("regdb", tmp_path, trial=4, direction="thermal_to_visible")
    assert calls == [("regdb", tmp_path, {"trial": 4})]
    assert proto.name == "regdb/t2v" and proto.options == {"trial": 4, "direction": "thermal_to_visible"}
    (trial,) = proto.trials()
    assert trial.name == "regdb/t2v/trial4" and len(trial.query) == 30
