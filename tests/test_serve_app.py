"""The REST API with FastAPI's TestClient: search, item images, adding items, and every bad-input status."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from tests.test_serve_helpers import make_gallery_folder, trained_run  # noqa: E402
from vireid.serve.app import create_app  # noqa: E402
from vireid.serve.gallery import build_index  # noqa: E402
from vireid.serve.index import GalleryIndex  # noqa: E402

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from vireid.inference import FeatureExtractor

    run, _ = trained_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("app")
    gallery = make_gallery_folder(base / "images")
    fx = FeatureExtractor(run)
    build_index(fx, gallery, base / "index")
    app = create_app(base / "index", extractor=fx, api_key=KEY, max_upload_bytes=20_000)
    return TestClient(app), gallery, base / "index"


def _jpeg(path) -> bytes:
    return open(path, "rb").read()


def test_health_page_and_docs(served):
    client, _, _ = served
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["items"] >= 12 and len(h["fingerprint"]) == 64
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text and "items/${r.id}/image" in page.text
    assert "/search" in client.get("/openapi.json").json()["paths"]


def test_search_returns_ranked_results_and_images(served):
    client, gallery, _ = served
    query = sorted((gallery / "infrared").rglob("*.jpg"))[0]
    r = client.post("/search", files={"image": ("q.jpg", _jpeg(query), "image/jpeg")},
                    data={"modality": "infrared", "topk": "5"})
    assert r.status_code == 200
    res = r.json()["results"]
    assert len(res) == 5 and set(res[0]) == {"id", "path", "score", "modality", "camera", "pid"}
    assert res[0]["path"] == str(query.resolve()) and res[0]["score"] == pytest.approx(1, abs=1e-5)
    assert [x["score"] for x in res] == sorted((x["score"] for x in res), reverse=True)
    cross = client.post("/search", files={"image": ("q.jpg", _jpeg(query), "image/jpeg")},
                        data={"modality": "ir", "topk": "3", "cross_modal_only": "true"}).json()["results"]
    assert [x["modality"] for x in cross] == ["visible"] * 3
    img = client.get(f"/items/{res[0]['id']}/image")
    assert img.status_code == 200 and img.content == _jpeg(query)
    assert client.get("/items/99999/image").status_code == 404


def test_bad_uploads_get_precise_statuses(served, tmp_path):
    client, gallery, _ = served
    query = _jpeg(sorted(gallery.rglob("*.jpg"))[0])
    post = lambda content, **data: client.post(  # noqa: E731
        "/search", files={"image": ("x.jpg", content, "image/jpeg")}, data={"modality": "visible", **data})
    assert post(b"this is not an image").status_code == 400
    assert post(query[: len(query) // 2]).status_code == 400  # truncated JPEG
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(big, "PNG")
    assert post(big.getvalue()).status_code == 413
    r = client.post("/search", files={"image": ("x.jpg", query, "image/jpeg")}, data={"modality": "ultraviolet"})
    assert r.status_code == 422 and "unknown modality" in r.text
    assert post(query, topk="0").status_code == 422


def test_adding_items_needs_the_key_and_stays_in_the_index(served):
    client, gallery, index_dir = served
    img = _jpeg(sorted((gallery / "visible").rglob("*.jpg"))[0])
    files = {"image": ("../../../evil.jpg", img, "image/jpeg")}
    data = {"modality": "visible", "camera": "7", "pid": "42", "tags": '{"site": "gate"}'}
    assert client.post("/items", files=files, data=data).status_code == 401
    assert client.post("/items", files=files, data=data, headers={"X-API-Key": "wrong"}).status_code == 401
    before = len(GalleryIndex.open(index_dir))
    r = client.post("/items", files=files, data=data, headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["path"].startswith("images/") and item["path"].endswith(".jpg") and ".." not in item["path"]
    assert (item["pid"], item["camera"], item["tags"]) == (42, 7, {"site": "gate"})
    assert not (index_dir.parent / "evil.jpg").exists() and not list(index_dir.parent.parent.rglob("evil.jpg"))
    reopened = GalleryIndex.open(index_dir)
    assert len(reopened) == before + 1 and (index_dir / item["path"]).read_bytes() == img
    assert client.get(f"/items/{item['id']}/image").content == img
    # the new item is searchable at once
    res = client.post("/search", files={"image": ("q.jpg", img, "image/jpeg")},
                      data={"modality": "visible", "topk": "2"}).json()["results"]
    assert item["id"] in [x["id"] for x in res]
    bad = client.post("/items", files={"image": ("a.jpg", b"GIF89a nonsense", "image/gif")},
                      data={"modality": "visible"}, headers={"X-API-Key": KEY})
    assert bad.status_code == 400 and len(GalleryIndex.open(index_dir)) == before + 1
