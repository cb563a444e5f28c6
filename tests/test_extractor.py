"""FeatureExtractor: same features as the evaluator, every input kind, fingerprint, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vireid
from tests.test_serve_helpers import trained_run
from vireid.core import CheckpointError, ConfigError, Modality, ModalityError, Sample
from vireid.inference import FeatureExtractor


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def _samples(data_root, n=3):
    vis = sorted((data_root / "cam1").rglob("*.jpg"))[:n]
    ir = sorted((data_root / "cam3").rglob("*.jpg"))[:n]
    return ([Sample(str(p), 0, 1, Modality.VISIBLE) for p in vis]
            + [Sample(str(p), 0, 3, Modality.INFRARED) for p in ir])


def test_equals_the_evaluator_extraction(run):
    from vireid.inference import make_extractor

    run_dir, data = run
    fx = FeatureExtractor(run_dir, batch_size=2)  # batches smaller than the evaluator's
    samples = _samples(data)
    # interleave modalities so the per-image modality list and regrouping are exercised
    order = [0, 3, 1, 4, 2, 5]
    mixed = [samples[i] for i in order]
    ours = fx([s.path for s in mixed], [s.modality for s in mixed])
    ref = make_extractor(fx.method, fx.height, fx.width, torch.device("cpu"), flip=fx.flip,
                         batch_size=16, kinds=("bn",))(mixed)["bn"].numpy()
    assert ours.dtype == np.float32 and ours.shape == (6, fx.dim)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # the two modalities go through different stems: the same pixels do not give the same feature
    same = fx([mixed[0].path] * 2, ["visible", "infrared"])
    assert np.abs(same[0] - same[1]).max() > 1e-4


def test_every_input_kind_gives_the_same_features(run):
    run_dir, data = run
    fx = FeatureExtractor(run_dir)
    path = _samples(data, 1)[0].path
    ref = fx(path, Modality.VISIBLE)
    pil = Image.open(path).convert("RGB")
    arr = np.array(pil)
    as_float = torch.from_numpy(arr).permute(2, 0, 1).float() / 255  # torchvision ToTensor convention
    as_u8 = torch.from_numpy(arr).permute(2, 0, 1)
    for item in (pil, arr, as_float, as_u8, [path], np.stack([arr, arr])[:1], as_float.unsqueeze(0)):
        got = fx(item, "visible")
        assert got.shape == (1, fx.dim), type(item)
        np.testing.assert_allclose(got, ref, atol=1e-6, err_msg=str(type(item)))
    assert vireid.FeatureExtractor is FeatureExtractor
    assert fx([], "visible").shape == (0, fx.dim)


def test_fingerprint_is_stable_and_names_the_feature(run):
    run_dir, _ = run
    a, b = FeatureExtractor(run_dir), FeatureExtractor(run_dir / "checkpoints" / "last.pt")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert FeatureExtractor(run_dir, feature="pool").fingerprint != a.fingerprint
    other = FeatureExtractor(run_dir)
    with torch.no_grad():
        next(other.method.parameters()).add_(1e-3)
    assert other.fingerprint != a.fingerprint


def test_errors_are_precise(run, tmp_path):
    run_dir, data = run
    fx = FeatureExtractor(run_dir)
    path = _samples(data, 1)[0].path
    with pytest.raises(ValueError, match="got 2 modalities for 1 images"):
        fx(path, ["visible", "infrared"])
    with pytest.raises(ModalityError, match="unknown modality 'uv'"):
        fx(path, "uv")
    with pytest.raises(ConfigError, match="feature 'nope' is not produced by method 'baseline'"):
        FeatureExtractor(run_dir, feature="nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no trained checkpoint"):
        FeatureExtractor(tmp_path / "empty")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(vireid.DatasetError, match="bad.jpg"):
        fx(str(bad), "visible")
