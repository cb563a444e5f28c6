"""Image cache round trip and staleness, train set views, collate order, end-to-end loader."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vireid.config import Config
from vireid.core import Batch, DatasetError, Modality, Sample
from vireid.data.cache import ImageCache, decode_resized
from vireid.data.datasets.base import ReIDDataset, build_label_map
from vireid.data.loading import ReIDEvalSet, ReIDTrainSet, TrainItem, build_train_loader, collate_views
from vireid.data.transforms import load_eval_batch

H, W = 32, 16


def _write_images(root: Path, n_ids: int = 6, per: int = 2, size=(20, 40)) -> list[Sample]:
    """Tiny JPEGs (visible RGB, infrared single-channel 'L') for n_ids identities x 2 modalities x per."""
    rng = np.random.default_rng(0)
    samples = []
    for pid in range(n_ids):
        for mod, cam in ((Modality.VISIBLE, 1), (Modality.INFRARED, 3)):
            for k in range(per):
                p = root / f"cam{cam}" / f"{pid + 100:04d}" / f"{k:04d}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                img = Image.fromarray(arr)
                (img.convert("L") if mod is Modality.INFRARED else img).save(p, quality=90)
                samples.append(Sample(str(p), pid + 100, cam, mod))
    return samples


@pytest.fixture()
def images(tmp_path):
    return _write_images(tmp_path / "data")


def _lanczos(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB").resize((W, H), Image.Resampling.LANCZOS))


def test_cache_round_trip_and_reuse(images, tmp_path):
    cache = ImageCache.build(images, H, W, tmp_path / "cache", progress=False)
    assert len(cache) == len(images) and cache.array.shape == (len(images), H, W, 3)
    for i, s in enumerate(images):
        assert np.array_equal(cache[i], _lanczos(s.path))
        assert np.array_equal(cache[i], decode_resized(s.path, H, W))
        assert cache.index_of(s) == i
    assert not cache[0].flags.writeable
    npy_files = sorted((tmp_path / "cache").glob("*.npy"))
    assert npy_files == [cache.path]
    mtime = cache.path.stat().st_mtime_ns
    again = ImageCache.build(images, H, W, tmp_path / "cache", progress=False)
    assert again.path == cache.path and cache.path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    reopened = ImageCache.open(cache.path)
    assert np.array_equal(reopened.array, cache.array)
    # pickling (DataLoader spawn workers) must not carry the pixels
    assert len(pickle.dumps(cache)) < cache.array.nbytes
    assert np.array_equal(pickle.loads(pickle.dumps(cache))[3], cache[3])


def test_cache_rebuilds_when_a_file_changes(images, tmp_path):
    first = ImageCache.build(images, H, W, tmp_path / "cache", progress=False)
    target = images[2].path
    Image.fromarray(np.zeros((40, 20, 3), dtype=np.uint8)).save(target)
    os.utime(target, ns=(1, 1))  # a different mtime even on coarse-timestamp filesystems
    second = ImageCache.build(images, H, W, tmp_path / "cache", progress=False)
    assert second.path != first.path
    assert np.array_equal(second[2], _lanczos(target)) and not np.array_equal(second[2], first[2])
    other_size = ImageCache.build(images, 16, 8, tmp_path / "cache", progress=False)
    assert other_size.path not in (first.path, second.path) and other_size[0].shape == (16, 8, 3)


def test_cache_failure_names_path_and_leaves_nothing(images, tmp_path):
    bad = Path(images[5].path)
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    cache_dir = tmp_path / "cache"
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        ImageCache.build(images, H, W, cache_dir, progress=False, num_threads=1)
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        ImageCache.build(images, H, W, cache_dir, progress=False, num_threads=2)
    leftovers = [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    missing = Sample(str(tmp_path / "nope.jpg"), 1, 1, Modality.VISIBLE)
    with pytest.raises(DatasetError, match="nope.jpg"):
        ImageCache.build([missing], H, W, cache_dir, progress=False)


def test_trainset_cache_and_on_the_fly_agree(images, tmp_path):
    cache = ImageCache.build(images, H, W, tmp_path / "cache", progress=False)
    labels = list(range(len(images)))
    cfg = Config()
    with_cache = ReIDTrainSet(images, labels, H, W, augment=cfg.augment, cache=cache, seed=4)
    no_cache = ReIDTrainSet(images, labels, H, W, augment=cfg.augment, cache=None, seed=4)
    for i in range(len(images)):
        assert np.array_equal(with_cache.image(i), no_cache.image(i))
        item = TrainItem(i, 2, 10 + i)
        assert torch.equal(with_cache[item][0].image, no_cache[item][0].image)
    assert torch.equal(ReIDEvalSet(images, H, W, cache)[3][0], load_eval_batch(images[3], H, W)[0])
    with pytest.raises(DatasetError, match="16x8"):
        ReIDTrainSet(images, labels, 16, 8, cache=cache)


def _dataset(samples: list[Sample], root: Path) -> ReIDDataset:
    return ReIDDataset("tiny", root, train=samples, test=[], label_map=build_label_map(samples))


def _cfg(workers: int, channel_aug: bool = False) -> Config:
    cfg = Config()
    cfg.data.height, cfg.data.width, cfg.data.num_workers = H, W, workers
    cfg.sampler.num_ids, cfg.sampler.num_pos = 3, 2
    cfg.augment.pad = 2
    cfg.augment.random_erasing = 0.5
    cfg.augment.channel_aug = channel_aug
    return cfg


def _sections(cfg: Config) -> tuple:
    return cfg.data, cfg.sampler, cfg.augment


def _epochs(loader, sampler, epochs=(0, 1)) -> list[Batch]:
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out.extend(loader)
    return out


def test_loader_end_to_end_workers_reproducible(images, tmp_path):
    ds = _dataset(images, tmp_path)
    loader0, s0 = build_train_loader(ds, *_sections(_cfg(0)), cache_dir=tmp_path / "cache", seed=5, progress=False)
    loader2, s2 = build_train_loader(ds, *_sections(_cfg(2)), cache_dir=tmp_path / "cache", seed=5, progress=False)
    # 12 images per modality, P*K = 6 -> 12 // 6 + 1 = 3 batches per epoch
    assert len(loader0) == len(s0) == 3
    b0, b2 = _epochs(loader0, s0), _epochs(loader2, s2)
    assert len(b0) == len(b2) == 6
    label_of = {s.path: ds.label_map[s.pid] for s in images}
    for x, y in zip(b0, b2, strict=True):
        assert isinstance(y, Batch)
        assert y.images.shape == (12, 3, H, W) and y.images.dtype == torch.float32
        assert y.labels.dtype == torch.int64 and y.modalities.dtype == torch.int8
        assert y.camids.dtype == torch.int64 and y.indices.dtype == torch.int64
        assert y.visible_mask.tolist() == [True] * 6 + [False] * 6
        assert torch.equal(y.labels[:6], y.labels[6:])
        assert [label_of[images[i].path] for i in y.indices.tolist()] == y.labels.tolist()
        assert [images[i].modality.code for i in y.indices.tolist()] == y.modalities.tolist()
        assert y.camids.tolist() == [1] * 6 + [3] * 6
        for f in ("images", "labels", "modalities", "camids", "indices"):
            assert torch.equal(getattr(x, f), getattr(y, f))
    # epochs differ (sampler and augmentation)
    assert not torch.equal(b0[0].images, b0[3].images)


def test_loader_caj_views_order(images, tmp_path):
    ds = _dataset(images, tmp_path)
    cfg = _cfg(0, channel_aug=True)
    cfg.data.cache = False  # on-the-fly decoding path
    loader, sampler = build_train_loader(ds, *_sections(cfg), cache_dir=None, seed=1, progress=False)
    batch = next(iter(loader))
    assert batch.images.shape == (18, 3, H, W)
    assert batch.modalities.tolist() == [0] * 12 + [1] * 6
    vis_a, vis_b, ir = batch.labels[:6], batch.labels[6:12], batch.labels[12:]
    assert torch.equal(vis_a, vis_b) and torch.equal(vis_a, ir)
    assert torch.equal(batch.indices[:6], batch.indices[6:12])
    for img in batch.images[6:12]:  # view B: channel exchange makes the channels equal
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


def test_collate_keeps_sampler_order_without_caj(images, tmp_path):
    ts = ReIDTrainSet(images, list(range(len(images))), H, W, augment=_cfg(0).augment)
    order = [3, 0, 2, 1]  # e.g. MPANet's interleaved IR, RGB chunks
    batch = collate_views([ts[TrainItem(i, 0, j)] for j, i in enumerate(order)])
    assert batch.indices.tolist() == order
