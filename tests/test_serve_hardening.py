"""The service against a hostile client: bounded bodies and images, the key checked before the body is read,
failed adds leave nothing behind, retries add no duplicate, clean error messages, nosniff on stored uploads."""

from __future__ import annotations

import asyncio
import errno
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from tests.test_serve_helpers import make_gallery_folder, trained_run  # noqa: E402
from vireid.core import VireidError  # noqa: E402
from vireid.serve.app import create_app, decode_upload, read_api_key  # noqa: E402
from vireid.serve.gallery import build_index  # noqa: E402
from vireid.serve.index import GalleryIndex  # noqa: E402

KEY = "k"


@pytest.fixture()
def served(tmp_path_factory, tmp_path):
    from vireid.inference import FeatureExtractor

    run, _ = trained_run(tmp_path_factory)
    fx = FeatureExtractor(run)
    build_index(fx, make_gallery_folder(tmp_path / "images"), tmp_path / "index")
    app = create_app(tmp_path / "index", extractor=fx, api_key=KEY, max_upload_bytes=50_000, max_pixels=1_000_000)
    return app, TestClient(app), tmp_path / "index"


def _png(h: int = 32, w: int = 16, value: int = 5) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels but holds almost no data (a decompression trap)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _add(client, data: bytes, **fields):
    return client.post("/items", files={"image": ("a.png", data, "image/png")},
                       data={"modality": "visible", **fields}, headers={"X-API-Key": KEY})


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(served):
    _, client, _ = served
    data = _declared_png(13_000, 13_000)  # 169 megapixels in a few hundred bytes
    assert len(data) < 1000
    r = client.post("/search", files={"image": ("q.png", data, "image/png")}, data={"modality": "infrared"})
    assert r.status_code == 413 and "13000x13000 (169.0 megapixels)" in r.json()["detail"]
    assert "--max-image-megapixels" in r.json()["detail"]


def _asgi_post(app, path: str, headers: dict[str, str]) -> tuple[int, bool]:
    """Call the ASGI app with a POST whose body must not be read; (status, whether the body was asked for)."""
    asked = []
    sent: list[dict] = []

    async def receive():
        asked.append(True)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "http_version": "1.1",
             "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": "",
             "asgi": {"version": "3.0"}}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), bool(asked)


def test_oversized_and_unauthenticated_bodies_are_refused_before_they_are_read(served):
    app, _, _ = served
    status, read = _asgi_post(app, "/items", {"content-type": "multipart/form-data; boundary=x",
                                              "content-length": str(300 * 2**20)})
    assert (status, read) == (401, False)  # no key: refused before a byte of the 300 MB body
    status, read = _asgi_post(app, "/items", {"content-type": "multipart/form-data; boundary=x", "x-api-key": KEY,
                                              "content-length": str(300 * 2**20)})
    assert (status, read) == (413, False)
    status, read = _asgi_post(app, "/search", {"content-type": "multipart/form-data; boundary=x",
                                               "content-length": str(300 * 2**20)})
    assert (status, read) == (413, False)


def test_a_streamed_body_is_cut_off_at_the_limit(served):
    _, client, _ = served

    def chunks():
        for _ in range(200):
            yield b"y" * 4096  # 800 KiB without a Content-Length

    r = client.post("/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "larger than the limit" in r.json()["detail"]


def test_a_failed_add_leaves_the_index_as_it_was_and_the_next_add_works(served, monkeypatch):
    import vireid.serve.index as index_module

    _, client, out = served
    r = _add(client, _png(), pid="99999999999999999999")
    assert r.status_code == 422 and "pid must be an integer between" in r.json()["detail"]

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index_module, "_append_npy", full)
    r = _add(client, _png(value=9))
    assert r.status_code == 507 and "the disk is full" in r.json()["detail"]
    monkeypatch.undo()
    assert client.get("/health").json()["items"] == 12 == len(GalleryIndex.open(out))
    r = _add(client, _png(value=9))
    assert r.status_code == 201 and r.json()["id"] == 12
    assert client.get("/health").json()["items"] == 13 == len(GalleryIndex.open(out))


def test_a_retried_add_returns_the_stored_item(served):
    _, client, out = served
    first = _add(client, _png(value=3))
    again = _add(client, _png(value=3))
    assert (first.status_code, again.status_code) == (201, 200) and first.json() == again.json()
    assert len(GalleryIndex.open(out)) == 13


def test_deep_or_huge_tags_are_refused_with_422(served):
    _, client, _ = served
    deep = "[" * 50_000 + "]" * 50_000
    r = _add(client, _png(), tags='{"a": ' + deep + "}")
    assert r.status_code == 422 and "tags" in r.json()["detail"]
    r = _add(client, _png(), tags='{"a": [[[[[[[[[[1]]]]]]]]]]}')
    assert r.status_code == 422 and "nested more than 8 levels" in r.json()["detail"]


def test_stored_uploads_are_served_with_nosniff(served):
    _, client, _ = served
    new = _add(client, _png(value=11)).json()
    r = client.get(f"/items/{new['id']}/image")
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"


def test_error_messages_do_not_leak_object_reprs():
    with pytest.raises(ValueError) as err:
        decode_upload(b"not an image at all")
    assert "object at 0x" not in str(err.value) and "cannot be identified" in str(err.value)
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(noisy, "PNG")
    with pytest.raises(ValueError, match="truncated or damaged") as err:
        decode_upload(noisy.getvalue()[: len(noisy.getvalue()) // 2])
    assert "object at 0x" not in str(err.value)


def test_a_two_line_api_key_file_is_refused(tmp_path):
    f = tmp_path / "key"
    f.write_text("first\nsecond\n")
    with pytest.raises(VireidError, match=r"has 2 non-empty lines; write the key alone on one line"):
        read_api_key(api_key_file=f)
    f.write_text("  only-key  \n\n")
    assert read_api_key(api_key_file=f) == "only-key"


def test_an_add_does_not_block_the_event_loop(served, monkeypatch):
    """While an add writes (made slow here: 2 s), /health still answers at once: the write runs in a worker
    thread (before the fix it ran on the event loop, and every add on a large index stalled every request)."""
    import threading
    import time

    _, client, _ = served
    for name in ("append", "save"):
        slow = getattr(GalleryIndex, name)

        def delayed(self, *a, _slow=slow, **k):
            time.sleep(2.0)
            return _slow(self, *a, **k)

        monkeypatch.setattr(GalleryIndex, name, delayed)
    adding = threading.Thread(target=lambda: _add(client, _png(value=21)))
    adding.start()
    time.sleep(0.5)  # the add is now inside its slow write
    t0 = time.perf_counter()
    assert client.get("/health").status_code == 200
    waited = time.perf_counter() - t0
    adding.join()
    assert waited < 1.0, f"/health waited {waited:.2f} s behind an add"
