"""Load a trained run: rebuild its method from the checkpoint's config, then load the trained weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import Config, apply_overrides, config_from_dict, upgrade_saved_config
from ..core import CheckpointError, ConfigError
from ..methods import Method, build_method
from ..runs import RunDir, load_model_state, read_checkpoint


def load_trained(run_dir: str | Path, checkpoint: str = "auto", device: str | torch.device = "cpu",
                 overrides: Sequence[str] = ()) -> tuple[Config, Method, Path]:
    """(config, method in eval mode on `device`, checkpoint path) of a run directory or a checkpoint file.

    `checkpoint`: auto (best, else last) | best | last | a file. A run without a checkpoint is refused
    (never evaluate an untrained model). No pretrained weights are read: the checkpoint has them all.
    """
    path = RunDir(run_dir).find_checkpoint(checkpoint) if Path(run_dir).is_dir() else Path(run_dir)
    data = read_checkpoint(path)
    if not isinstance(data["config"], dict):
        raise CheckpointError(f"{path}: its 'config' is a {type(data['config']).__name__}, expected the mapping "
                              "vireid train saves; pass a checkpoint written by vireid train")
    raw = upgrade_saved_config(data["config"])
    try:
        cfg = config_from_dict(raw)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: the config it was trained with cannot be used ({exc})") from None
    if overrides:
        cfg = config_from_dict(apply_overrides(raw, list(overrides)))
    method = build_method(cfg, int(data["num_classes"]), pretrained=False)
    load_model_state(method, data["model"], source=str(path), method=data["method"], expected_method=cfg.method.name)
    method.to(device).eval()
    return cfg, method, path
