"""GalleryIndex: exact search numbers, modality filters, atomic saves, integrity checks, FAISS kinds."""

from __future__ import annotations

import json
import sqlite3
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from vireid.core import GalleryIndexError, Modality
from vireid.serve.index import GalleryIndex, IndexItem

V, IR = Modality.VISIBLE, Modality.INFRARED


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _items(n):
    return [IndexItem(path=f"/g/{i}.jpg", modality=V if i % 2 == 0 else IR, camera=1 + i % 2, pid=i // 2,
                      tags={"i": i}) for i in range(n)]


def _index(n=40, d=8, kind="flat", seed=0):
    rng = np.random.default_rng(seed)
    idx = GalleryIndex(d, fingerprint="f" * 64, feature="bn", kind=kind, roots=["/g"])
    idx.add(_unit(rng, n, d), _items(n))
    return idx


def test_exact_search_ranks_by_inner_product_with_id_ties():
    idx = GalleryIndex(2, fingerprint="x")
    vecs = np.array([[1, 0], [0.6, 0.8], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32)
    assert idx.add(vecs, _items(5)) == [0, 1, 2, 3, 4]
    (hits,) = idx.search(np.array([0.8, 0.6], dtype=np.float32), topk=3)
    # scores: 0.8, 0.96, 0.96, 0.6, -0.8 -> ids 1 and 2 tie (lower id first), then 0
    assert [h.id for h in hits] == [1, 2, 0]
    np.testing.assert_allclose([h.score for h in hits], [0.96, 0.96, 0.8], atol=1e-6)
    assert hits[0].to_dict() == {"id": 1, "path": "/g/1.jpg", "score": 0.96, "modality": "infrared",
                                 "camera": 2, "pid": 0}
    # the k-th score is tied (ids 1 and 2): topk=1 keeps the lower id, not an arbitrary one
    assert [h.id for h in idx.search(np.array([[0.8, 0.6]]), topk=1)[0]] == [1]


def test_search_equals_brute_force_and_filters_modalities():
    idx = _index()
    q = _unit(np.random.default_rng(1), 3, 8)
    full = q @ idx.vectors.T
    for qi, hits in enumerate(idx.search(q, topk=5)):
        assert [h.id for h in hits] == list(np.argsort(-full[qi], kind="stable")[:5])
    vis = idx.search(q, topk=50, modality="visible")
    assert all(len(h) == 20 and all(x.item.modality is V for x in h) for h in vis)
    cross = idx.search(q, topk=4, cross_modal_only=True, query_modality=[V, IR, "ir"])
    assert [x.item.modality for x in cross[0]] == [IR] * 4
    assert [x.item.modality for x in cross[1]] == [V] * 4
    assert [x.item.modality for x in cross[2]] == [V] * 4
    with pytest.raises(ValueError, match="cross_modal_only needs query_modality"):
        idx.search(q, cross_modal_only=True)
    with pytest.raises(ValueError, match="searches infrared images, but modality=visible"):
        idx.search(q[:1], modality=V, cross_modal_only=True, query_modality=V)
    with pytest.raises(ValueError, match=r"query vectors must be \(N, 8\)"):
        idx.search(np.zeros((1, 3)))


def test_save_open_round_trip_is_atomic(tmp_path):
    idx = _index()
    out = idx.save(tmp_path / "gallery")
    assert sorted(p.name for p in out.iterdir()) == ["items.sqlite", "meta.json", "vectors.npy"]
    assert not [p for p in tmp_path.iterdir() if p.name != "gallery"], "temporary directories left behind"
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["count"], meta["dim"], meta["kind"], meta["feature"]) == (40, 8, "flat", "bn")
    back = GalleryIndex.open(out)
    np.testing.assert_array_equal(back.vectors, idx.vectors)
    assert back.items == idx.items and back.item(3).tags == {"i": 3}
    q = idx.vectors[:2]
    assert [[h.id for h in r] for r in back.search(q, 3)] == [[h.id for h in r] for r in idx.search(q, 3)]
    # add then save in place
    back.add(idx.vectors[:1], [IndexItem("/g/new.jpg", V)])
    back.save()
    assert len(GalleryIndex.open(out)) == 41


def test_failed_save_leaves_the_old_index(tmp_path, monkeypatch):
    idx = _index()
    out = idx.save(tmp_path / "gallery")
    idx.add(idx.vectors[:2], _items(2))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sqlite3, "connect", boom)
    with pytest.raises(OSError, match="disk full"):
        idx.save(out)
    monkeypatch.undo()
    assert len(GalleryIndex.open(out)) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]


def test_open_refuses_count_mismatch_with_both_numbers(tmp_path):
    out = _index().save(tmp_path / "gallery")
    con = sqlite3.connect(out / "items.sqlite")
    con.execute("DELETE FROM items WHERE id = 39")
    con.commit()
    con.close()
    with pytest.raises(GalleryIndexError, match=r"items.sqlite rows = 39, vectors.npy rows = 40, meta.json count = 40"):
        GalleryIndex.open(out)


def test_open_refuses_missing_or_damaged_parts(tmp_path):
    out = _index().save(tmp_path / "g")
    (out / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(GalleryIndexError, match=r"g/vectors.npy cannot be read"):
        GalleryIndex.open(out)
    out = _index().save(tmp_path / "h")
    (out / "meta.json").unlink()
    with pytest.raises(GalleryIndexError, match=r"h is not a gallery index: meta.json is missing"):
        GalleryIndex.open(out)
    out = _index().save(tmp_path / "k")
    (out / "items.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(GalleryIndexError, match=r"k/items.sqlite cannot be read"):
        GalleryIndex.open(out)
    with pytest.raises(GalleryIndexError, match="does not exist"):
        GalleryIndex.open(tmp_path / "nowhere")


def test_open_refuses_another_model(tmp_path):
    out = _index().save(tmp_path / "g")
    same = SimpleNamespace(fingerprint="f" * 64, method_name="baseline", feature="bn", checkpoint_path="a.pt")
    assert len(GalleryIndex.open(out, extractor=same)) == 40
    other = SimpleNamespace(fingerprint="0" * 64, method_name="mpanet", feature="bn", checkpoint_path="/r/b.pt")
    with pytest.raises(GalleryIndexError, match=r"built by another model: index fingerprint ffffffffffff .* "
                                          r"extractor 000000000000 \(method 'mpanet'.*/r/b.pt"):
        GalleryIndex.open(out, extractor=other)


def test_image_paths_must_stay_inside_allowed_roots(tmp_path):
    idx = _index()
    idx.save(tmp_path / "g")
    assert str(idx.image_path(idx.item(0))) == "/g/0.jpg"
    with pytest.raises(GalleryIndexError, match="outside the index directory"):
        idx.image_path(IndexItem("/etc/passwd", V, id=7))
    with pytest.raises(GalleryIndexError, match="outside the index directory"):
        idx.image_path(IndexItem("images/../../secret.jpg", V, id=8))
    assert idx.image_path(IndexItem("images/a.jpg", V)) == (tmp_path / "g" / "images" / "a.jpg").resolve()


def test_approximate_kinds_need_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(GalleryIndexError, match=r"pip install vireid\[faiss\]"):
        GalleryIndex(8, fingerprint="x", kind="ivf")
    with pytest.raises(GalleryIndexError, match="unknown index kind 'lsh'"):
        GalleryIndex(8, fingerprint="x", kind="lsh")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_faiss_kinds_agree_with_exact_search(kind, tmp_path):
    pytest.importorskip("faiss")
    exact, approx = _index(n=400, d=16), _index(n=400, d=16, kind=kind)
    approx.params["nprobe"] = 1000  # probe every list: the IVF result must then be exact
    q = _unit(np.random.default_rng(5), 10, 16)
    want = [[h.id for h in r] for r in exact.search(q, 5, modality=IR)]
    got = [[h.id for h in r] for r in approx.search(q, 5, modality=IR)]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(want, got, strict=True)])
    assert recall >= 0.9
    out = approx.save(tmp_path / kind)
    assert (out / "index.faiss").is_file()
    back = GalleryIndex.open(out)
    assert back.kind == kind and [[h.id for h in r] for r in back.search(q, 5, modality=IR)] == got
    # FAISS and SQLite disagreeing in count is refused with the numbers
    import faiss

    small = faiss.read_index(str(out / "index.faiss"))
    small.reset()
    faiss.write_index(small, str(out / "index.faiss"))
    with pytest.raises(GalleryIndexError, match=r"items.sqlite rows = 400, .*index.faiss vectors = 0"):
        GalleryIndex.open(out)


def _reference_topk(q, vecs, codes, topk, want):
    """Literal per-query reference: sort allowed rows by (-score, id)."""
    out = []
    for row in q @ vecs.T:
        ids = [i for i in range(len(vecs)) if want is None or codes[i] == want.code]
        out.append(sorted(ids, key=lambda i: (-row[i], i))[:topk])
    return out


def _heavy_tie_index() -> tuple[np.random.Generator, np.ndarray, GalleryIndex]:
    """(rng, base, index) of 300 items that repeat 6 distinct vectors: every score is tied many times over, also
    at the k-th place. Entries are multiples of 1/4, so every inner product is exact in float32 whatever the
    summation order. The rng continues for the caller's queries."""
    rng = np.random.default_rng(3)
    base = rng.integers(-2, 3, size=(6, 8)).astype(np.float32) / 4
    idx = GalleryIndex(8, fingerprint="x")
    idx.add(base[rng.integers(0, 6, size=300)], _items(300))
    return rng, base, idx


@pytest.mark.parametrize("want", [None, V, IR])
def test_exact_search_with_heavy_ties_equals_reference(want):
    rng, base, idx = _heavy_tie_index()
    q = np.concatenate([rng.integers(-2, 3, size=(5, 8)).astype(np.float32) / 4, base[:2]])
    codes = idx._codes
    for topk in (1, 7, 60):
        got = [[h.id for h in r] for r in idx.search(q, topk, modality=want)]
        assert got == _reference_topk(q, idx.vectors, codes, topk, want)


def test_exact_search_mixed_filters_in_one_batch_and_one_modality_empty():
    idx = GalleryIndex(8, fingerprint="x")
    rng = np.random.default_rng(4)
    idx.add(_unit(rng, 10, 8), [IndexItem(f"/g/{i}.jpg", V) for i in range(10)])
    q = np.repeat(_unit(rng, 1, 8), 3, axis=0)
    res = idx.search(q, 4, modality=[None, "infrared", "visible"])
    assert [len(r) for r in res] == [4, 0, 4]  # no infrared item: an empty list, not an error
    assert ([h.id for h in res[0]] == [h.id for h in res[2]]
            == _reference_topk(q[:1], idx.vectors, idx._codes, 4, None)[0])


def test_index_parameters_are_checked():
    with pytest.raises(GalleryIndexError, match=r"unknown index parameter 'nprob' \(did you mean 'nprobe'\?\)"):
        GalleryIndex(8, fingerprint="x", params={"nprob": 4})
    with pytest.raises(GalleryIndexError, match="index parameter nprobe must be an integer >= 1, got 0"):
        GalleryIndex(8, fingerprint="x", params={"nprobe": 0})
    idx = GalleryIndex(8, fingerprint="x", params={"nlist": 0})
    assert idx.nlist_for(1_000_000) == 4000  # automatic: 4 * sqrt(N)
    assert idx.nlist_for(1000) == 25  # at most N // 39 lists: k-means needs 39 rows per list
    assert GalleryIndex(8, fingerprint="x", params={"nlist": 64}).nlist_for(1_000_000) == 64


def test_ivf_is_retrained_after_the_gallery_grows_fourfold(tmp_path):
    pytest.importorskip("faiss")
    idx = _index(n=400, d=16, kind="ivf")
    assert idx._faiss_index().nlist == 10  # 400 // 39
    idx.add(_unit(np.random.default_rng(9), 400, 16), _items(400))  # 800 rows: appended to the trained lists
    assert idx._faiss is not None and idx._faiss.ntotal == 800 and idx._faiss.nlist == 10
    idx.add(_unit(np.random.default_rng(10), 1000, 16), _items(1000))  # 1800 > 4 x 400: retrain
    assert idx._faiss is None
    assert idx._faiss_index().nlist == 46 and idx._faiss.ntotal == 1800
    back = GalleryIndex.open(idx.save(tmp_path / "g"))
    assert back._trained_count == 1800 and back._faiss.nlist == 46


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_batched_approximate_search_equals_one_query_at_a_time(kind):
    pytest.importorskip("faiss")
    idx = _index(n=2000, d=16, kind=kind)
    q = _unit(np.random.default_rng(6), 40, 16)
    mods = [None, "visible", "infrared", None] * 10
    batched = [[h.id for h in r] for r in idx.search(q, 8, modality=mods)]
    single = [[h.id for h in idx.search(qi, 8, modality=m)[0]] for qi, m in zip(q, mods, strict=True)]
    assert batched == single
    assert all(len(r) == 8 for r in batched)
    assert all(idx.item(i).modality is Modality.parse(m) for r, m in zip(batched, mods, strict=True) if m for i in r)


# ---------------------------------------------------------------- exact search through FAISS (when installed)
@pytest.fixture(params=["faiss", "numpy"])
def exact_path(request, monkeypatch):
    """Run a test on both exact-search paths: FAISS's flat k-NN and the NumPy matrix product."""
    if request.param == "faiss":
        pytest.importorskip("faiss")
        monkeypatch.delenv("VIREID_EXACT_SEARCH", raising=False)
    else:
        monkeypatch.setenv("VIREID_EXACT_SEARCH", "numpy")
    return request.param


def test_exact_path_is_faiss_when_installed(exact_path, monkeypatch):
    from vireid.serve import index as index_mod

    assert (index_mod._exact_faiss() is not None) == (exact_path == "faiss")
    monkeypatch.setitem(sys.modules, "faiss", None)  # not installed: the NumPy path, no error
    assert index_mod._exact_faiss() is None
    assert [h.id for h in _index().search(_unit(np.random.default_rng(2), 1, 8), 3)[0]]


@pytest.mark.parametrize("want", [None, V, IR])
def test_exact_paths_keep_the_tie_rule_on_heavy_ties(exact_path, want):
    rng, base, idx = _heavy_tie_index()
    # 25 queries: at least FAISS_MIN_QUERIES, so the faiss fixture sends them through FAISS (its BLAS code path);
    # the single queries below take the NumPy path and must rank alike
    q = np.concatenate([rng.integers(-2, 3, size=(23, 8)).astype(np.float32) / 4, base[:2]])
    for topk in (1, 7, 60, 300):
        got = [[h.id for h in r] for r in idx.search(q, topk, modality=want)]
        assert got == _reference_topk(q, idx.vectors, idx._codes, topk, want)
        single = [[h.id for h in idx.search(qi, topk, modality=want)[0]] for qi in q[:3]]
        assert single == got[:3]


def test_exact_paths_agree_on_random_galleries_and_mixed_filters(exact_path):
    idx = _index(n=500, d=16)
    q = _unit(np.random.default_rng(7), 30, 16)
    mods = [None, "visible", "infrared"] * 10
    got = idx.search(q, 9, modality=mods)
    assert [[h.id for h in r] for r in got] == _reference_topk_mixed(q, idx, 9, mods)
    full = q @ idx.vectors.T
    for qi, r in enumerate(got):
        np.testing.assert_allclose([h.score for h in r], full[qi, [h.id for h in r]], atol=1e-5)
    # the cached per-modality rows follow an add
    idx.add(np.repeat(q[1:2], 2, axis=0), [IndexItem("/g/new0.jpg", V), IndexItem("/g/new1.jpg", V)])
    assert [h.id for h in idx.search(q[1], 3, modality="visible")[0]][:2] == [500, 501]


def _reference_topk_mixed(q, idx, topk, mods):
    return [_reference_topk(q[i:i + 1], idx.vectors, idx._codes, topk, None if m is None else Modality.parse(m))[0]
            for i, m in enumerate(mods)]


def test_faiss_takes_exact_search_from_its_blas_threshold_on(monkeypatch):
    pytest.importorskip("faiss")
    from vireid.serve import index as index_mod

    monkeypatch.delenv("VIREID_EXACT_SEARCH", raising=False)
    calls: list[int] = []
    original = index_mod.GalleryIndex._exact_faiss

    def spy(self, faiss, q, topk, allowed):
        calls.append(len(q))
        return original(self, faiss, q, topk, allowed)

    monkeypatch.setattr(index_mod.GalleryIndex, "_exact_faiss", spy)
    idx = _index(n=200, d=16)
    q = _unit(np.random.default_rng(5), index_mod.FAISS_MIN_QUERIES, 16)
    one = idx.search(q[:1], 5)  # one query: NumPy measured faster than FAISS's per-query path
    assert calls == []
    many = idx.search(q, 5)
    assert calls == [index_mod.FAISS_MIN_QUERIES]
    assert [h.id for h in one[0]] == [h.id for h in many[0]]
