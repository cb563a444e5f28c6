"""CrossModalSampler: TV-14 invariants (docs/reference/protocols.md#tv-14), MPANet chunks, determinism,
DDP split, errors.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vireid.core import ConfigError, Modality, ModalityError
from vireid.data.sampler import CrossModalSampler, TrainItem

V, IR = Modality.VISIBLE.code, Modality.INFRARED.code


def _spread(total: int, n_ids: int, rng: np.random.Generator) -> np.ndarray:
    """Uneven per-identity counts (each >= 1) summing to `total`."""
    return rng.multinomial(total - n_ids, np.full(n_ids, 1.0 / n_ids)) + 1


def _sysu_like() -> tuple[np.ndarray, np.ndarray]:
    """Label/modality arrays shaped like SYSU train+val: 395 ids, 22,258 visible, 11,909 infrared."""
    rng = np.random.default_rng(123)
    vis = np.repeat(np.arange(395), _spread(22258, 395, rng))
    ir = np.repeat(np.arange(395), _spread(11909, 395, rng))
    # Interleave modalities in the sample list to make sure nothing relies on the list's order.
    labels = np.concatenate([ir, vis])
    mods = np.concatenate([np.full(len(ir), IR), np.full(len(vis), V)])
    perm = rng.permutation(len(labels))
    return labels[perm], mods[perm]


@pytest.fixture(scope="module")
def sysu():
    labels, mods = _sysu_like()
    assert (mods == V).sum() == 22258 and (mods == IR).sum() == 11909 and len(np.unique(labels)) == 395
    return labels, mods


def test_agw_sysu_tv14(sysu):
    labels, mods = sysu
    s = CrossModalSampler(labels, [Modality.from_code(int(m)) for m in mods], num_ids=8, num_pos=4)
    assert len(s) == 696
    batches = list(s)
    assert len(batches) == 696
    for batch in batches:
        idx = np.array([it.index for it in batch])
        assert len(idx) == 64
        vis, ir = idx[:32], idx[32:]
        assert (mods[vis] == V).all() and (mods[ir] == IR).all()
        assert np.array_equal(labels[vis], labels[ir])  # equal label sequences element-wise
        counts = Counter(labels[vis].tolist())
        assert len(counts) == 8 and set(counts.values()) == {4}
        # blocks of K per identity, same identity order in both halves
        assert all(len(set(labels[vis[b:b + 4]])) == 1 for b in range(0, 32, 4))


def test_agw_regdb_65_batches():
    labels = np.concatenate([np.repeat(np.arange(206), 10)] * 2)
    mods = np.concatenate([np.full(2060, V), np.full(2060, IR)])
    s = CrossModalSampler(labels, mods, 8, 4)
    assert len(s) == 65 and len(list(s)) == 65


def test_positions_and_epoch_in_items(sysu):
    labels, mods = sysu
    s = CrossModalSampler(labels, mods, 8, 4, seed=3)
    s.set_epoch(5)
    batches = list(s)
    flat = [it for b in batches for it in b]
    assert all(isinstance(it, TrainItem) and it.epoch == 5 for it in flat)
    assert [it.position for it in flat] == list(range(696 * 64))


def test_determinism_and_epochs(sysu):
    labels, mods = sysu

    def indices(seed, epoch):
        s = CrossModalSampler(labels, mods, 8, 4, seed=seed)
        s.set_epoch(epoch)
        return [it.index for b in s for it in b]

    a = indices(0, 1)
    assert a == indices(0, 1)
    assert a != indices(0, 2)
    assert a != indices(1, 1)


def _mpanet_data():
    rng = np.random.default_rng(7)
    n_ids = 40
    vis_counts = rng.integers(4, 30, size=n_ids)
    ir_counts = rng.integers(4, 30, size=n_ids)
    ir_counts[0], vis_counts[0] = 2, 3  # both below K: oversampled to one chunk (as the reference)
    ir_counts[1], vis_counts[1] = 2, 9  # one modality below K: no chunk, never drawn
    labels = np.concatenate([np.repeat(np.arange(n_ids), vis_counts), np.repeat(np.arange(n_ids), ir_counts)])
    mods = np.concatenate([np.full(vis_counts.sum(), V), np.full(ir_counts.sum(), IR)])
    return labels, mods, vis_counts, ir_counts


def test_mpanet_invariants_and_full_pass():
    labels, mods, vis_counts, ir_counts = _mpanet_data()
    p, k = 16, 4
    s = CrossModalSampler(labels, mods, p, k, kind="mpanet", seed=1)
    batches = list(s)
    assert len(batches) == len(s) > 0
    used = Counter()
    for batch in batches:
        idx = np.array([it.index for it in batch])
        assert len(idx) == p * 2 * k
        chunk_labels = []
        for c in range(0, len(idx), 2 * k):
            chunk = idx[c:c + 2 * k]
            assert len(set(labels[chunk])) == 1  # one identity, contiguous
            assert list(mods[chunk]) == [IR, V] * k  # interleaved IR, RGB, ... : K + K
            chunk_labels.append(int(labels[chunk[0]]))
        assert len(set(chunk_labels)) == p  # 16 distinct identities
        used.update(chunk_labels)
    assert 1 not in used
    # Full pass: afterwards fewer than P identities still had chunks left.
    n_chunks = {i: (k if (vis_counts[i] < k and ir_counts[i] < k) else min(vis_counts[i], ir_counts[i])) // k
                for i in range(len(vis_counts))}
    left = [i for i, n in n_chunks.items() if n - used[i] > 0]
    assert all(used[i] <= n_chunks[i] for i in n_chunks)
    assert len(left) < p
    assert sum(used.values()) == len(batches) * p
    # Without oversampling an image appears at most once per epoch.
    flat = [it.index for b in batches for it in b if labels[it.index] != 0]
    assert len(flat) == len(set(flat))


def test_mpanet_deterministic():
    labels, mods, *_ = _mpanet_data()
    a = CrossModalSampler(labels, mods, 16, 4, kind="mpanet", seed=1)
    b = CrossModalSampler(labels, mods, 16, 4, kind="mpanet", seed=1)
    first = [it.index for bt in a for it in bt]
    assert first == [it.index for bt in b for it in bt]
    a.set_epoch(1)
    assert first != [it.index for bt in a for it in bt]


@pytest.mark.parametrize("kind", ["agw", "mpanet"])
def test_ddp_split(kind):
    labels, mods, *_ = _mpanet_data()
    single = CrossModalSampler(labels, mods, 4, 4, kind=kind, seed=9)
    single.set_epoch(2)
    full = list(single)
    ranks = []
    for r in range(2):
        s = CrossModalSampler(labels, mods, 4, 4, kind=kind, seed=9, rank=r, world_size=2)
        s.set_epoch(2)
        ranks.append(list(s))
        assert len(ranks[-1]) == len(s) == len(full) // 2
    assert len(ranks[0]) == len(ranks[1])
    pos = [{b[0].position for b in rb} for rb in ranks]
    assert not pos[0] & pos[1]
    kept = 2 * (len(full) // 2)
    assert sorted(pos[0] | pos[1]) == [b[0].position for b in full[:kept]]
    # every rank batch equals the single-process batch at the same position
    by_pos = {b[0].position: [it.index for it in b] for b in full}
    for rb in ranks:
        for b in rb:
            assert [it.index for it in b] == by_pos[b[0].position]


def test_errors_name_the_numbers():
    labels = np.array([0, 0, 1, 1, 2])
    mods = np.array([V, IR, V, IR, V])
    with pytest.raises(ModalityError, match="label 2 has no infrared"):
        CrossModalSampler(labels, mods, 2, 1)
    with pytest.raises(ConfigError, match="num_ids=3 .* only 2"):
        CrossModalSampler(labels[:4], mods[:4], 3, 1)
    with pytest.raises(ConfigError, match="kind"):
        CrossModalSampler(labels[:4], mods[:4], 2, 1, kind="nope")
    with pytest.raises(ConfigError, match="rank"):
        CrossModalSampler(labels[:4], mods[:4], 2, 1, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="mpanet.*only 0 of 2"):
        CrossModalSampler(np.array([0, 0, 0, 1, 1, 1]), np.array([V, V, IR, V, IR, IR]), 2, 2, kind="mpanet")
