"""Gallery index writes: one writer at a time, nothing lost, appends without rewriting, crash leftovers repaired,
permissions kept, the service picking up other writers' commits; the concurrent-writer test of issue 13."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_serve_helpers import make_gallery_folder, trained_run
from vireid.core import GalleryIndexError, Modality
from vireid.serve.gallery import add_to_index, build_index
from vireid.serve.index import GalleryIndex, IndexItem, index_lock, lock_file

V, IR = Modality.VISIBLE, Modality.INFRARED


def _unit(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _saved(tmp_path, n: int = 20) -> Path:
    idx = GalleryIndex(8, fingerprint="f" * 64, roots=["/g"])
    idx.add(_unit(n), [IndexItem(f"/g/{i}.jpg", V if i % 2 else IR) for i in range(n)])
    return idx.save(tmp_path / "gallery")


def _images(folder: Path, n: int, seed: int) -> Path:
    """n distinct random JPEGs in a flat folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size=(32, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.jpg")
    return folder


# ------------------------------------------------------------------ appends


def test_append_commits_without_rewriting_the_directory_or_the_vector_file(tmp_path):
    out = _saved(tmp_path)
    before = {p: p.stat().st_ino for p in (out, out / "vectors.npy", out / "items.sqlite")}
    with index_lock(out):
        idx = GalleryIndex.open(out)
        ids = idx.append(_unit(3, seed=1), [IndexItem(f"/g/new{i}.jpg", V) for i in range(3)])
    assert ids == [20, 21, 22]
    assert {p: p.stat().st_ino for p in before} == before  # appended in place: same directory, same files
    back = GalleryIndex.open(out)
    assert len(back) == 23 and back.item(22).path == "/g/new2.jpg" and back.generation == idx.generation
    np.testing.assert_array_equal(back.vectors[20:], _unit(3, seed=1))


def test_a_writer_that_read_an_old_state_is_refused(tmp_path):
    out = _saved(tmp_path)
    stale = GalleryIndex.open(out)
    with index_lock(out):
        GalleryIndex.open(out).append(_unit(1), [IndexItem("/g/a.jpg", V)])
    with index_lock(out), pytest.raises(GalleryIndexError, match="changed on disk since it was read"):
        stale.append(_unit(1, seed=2), [IndexItem("/g/b.jpg", V)])
    assert len(GalleryIndex.open(out)) == 21


def test_a_failed_append_changes_neither_memory_nor_disk(tmp_path, monkeypatch):
    import vireid.serve.index as index_module

    out = _saved(tmp_path)
    idx = GalleryIndex.open(out)
    with pytest.raises(ValueError, match="pid must be an integer between"):
        idx.append(_unit(1), [IndexItem("/g/big.jpg", V, pid=99999999999999999999)])

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index_module, "_append_npy", full)
    with index_lock(out), pytest.raises(Exception, match=r"the disk is full"):
        idx.append(_unit(1), [IndexItem("/g/ok.jpg", V)])
    monkeypatch.undo()
    assert len(idx) == 20 and len(GalleryIndex.open(out)) == 20
    with index_lock(out):
        idx.append(_unit(1), [IndexItem("/g/ok.jpg", V)])  # the next add works and is kept
    assert len(GalleryIndex.open(out)) == 21


def test_rows_of_a_killed_append_are_ignored_then_overwritten(tmp_path):
    out = _saved(tmp_path)
    # what a writer killed after its rows but before meta.json leaves: two extra item rows, two extra vectors
    con = sqlite3.connect(out / "items.sqlite")
    con.executemany("INSERT INTO items (id, path, modality, tags) VALUES (?, ?, 'visible', '{}')",
                    [(20, "/g/ghost0.jpg"), (21, "/g/ghost1.jpg")])
    con.commit()
    con.close()
    vec = np.load(out / "vectors.npy")
    np.save(out / "vectors.npy", np.concatenate([vec, _unit(2, seed=9)]))
    idx = GalleryIndex.open(out)
    assert len(idx) == 20 and all("ghost" not in it.path for it in idx.items)
    with index_lock(out):
        idx.append(_unit(1, seed=3), [IndexItem("/g/real.jpg", V)])
    back = GalleryIndex.open(out)
    assert len(back) == 21 and back.item(20).path == "/g/real.jpg"
    np.testing.assert_array_equal(back.vectors[20], _unit(1, seed=3)[0])


def test_approximate_index_catches_up_after_a_commit_without_its_faiss_file(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    idx = GalleryIndex(8, fingerprint="f" * 64, kind="hnsw", roots=["/g"])
    idx.add(_unit(40), [IndexItem(f"/g/{i}.jpg", V) for i in range(40)])
    out = idx.save(tmp_path / "g")
    monkeypatch.setattr(GalleryIndex, "_write_faiss", lambda self, d: None)  # killed before index.faiss
    with index_lock(out):
        GalleryIndex.open(out).append(_unit(2, seed=4), [IndexItem("/g/x.jpg", V), IndexItem("/g/y.jpg", V)])
    monkeypatch.undo()
    back = GalleryIndex.open(out)
    assert len(back) == 42 and back._faiss.ntotal == 42
    (hits,) = back.search(_unit(2, seed=4)[1], 1)
    assert hits[0].item.path == "/g/y.jpg"


# ------------------------------------------------------------------ crash leftovers and permissions


def test_a_save_killed_between_its_renames_is_named_then_repaired(tmp_path):
    out = _saved(tmp_path)
    old = out.with_name(".gallery.old")
    os.replace(out, old)  # the state after a kill between atomic_dir's two renames
    (tmp_path / ".gallery.abc123.tmp").mkdir()  # and a killed writer's temporary folder
    with pytest.raises(GalleryIndexError, match=r"previous version is intact at .*\.gallery\.old"):
        GalleryIndex.open(out)
    with index_lock(out):
        pass
    assert len(GalleryIndex.open(out)) == 20 and not old.exists()
    assert not (tmp_path / ".gallery.abc123.tmp").exists()


def test_saving_keeps_the_permissions_of_the_index(tmp_path):
    mask = os.umask(0o022)
    try:
        out = _saved(tmp_path)
        assert stat.S_IMODE(out.stat().st_mode) == 0o755
        assert stat.S_IMODE((out / "meta.json").stat().st_mode) == 0o644
        os.chmod(out, 0o750)
        GalleryIndex.open(out).save(out)  # a full rewrite
        assert stat.S_IMODE(out.stat().st_mode) == 0o750
        with index_lock(out):
            GalleryIndex.open(out).append(_unit(1), [IndexItem("/g/a.jpg", V)])
        assert stat.S_IMODE((out / "meta.json").stat().st_mode) == 0o644
    finally:
        os.umask(mask)


def test_the_lock_lives_beside_the_index_and_times_out_with_a_message(tmp_path):
    out = _saved(tmp_path)
    assert lock_file(out) == tmp_path / ".gallery.lock"
    started = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with index_lock(out):
            started.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    started.wait(5)
    try:
        with pytest.raises(GalleryIndexError, match=r"being written by another process .*\.gallery\.lock"):
            with index_lock(out, timeout=0.2):
                pass
    finally:
        release.set()
        t.join()


def test_roots_cannot_widen_what_is_served(tmp_path):
    out = _saved(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    for roots, why in ((["/"], "not an absolute folder below the file-system root"),
                       (["/etc"], "no indexed image lies in it")):
        (out / "meta.json").write_text(json.dumps({**meta, "roots": roots}))
        with pytest.raises(GalleryIndexError, match=why):
            GalleryIndex.open(out)
    (out / "meta.json").write_text(json.dumps(meta))
    idx = GalleryIndex.open(out)
    with pytest.raises(GalleryIndexError, match="not an image file"):
        idx.image_path(IndexItem("/g/notes.txt", V, id=3))


# ------------------------------------------------------------------ the service and the CLI together


def test_the_service_keeps_what_another_writer_added(tmp_path_factory, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vireid.inference import FeatureExtractor
    from vireid.serve.app import create_app

    run, _ = trained_run(tmp_path_factory)
    fx = FeatureExtractor(run)
    out = tmp_path / "index"
    build_index(fx, make_gallery_folder(tmp_path / "gallery"), out)
    client = TestClient(create_app(out, extractor=fx, api_key="k"))
    assert client.get("/health").json()["items"] == 12
    _, added = add_to_index(fx, out, _images(tmp_path / "more", 4, seed=1), modality="visible")
    assert added == 4
    assert client.get("/health").json()["items"] == 16  # the service read the CLI's commit
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 16, 3), 7, np.uint8)).save(buf, format="PNG")
    r = client.post("/items", files={"image": ("a.png", buf.getvalue(), "image/png")},
                    data={"modality": "visible"}, headers={"X-API-Key": "k"})
    assert r.status_code == 201 and r.json()["id"] == 16
    assert len(GalleryIndex.open(out)) == 17  # the CLI's four are still there


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post_png(port: int, pixels: np.ndarray, key: str) -> int:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"modality\"\r\n\r\nvisible\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-API-Key": key}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/items", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status


@pytest.mark.slow
def test_three_cli_writers_and_a_running_service_lose_nothing(tmp_path_factory, tmp_path):
    """Issue 13's concurrent-writer test: 3 `vireid index add` processes and `vireid serve` adding through the
    API, all at once; the final count is the sum and every added image is found by its own features."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from vireid.inference import FeatureExtractor

    run, _ = trained_run(tmp_path_factory)
    fx = FeatureExtractor(run)
    out = tmp_path / "index"
    build_index(fx, make_gallery_folder(tmp_path / "gallery"), out)
    folders = [_images(tmp_path / f"add{k}", 6, seed=10 + k) for k in range(3)]
    port, key = _free_port(), "k3y"
    env = {**os.environ, "VIREID_API_KEY": key, "OMP_NUM_THREADS": "1"}
    vireid = [sys.executable, "-m", "vireid"]
    log = (tmp_path / "serve.log").open("wb")  # a file, not a pipe: an undrained pipe would block the server
    server = subprocess.Popen([*vireid, "serve", str(out), "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # importing torch and loading the model, on a busy 2-core machine
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.3)
        writers = [subprocess.Popen([*vireid, "index", "add", str(out), "--images", str(f), "--modality", "visible"],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for f in folders]
        rng = np.random.default_rng(99)
        statuses = [_post_png(port, rng.integers(0, 255, size=(32, 16, 3), dtype=np.uint8), key) for _ in range(6)]
        for w in writers:
            printed, _ = w.communicate(timeout=300)  # drains the pipe while waiting
            assert w.returncode == 0, printed.decode()[-3000:]
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read())
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # never leave a server behind, whatever state it is in
            server.kill()
            server.wait()
        log.close()
    assert statuses == [201] * 6
    final = GalleryIndex.open(out)
    assert len(final) == 12 + 3 * 6 + 6 == health["items"]
    assert len({it.path for it in final.items}) == len(final)
    for i in range(12, len(final)):  # every added item is searchable: its own vector finds it first
        (hits,) = final.search(final.vectors[i], 1)
        assert hits[0].id == i
    shutil.rmtree(tmp_path / "gallery")
