"""FeatureExtractor's ONNX Runtime backend: parity with PyTorch, the fingerprint-keyed cache, CLI, one-line errors."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from tests.helpers import builtin_methods
from tests.test_serve_helpers import make_gallery_folder, trained_run
from vireid.cli import main as cli_main
from vireid.core import ConfigError, ExportError, Modality

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def _images(data, n=3):
    paths = sorted((data / "cam1").rglob("*.jpg"))[:n] + sorted((data / "cam3").rglob("*.jpg"))[:n]
    return paths, [Modality.VISIBLE] * n + [Modality.INFRARED] * n


def test_onnx_features_equal_torch_within_the_parity_tolerance(run, tmp_path):
    from vireid.inference import FeatureExtractor
    from vireid.inference.onnx_backend import PARITY_TOLERANCE

    run_dir, data = run
    torch_fx = FeatureExtractor(run_dir)
    onnx_fx = FeatureExtractor(run_dir, backend="onnx", threads=1, batch_size=4)  # cached in <run>/onnx
    paths = onnx_fx.onnx_paths
    assert paths and all(p.parent == run_dir / "onnx" and p.is_file() for p in paths)
    assert all(onnx_fx.fingerprint[:16] in p.name for p in paths)
    # the baseline has modality-specific stems: one graph per modality, each running its own branch only
    assert torch_fx.method.inference_spec().modality_specific
    assert sorted(p.name.rsplit("-", 1)[1] for p in paths) == ["infrared.onnx", "visible.onnx"]
    paths, mods = _images(data)
    # paths (resized by the extractor), mixed modalities in one call, more images than one batch
    want, got = torch_fx(paths, mods), onnx_fx(paths, mods)
    assert got.shape == want.shape == (6, torch_fx.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=PARITY_TOLERANCE)
    # the index fingerprint does not depend on the backend: one index serves both
    assert onnx_fx.fingerprint == torch_fx.fingerprint and onnx_fx.describe() == torch_fx.describe()
    assert onnx_fx(paths[:0], mods[:0]).shape == (0, torch_fx.dim)


def test_cache_is_reused_and_refreshed_for_a_new_checkpoint(run, tmp_path):
    import torch

    from vireid.inference import FeatureExtractor
    from vireid.runs import read_checkpoint, save_checkpoint

    run_dir, data = run
    cache = tmp_path / "cache"
    first = FeatureExtractor(run_dir, backend="onnx", onnx_cache=cache)
    assert first._onnx is not None and first._onnx.exported
    stamps = [os.stat(p).st_mtime_ns for p in first.onnx_paths]
    again = FeatureExtractor(run_dir, backend="onnx", onnx_cache=cache)
    assert again._onnx is not None and not again._onnx.exported  # reused: no second export
    assert again.onnx_paths == first.onnx_paths and [os.stat(p).st_mtime_ns for p in again.onnx_paths] == stamps

    # a new checkpoint (other weights) gets its own graph, exported from its own weights
    ck = read_checkpoint(first.checkpoint_path)
    conv = next(k for k, v in ck["model"].items() if torch.is_floating_point(v) and v.ndim == 4)
    ck["model"] = {**ck["model"], conv: ck["model"][conv] * 1.05}  # other weights, same architecture
    save_checkpoint(tmp_path / "new.pt", ck)
    new = FeatureExtractor(tmp_path / "new.pt", backend="onnx", onnx_cache=cache)
    assert new._onnx is not None and new._onnx.exported
    assert new.fingerprint != first.fingerprint and not set(new.onnx_paths) & set(first.onnx_paths)
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in [*first.onnx_paths, *new.onnx_paths])
    paths, mods = _images(data, 1)
    np.testing.assert_allclose(new(paths, mods), FeatureExtractor(tmp_path / "new.pt")(paths, mods), atol=1e-4)
    # no temporary files are left next to the graphs
    assert not [p for p in cache.iterdir() if p.suffix != ".onnx"]


@pytest.mark.slow
def test_damaged_or_foreign_cache_file_is_replaced(run, tmp_path):
    from vireid.inference import FeatureExtractor

    run_dir, data = run
    cache = tmp_path / "cache"
    good = FeatureExtractor(run_dir, backend="onnx", onnx_cache=cache)
    vis, ir = sorted(good.onnx_paths, key=lambda p: p.name.endswith("-infrared.onnx"))
    # a valid graph of the other modality (same fingerprint) under the infrared name must not be used, and a
    # damaged file is exported again
    ir.write_bytes(vis.read_bytes())
    vis.write_bytes(b"not an onnx graph")
    fx = FeatureExtractor(run_dir, backend="onnx", onnx_cache=cache)
    assert fx._onnx is not None and fx._onnx.exported and fx.onnx_paths == good.onnx_paths
    paths, mods = _images(data, 1)
    np.testing.assert_allclose(fx(paths, mods), FeatureExtractor(run_dir)(paths, mods), atol=1e-4)


def test_default_cache_lives_next_to_the_run(run):
    from vireid.inference import FeatureExtractor

    run_dir, _ = run
    fx = FeatureExtractor(run_dir, backend="onnx")
    assert fx.onnx_paths and all(p.parent == run_dir / "onnx" for p in fx.onnx_paths)
    # the checkpoint an index records (inside <run>/checkpoints/) shares the run's cache: no second export
    again = FeatureExtractor(fx.checkpoint_path, backend="onnx")
    assert again.onnx_paths == fx.onnx_paths and again._onnx is not None and not again._onnx.exported


def test_errors_are_one_line(run, tmp_path, monkeypatch):
    from vireid.inference import FeatureExtractor

    run_dir, _ = run
    with pytest.raises(ConfigError, match=r"unknown inference backend 'tensorrt'; choose one of torch, onnx") as e:
        FeatureExtractor(run_dir, backend="tensorrt")
    assert "\n" not in str(e.value)
    blocked = tmp_path / "file"
    blocked.write_text("x")  # a file where the cache folder should be
    with pytest.raises(ExportError, match=r"cannot create the ONNX cache folder .*--onnx-cache DIR") as e:
        FeatureExtractor(run_dir, backend="onnx", onnx_cache=blocked / "sub")
    assert "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    with pytest.raises(ExportError, match=r"needs the 'onnxruntime' package.*pip install vireid\[export\]") as e:
        FeatureExtractor(run_dir, backend="onnx", onnx_cache=tmp_path / "c")
    assert "\n" not in str(e.value)


def test_default_threads_follow_the_cores_and_omp(monkeypatch):
    from vireid.inference.onnx_backend import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = default_threads()
    assert cores >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1


def test_cli_search_with_the_onnx_backend_ranks_like_torch(run, tmp_path, capsys):
    run_dir, _ = run
    gallery = make_gallery_folder(tmp_path / "images", pids=(1, 2, 3), per=2)
    index = tmp_path / "index"
    assert cli_main(["index", "build", str(run_dir), "--images", str(gallery), "--out", str(index),
                     "--no-progress"]) == 0
    capsys.readouterr()
    query = str(sorted((gallery / "infrared").rglob("*.jpg"))[0])
    out = {}
    for backend in ("torch", "onnx"):
        assert cli_main(["search", str(index), query, "--modality", "ir", "--topk", "5", "--json", "--backend",
                         backend, "--threads", "1"]) == 0
        out[backend] = json.loads(capsys.readouterr().out)["results"]
    assert [r["id"] for r in out["onnx"]] == [r["id"] for r in out["torch"]]
    np.testing.assert_allclose([r["score"] for r in out["onnx"]], [r["score"] for r in out["torch"]], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", builtin_methods())
def test_every_method_onnx_backend_matches_torch(method, tmp_path):
    from tests.test_export import _checkpoint
    from vireid.inference import FeatureExtractor

    ck = _checkpoint(method, tmp_path / "ck.pt")
    torch_fx = FeatureExtractor(ck, flip=True)
    onnx_fx = FeatureExtractor(ck, flip=True, backend="onnx", onnx_cache=tmp_path / "onnx")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 48, 24, 3), dtype=np.uint8)  # resized to the run's size by both
    mods = [Modality.INFRARED, Modality.VISIBLE, Modality.INFRARED, Modality.VISIBLE, Modality.VISIBLE]
    np.testing.assert_allclose(onnx_fx(list(images), mods), torch_fx(list(images), mods), atol=1e-4)
