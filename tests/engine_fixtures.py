"""A tiny SYSU-layout dataset and config for engine tests (random pixels; nothing learnable needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import REPO, TINY_OVERRIDES
from vireid.config import Config, load_config


def make_tiny_sysu(root: Path, train_ids=range(1, 7), val_ids=range(7, 9), test_ids=range(9, 13), per_cam: int = 2,
                   seed: int = 0) -> Path:
    """cam1..cam6/<pid>/<n>.jpg with per-identity colours, exp/*_id.txt; every id in every camera."""
    rng = np.random.default_rng(seed)
    for pid in list(train_ids) + list(val_ids) + list(test_ids):
        colour = rng.integers(0, 255, size=3)
        for cam in range(1, 7):
            d = root / f"cam{cam}" / f"{pid:04d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(1, per_cam + 1):
                arr = np.clip(colour + rng.normal(0, 20, size=(32, 16, 3)), 0, 255).astype(np.uint8)
                if cam in (3, 6):
                    arr = np.repeat(arr.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i:04d}.jpg", quality=95)
    (root / "exp").mkdir(parents=True, exist_ok=True)
    (root / "exp" / "train_id.txt").write_text(",".join(map(str, train_ids)))
    (root / "exp" / "val_id.txt").write_text(",".join(map(str, val_ids)))
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, test_ids)))
    return root


def tiny_train_config(data_root: Path, *overrides: str, method: str = "baseline") -> Config:
    """The synthetic preset shrunk for a seconds-long CPU run on `data_root`."""
    return load_config(REPO / "configs" / "synthetic" / f"{method}.yaml", [
        *TINY_OVERRIDES, f"data.root={data_root}", "sampler.num_ids=4", "sampler.num_pos=2",
        "train.epochs=3", "train.max_steps_per_epoch=2", "train.deterministic=true", "train.log_every=1",
        "eval.options={mode: all, shots: 1, gallery_sampler: agw, trials: 2}", "eval.batch_size=16",
        *overrides])


def config_args(data_root: Path, *overrides: str, method: str = "baseline") -> list[str]:
    """The same as CLI arguments: CONFIG and overrides."""
    cfg_path = str(REPO / "configs" / "synthetic" / f"{method}.yaml")
    return [cfg_path, *TINY_OVERRIDES, f"data.root={data_root}", "sampler.num_ids=4", "sampler.num_pos=2",
            "train.epochs=3", "train.max_steps_per_epoch=2", "train.deterministic=true", "train.log_every=1",
            "eval.options={mode: all, shots: 1, gallery_sampler: agw, trials: 2}", "eval.batch_size=16", *overrides]
