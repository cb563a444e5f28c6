"""The run directory: resolved config, environment, git revision, metrics log."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..config import Config, dump_config, load_config
from ..core import ConfigError
from ..utils.atomic import write_json, write_text


def git_revision(path: Path) -> str | None:
    """The git commit of the source tree (with '-dirty' when modified), or None outside git."""
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Versions and platform facts recorded with every run."""
    import numpy
    import torch

    from .. import __version__

    return {
        "vireid": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "argv": sys.argv,
    }


def write_run_files(run_dir: Path, cfg: Config) -> None:
    """Write config.yaml and env.json (atomically) into `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", dump_config(cfg))
    env = environment()
    env["git_revision"] = git_revision(run_dir)
    write_json(run_dir / "env.json", env)


def load_run_config(run_dir: "str | Path", overrides: list[str] | tuple = ()) -> Config:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a vireid run directory: {path} is missing")
    return load_config(path, overrides)


class MetricsLog:
    """Append-only JSON-lines metrics (metrics.jsonl) plus optional TensorBoard scalars."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except Exception:  # tensorboard is optional
                self._tb = None

    def log(self, record: dict[str, Any], step: int) -> None:
        """Append `record` and mirror its numeric values to TensorBoard at `step`."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            prefix = record.get("kind", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self._tb is not None:
            self._tb.close()
