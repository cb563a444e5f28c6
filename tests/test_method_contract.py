"""Contract tests every registered method gets for free (like timm's model tests)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import builtin_methods, tiny_batch, tiny_config
from vireid.core import CheckpointError, Modality
from vireid.engine.stepper import TrainStepper
from vireid.methods import build_method
from vireid.runs import load_model_state

NUM_CLASSES = 6


@pytest.fixture(params=builtin_methods())
def method_name(request):
    return request.param


def _build(name: str, seed: int = 0):
    cfg = tiny_config(name)
    torch.manual_seed(seed)
    return cfg, build_method(cfg, NUM_CLASSES)


def test_training_step_is_finite_and_updates(method_name):
    cfg, method = _build(method_name)
    batch = tiny_batch(cfg, NUM_CLASSES)
    before = {k: v.detach().clone() for k, v in method.state_dict().items() if v.dtype.is_floating_point}
    stepper = TrainStepper(method.optimizers())
    method.train()
    method.on_epoch_start(0)
    scalars = method.training_step(batch, stepper)
    assert scalars, "training_step must return the scalars it logs"
    for k, v in scalars.items():
        assert torch.isfinite(torch.tensor(float(v))), f"{k} is not finite: {v}"
    after = method.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed, "one training step changed no parameter"
    assert sum(stepper.step_counts.values()) >= 1


def test_embed_is_normalised_with_documented_dims(method_name):
    cfg, method = _build(method_name)
    method.eval()
    images = torch.randn(3, method.inference_spec().channels, cfg.data.height, cfg.data.width)
    dims = method.feature_dims()
    assert {"bn", "pool"} <= set(dims)
    for modality in (Modality.VISIBLE, Modality.INFRARED):
        out = method.embed(images, modality)
        assert set(out) == set(dims)
        for kind, feat in out.items():
            assert feat.shape == (3, dims[kind]), (kind, feat.shape)
            assert torch.allclose(feat.norm(dim=1), torch.ones(3), atol=1e-4), kind


def test_save_load_round_trip_reproduces_embed(method_name, tmp_path):
    cfg, method = _build(method_name, seed=0)
    # one step so the weights differ from any fresh initialisation
    method.train()
    method.training_step(tiny_batch(cfg, NUM_CLASSES), TrainStepper(method.optimizers()))
    method.eval()
    path = tmp_path / "m.pt"
    torch.save(method.state_dict(), path)
    _, other = _build(method_name, seed=123)
    load_model_state(other, torch.load(path), source=str(path))
    other.eval()
    images = torch.randn(2, method.inference_spec().channels, cfg.data.height, cfg.data.width)
    for modality in (Modality.VISIBLE, Modality.INFRARED):
        a, b = method.embed(images, modality), other.embed(images, modality)
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_wrong_number_of_classes_is_refused(method_name, tmp_path):
    cfg, method = _build(method_name)
    other = build_method(cfg, NUM_CLASSES + 1)
    shapes = r"\d+ shape mismatch\(es\): \S+ \(checkpoint \([\d, ]+\) vs model \([\d, ]+\)\)"
    with pytest.raises(CheckpointError, match=shapes):
        load_model_state(other, method.state_dict(), source="ckpt.pt")
