"""ONNX export: normalisation in the graph, dynamic batch, modality input, parity with PyTorch for every method."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import builtin_methods, tiny_config
from tests.test_serve_helpers import trained_run
from vireid.cli import main as cli_main
from vireid.core import Modality
from vireid.serve.export import ExportError, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _checkpoint(method: str, path):
    """An untrained but complete checkpoint of `method` (tiny ResNet-18, 32x16 inputs)."""
    import torch

    from vireid.config import config_to_dict
    from vireid.methods import build_method
    from vireid.runs import save_checkpoint

    cfg = tiny_config(method)
    torch.manual_seed(0)
    model = build_method(cfg, 6).eval()
    save_checkpoint(path, {"config": config_to_dict(cfg), "num_classes": 6, "model": model.state_dict(),
                           "method": method})
    return path


def test_cli_export_matches_the_feature_extractor(tmp_path_factory, tmp_path, capsys):
    from vireid.inference import FeatureExtractor

    run, data = trained_run(tmp_path_factory)
    out = tmp_path / "model.onnx"
    assert cli_main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    msg = capsys.readouterr().out
    assert "max abs difference" in msg and "<= 1e-04" in msg
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images", "modality"]
    assert sess.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
    # three real images (not the export's parity batch), already at the model size: the graph must
    # give FeatureExtractor's features, i.e. the normalisation is inside the graph
    fx = FeatureExtractor(run)
    paths = sorted((data / "cam1").rglob("*.jpg"))[:2] + sorted((data / "cam3").rglob("*.jpg"))[:1]
    from PIL import Image

    u8 = np.stack([np.array(Image.open(p).convert("RGB").resize((fx.width, fx.height), Image.Resampling.LANCZOS))
                   for p in paths])
    mods = [Modality.VISIBLE, Modality.VISIBLE, Modality.INFRARED]
    got = sess.run(["features"], {"images": (u8.transpose(0, 3, 1, 2) / 255.0).astype(np.float32),
                                  "modality": np.array([m.code for m in mods], dtype=np.int64)})[0]
    want = fx(list(u8), mods)
    assert got.shape == (3, fx.dim)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", builtin_methods())
def test_every_method_exports_within_tolerance(method, tmp_path):
    ck = _checkpoint(method, tmp_path / "ck.pt")
    report = export_onnx(ck, tmp_path / "m.onnx", input_kind="uint8")
    assert report["max_abs_diff"] <= 1e-4 and report["inputs"] == ["images", "modality"]
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, size=(5, 3, report["height"], report["width"]), dtype=np.uint8)
    assert sess.run(None, {"images": x, "modality": np.array([1, 0, 1, 1, 0])})[0].shape == (5, report["dim"])


def test_failed_parity_leaves_no_file(tmp_path_factory, tmp_path):
    run, _ = trained_run(tmp_path_factory)
    with pytest.raises(ExportError, match=r"max abs difference .* > 0e\+00 .*model.onnx was not written"):
        export_onnx(run, tmp_path / "model.onnx", tolerance=0.0, flip=True)
    assert list(tmp_path.iterdir()) == []
