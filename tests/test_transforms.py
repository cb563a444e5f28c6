"""Transforms: normalisation parity with torchvision, geometry, CAJ channel ops, erasing, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vireid.config import AugmentConfig
from vireid.core import Modality, Sample
from vireid.data import transforms as T


def _img(h=32, w=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _rng(seed=0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_normalize_matches_torchvision():
    tv = pytest.importorskip("torchvision.transforms")
    img = _img()
    ref = tv.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)(tv.ToTensor()(img))
    out = T.to_normalized_tensor(img)
    assert out.dtype == torch.float32 and out.shape == (3, 32, 16)
    assert torch.equal(out, ref)
    # one pixel by hand: (v/255 - mean)/std
    v = img[3, 5, 1]
    assert out[1, 3, 5].item() == pytest.approx((v / 255 - 0.456) / 0.224, abs=1e-6)


def test_pad_crop_window_and_fill():
    img = _img(6, 4)
    padded = T.pad(img, 2, fill=127)
    assert padded.shape == (10, 8, 3)
    assert (padded[:2] == 127).all() and (padded[:, :2] == 127).all()
    assert np.array_equal(padded[2:8, 2:6], img)
    crop = T.random_crop(padded, 6, 4, _rng(1))
    assert crop.shape == (6, 4, 3)
    offsets = [(t, left) for t in range(5) for left in range(5) if np.array_equal(padded[t:t + 6, left:left + 4], crop)]
    assert offsets  # the crop is a window of the padded image
    # all offsets are reachable: 5x5 = 25 positions of a 10x8 pad around 6x4
    seen = set()
    rng = _rng(2)
    for _ in range(600):
        c = T.random_crop(np.arange(80).reshape(10, 8, 1), 6, 4, rng)
        seen.add((int(c[0, 0, 0]) // 8, int(c[0, 0, 0]) % 8))
    assert seen == {(t, left) for t in range(5) for left in range(5)}


def test_flip_probability_and_geometry_shape():
    img = _img()
    rng = _rng(3)
    flips = sum(np.array_equal(T.random_hflip(img, rng), img[:, ::-1]) for _ in range(2000))
    assert 900 < flips < 1100
    aug = AugmentConfig(pad=10)
    assert T.train_geometry(img, _rng(0), aug).shape == img.shape
    aug0 = AugmentConfig(pad=0, flip=False)
    assert np.array_equal(T.train_geometry(img, _rng(0), aug0), img)


def test_channel_exchange_makes_channels_equal():
    for seed in range(10):
        t = T.to_normalized_tensor(_img(seed=seed))
        src = t.clone()
        rng = _rng(seed)
        c = int(np.random.default_rng(seed).integers(0, 3))
        out = T.channel_exchange(t, rng)
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        assert torch.equal(out[0], src[c])


def test_channel_adaptive_gray_branches():
    kinds = {"copy": 0, "gray": 0, "same": 0}
    img = _img()
    r, g, b = (T.to_normalized_tensor(img)[c] for c in range(3))
    gray = 0.2989 * r + 0.5870 * g + 0.1140 * b
    for seed in range(800):
        t = T.to_normalized_tensor(img)
        src = t.clone()
        out = T.channel_adaptive_gray(t, _rng(seed))
        if torch.equal(out, src):
            kinds["same"] += 1
        elif torch.allclose(out[0], gray) and torch.equal(out[0], out[2]):
            kinds["gray"] += 1
        else:
            assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
            assert any(torch.equal(out[0], src[c]) for c in range(3))
            kinds["copy"] += 1
    # expected fractions 3/4, 1/8, 1/8
    assert 0.70 < kinds["copy"] / 800 < 0.80
    assert 0.08 < kinds["gray"] / 800 < 0.17
    assert 0.08 < kinds["same"] / 800 < 0.17


def test_channel_random_erasing_fills_per_channel():
    t = torch.full((3, 64, 32), 9.0)
    out = T.channel_random_erasing(t, _rng(0), p=1.0)
    for c, fill in enumerate(T.CAJ_ERASING_FILL):
        mask = out[c] != 9.0
        assert mask.any()
        assert torch.allclose(out[c][mask], torch.tensor(fill))
        frac = mask.float().mean().item()
        assert 0.02 * 0.5 <= frac <= 0.4 * 1.5  # area 0.02-0.4 up to rounding
        rows, cols = mask.nonzero(as_tuple=True)
        assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
    assert torch.equal(T.channel_random_erasing(torch.full((3, 8, 8), 9.0), _rng(0), p=0.0),
                       torch.full((3, 8, 8), 9.0))


def test_random_erasing_fills_zero():
    hits = 0
    for seed in range(200):
        out = T.random_erasing(torch.full((3, 64, 32), 5.0), _rng(seed), p=0.5)
        mask = out[0] != 5.0
        if mask.any():
            hits += 1
            assert (out[:, mask] == 0).all()
            assert 0.01 <= mask.float().mean().item() <= 0.4
    assert 70 < hits < 130


@pytest.mark.parametrize("kind", T.VIEW_KINDS)
def test_train_view_shapes_and_determinism(kind):
    img = _img(32, 16)
    aug = AugmentConfig(pad=4, random_erasing=0.5, channel_aug=True)
    a = T.train_view(img, T.sample_rng(0, 1, 7), aug, kind)
    b = T.train_view(img, T.sample_rng(0, 1, 7), aug, kind)
    assert a.shape == (3, 32, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    different = [T.train_view(img, T.sample_rng(0, 1, p), aug, kind) for p in range(8, 14)]
    assert any(not torch.equal(a, d) for d in different)
    if kind == "visible_b":
        assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2])


def test_eval_preprocessing_accepts_every_input(tmp_path):
    src = _img(50, 30)
    path = tmp_path / "a.png"
    Image.fromarray(src).save(path)
    ref = np.array(Image.fromarray(src).resize((16, 32), Image.Resampling.LANCZOS))
    expected = T.to_normalized_tensor(ref)
    sample = Sample(str(path), 1, 1, Modality.VISIBLE)
    batch = T.load_eval_batch([sample, str(path), path, Image.fromarray(src), src], 32, 16)
    assert batch.shape == (5, 3, 32, 16)
    for row in batch:
        assert torch.equal(row, expected)
    assert T.load_eval_batch(sample, 32, 16).shape == (1, 3, 32, 16)
    # grayscale and already-sized arrays
    grey = src[..., 0]
    g = T.load_eval_batch(grey, 32, 16)[0]
    assert torch.allclose((g[0] * 0.229 + 0.485), (g[1] * 0.224 + 0.456), atol=1e-6)
    assert torch.equal(T.load_eval_batch(ref, 32, 16)[0], expected)
    with pytest.raises(ValueError, match="uint8"):
        T.load_eval_batch(src.astype(np.float32), 32, 16)
