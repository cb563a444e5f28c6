"""Request batching in the service: the batcher's rules (fake extractor) and concurrent /search == sequential."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vireid.core import Modality
from vireid.serve.batching import EmbedBatcher

V, IR = Modality.VISIBLE, Modality.INFRARED


class FakeExtractor:
    """Features = [value, modality code]; records each call's batch; the first call can be held at a gate."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[list[float]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.gate.set()

    def __call__(self, images, modalities):
        self.entered.set()
        self.gate.wait(timeout=30)
        if any(im == "bad" for im in images):
            raise ValueError("the upload is not an image")
        self.calls.append(list(images))
        return np.array([[float(im), m.code] for im, m in zip(images, modalities, strict=True)], dtype=np.float32)


def test_a_lone_request_goes_straight_through():
    fx = FakeExtractor()
    b = EmbedBatcher(fx, batch_size=8, wait_ms=10_000)  # a huge wait: a lone request must not wait for it
    try:
        got = b.submit(3.0, IR).result(timeout=5)  # would time out if the lone request waited 10 s
        np.testing.assert_array_equal(got, [[3.0, 1.0]])
        assert fx.calls == [[3.0]] and b.batches == [1]
    finally:
        b.close()


def test_requests_arriving_during_a_forward_pass_are_embedded_together():
    fx = FakeExtractor(hold_first=True)
    b = EmbedBatcher(fx, batch_size=4, wait_ms=0)
    try:
        first = b.submit(0.0, V)
        assert fx.entered.wait(5)  # the worker is inside the first forward pass
        later = [b.submit(float(i), V if i % 2 else IR) for i in range(1, 7)]
        fx.gate.set()
        results = [f.result(timeout=5) for f in [first, *later]]
        # rows go back to their own requests, in any batch
        assert [r.tolist() for r in results] == [[[float(i), float(i % 2 == 0 and i > 0)]] for i in range(7)]
        assert fx.calls == [[0.0], [1.0, 2.0, 3.0, 4.0], [5.0, 6.0]]  # at most batch_size per forward pass
    finally:
        b.close()


def test_a_bad_image_fails_alone():
    fx = FakeExtractor(hold_first=True)
    b = EmbedBatcher(fx, batch_size=8, wait_ms=0)
    try:
        first = b.submit(0.0, V)
        assert fx.entered.wait(5)
        jobs = [b.submit(1.0, V), b.submit("bad", V), b.submit(2.0, IR)]
        fx.gate.set()
        assert first.result(timeout=5).tolist() == [[0.0, 0.0]]
        assert jobs[0].result(timeout=5).tolist() == [[1.0, 0.0]]
        assert jobs[2].result(timeout=5).tolist() == [[2.0, 1.0]]
        with pytest.raises(ValueError, match="not an image"):
            jobs[1].result(timeout=5)
    finally:
        b.close()


def test_a_forming_batch_waits_only_for_requests_on_their_way():
    fx = FakeExtractor()
    b = EmbedBatcher(fx, batch_size=8, wait_ms=10_000)
    try:
        with b.arriving():  # another request is being decoded: the batch waits for it (not 10 s: it comes)
            fut = b.submit(1.0, V)
            other = b.submit(2.0, V)
        assert fut.result(timeout=5).tolist() == [[1.0, 0.0]] and other.result(timeout=5).tolist() == [[2.0, 0.0]]
        assert fx.calls == [[1.0, 2.0]]
    finally:
        b.close()


def test_batcher_arguments_are_checked():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        EmbedBatcher(FakeExtractor(), batch_size=0)
    with pytest.raises(ValueError, match="wait_ms must be >= 0, got -1"):
        EmbedBatcher(FakeExtractor(), wait_ms=-1)


# ---------------------------------------------------------------- through the FastAPI app
pytest.importorskip("fastapi")
pytest.importorskip("httpx")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_concurrent_searches_equal_sequential_ones(backend, tmp_path_factory):
    from fastapi.testclient import TestClient

    from tests.test_serve_helpers import make_gallery_folder, trained_run
    from vireid.inference import FeatureExtractor
    from vireid.serve.app import create_app
    from vireid.serve.gallery import build_index

    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    run, _ = trained_run(tmp_path_factory)
    base = tmp_path_factory.mktemp(f"batching_{backend}")
    gallery = make_gallery_folder(base / "images", pids=(1, 2, 3, 4), per=2)
    build_index(FeatureExtractor(run), gallery, base / "index")
    # the index was built with the torch backend; the onnx one serves it (same fingerprint)
    app = create_app(base / "index", run=run, backend=backend, threads=1, batch_size=8, batch_wait_ms=5)
    queries = [(p.read_bytes(), "visible" if "visible" in p.parts else "infrared")
               for p in sorted(gallery.rglob("*.jpg"))]
    with TestClient(app) as client:
        def search(q):
            r = client.post("/search", files={"image": ("q.jpg", q[0], "image/jpeg")},
                            data={"modality": q[1], "topk": "6"})
            assert r.status_code == 200, r.text
            return r.json()["results"]

        sequential = [search(q) for q in queries]
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(search, queries * 2))
        assert client.get("/health").json()["backend"] == backend
    for seq, con in zip(sequential * 2, concurrent, strict=True):
        assert [x["id"] for x in con] == [x["id"] for x in seq]
        np.testing.assert_allclose([x["score"] for x in con], [x["score"] for x in seq], atol=1e-5)
    assert sum(app.state.batcher.batches) >= len(queries)  # every query went through the batcher
