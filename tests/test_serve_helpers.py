"""Shared by the serve tests: one tiny trained run per test session (trained on first use, ~10 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import SESSION_PREFIX
from tests.engine_fixtures import make_tiny_sysu, tiny_train_config

_RUN: dict[str, Path] = {}


def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run_dir, sysu_root) of a baseline trained for a few steps; trained once per session."""
    if "run" not in _RUN:
        from vireid.engine.trainer import Trainer

        base = tmp_path_factory.mktemp(SESSION_PREFIX + "serve_run")
        data = make_tiny_sysu(base / "sysu")
        run = base / "run"
        Trainer(tiny_train_config(data, "train.epochs=1"), run).fit()
        _RUN["run"], _RUN["data"] = run, data
    return _RUN["run"], _RUN["data"]


def make_gallery_folder(root: Path, pids=(1, 2, 3), per: int = 2, seed: int = 0) -> Path:
    """A `folder`-layout gallery: <root>/<visible|infrared>/camN/<pid>/*.jpg with per-identity colours."""
    rng = np.random.default_rng(seed)
    for pid in pids:
        colour = rng.integers(0, 255, size=3)
        for mod, cam in (("visible", 1), ("infrared", 3)):
            d = root / mod / f"cam{cam}" / f"{pid:04d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per):
                arr = np.clip(colour + rng.normal(0, 15, size=(32, 16, 3)), 0, 255).astype(np.uint8)
                if mod == "infrared":
                    arr = np.repeat(arr.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i:04d}.jpg", quality=95)
    return root
