"""Training-loader throughput (images/s) with 0 and N workers, with and without the decoded-image cache.

Writes its own tiny JPEG dataset into a temporary folder, so it runs anywhere:

    python benchmarks/loader_speed.py --ids 24 --per 8 --workers 0 2 --epochs 2

Prints one row per (cache, workers) setting and the speed ratio against the first row, all measured
in the same run. The cache build time is reported separately (it happens once per dataset).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vireid.config import Config
from vireid.core import Modality, Sample
from vireid.data.datasets.base import ReIDDataset, build_label_map
from vireid.data.loading import build_train_loader


def write_dataset(root: Path, n_ids: int, per: int, size: tuple[int, int]) -> list[Sample]:
    """n_ids identities x 2 modalities x `per` random JPEGs of `size` (width, height)."""
    rng = np.random.default_rng(0)
    samples = []
    for pid in range(n_ids):
        for mod, cam in ((Modality.VISIBLE, 1), (Modality.INFRARED, 3)):
            for k in range(per):
                path = root / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(path, quality=90)
                samples.append(Sample(str(path), pid, cam, mod))
    return samples


def measure(dataset: ReIDDataset, cfg: Config, cache_dir: Path, epochs: int) -> float:
    """Images per second over `epochs` epochs (after one warm-up batch)."""
    loader, sampler = build_train_loader(dataset, cfg.data, cfg.sampler, cfg.augment, cache_dir=cache_dir, seed=0,
                                         progress=False)
    sampler.set_epoch(0)
    next(iter(loader))  # start workers outside the timed region
    n, start = 0, time.perf_counter()
    for e in range(epochs):
        sampler.set_epoch(e)
        for batch in loader:
            n += len(batch)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=24)
    ap.add_argument("--per", type=int, default=8, help="images per identity and modality")
    ap.add_argument("--src-size", type=int, nargs=2, default=(128, 256), metavar=("W", "H"))
    ap.add_argument("--size", type=int, nargs=2, default=(288, 144), metavar=("H", "W"))
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--channel-aug", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        samples = write_dataset(root / "data", args.ids, args.per, tuple(args.src_size))
        dataset = ReIDDataset("bench", root, train=samples, test=[], label_map=build_label_map(samples))
        cfg = Config()
        cfg.data.height, cfg.data.width = args.size
        cfg.augment.channel_aug = args.channel_aug

        from vireid.data.cache import ImageCache

        t0 = time.perf_counter()
        ImageCache.build(samples, *args.size, root / "cache", progress=False)
        print(f"{len(samples)} images, cache build {time.perf_counter() - t0:.2f}s")
        rows = []
        for use_cache in (True, False):
            for w in args.workers:
                cfg.data.cache, cfg.data.num_workers = use_cache, w
                rows.append((use_cache, w, measure(dataset, cfg, root / "cache", args.epochs)))
        base = rows[0][2]
        print(f"{'cache':>6} {'workers':>7} {'img/s':>9} {'ratio':>6}")
        for use_cache, w, ips in rows:
            print(f"{str(use_cache):>6} {w:>7} {ips:>9.1f} {ips / base:>6.2f}")


if __name__ == "__main__":
    main()
