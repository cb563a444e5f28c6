"""The run directory as a value: `RunDir(path)` owns the layout; no other module spells its file names.

    <run>/config.yaml        the resolved config          <run>/env.json      versions, platform, git revision
    <run>/metrics.jsonl      one JSON record per log line <run>/tensorboard/  the same scalars for TensorBoard
    <run>/checkpoints/       last.pt, best.pt, epoch_NNNN.pt
    <run>/results.json       evaluation results           <run>/galleries/, <run>/queries/  audited trial lists
    <run>/report/            reports                      <run>/../.cache/    decoded-image cache (shared by runs)
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy
import torch

from .. import __version__
from ..config import Config, dump_config
from ..core import CheckpointError, EvalTrial
from ..protocols.common import trial_file
from ..utils.atomic import write_json, write_text

CHECKPOINT_NAMES = {"last": "last.pt", "best": "best.pt"}
_AUTO_ORDER = ("best", "last")


class RunDir:
    """The files of one run (training, evaluation or both) under `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---- the layout
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def env(self) -> Path:
        return self.path / "env.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def galleries(self) -> Path:
        return self.path / "galleries"

    @property
    def queries(self) -> Path:
        return self.path / "queries"

    @property
    def report(self) -> Path:
        return self.path / "report"

    @property
    def default_cache(self) -> Path:
        """Where decoded training images are cached unless data.cache_dir says otherwise (beside the run)."""
        return self.path.parent / ".cache"

    def checkpoint(self, which: str | int) -> Path:
        """checkpoints/last.pt ("last"), best.pt ("best") or epoch_NNNN.pt (an int, the 1-based epoch)."""
        if isinstance(which, int):
            return self.checkpoints / f"epoch_{which:04d}.pt"
        return self.checkpoints / CHECKPOINT_NAMES[which]

    # ---- questions and actions
    @property
    def is_trained(self) -> bool:
        """Whether a training run has written its last checkpoint here."""
        return self.checkpoint("last").is_file()

    def find_checkpoint(self, which: str = "auto") -> Path:
        """`best`, `last`, `auto` (best if present, else last), a file name in checkpoints/ or a path."""
        if which not in ("auto", *CHECKPOINT_NAMES):
            explicit = Path(which).expanduser()
            if explicit.is_file():
                return explicit
            cand = self.checkpoints / which
            if cand.is_file():
                return cand
            raise CheckpointError(f"checkpoint {which!r} not found (looked at {explicit} and {cand})")
        order = _AUTO_ORDER if which == "auto" else (which,)
        for name in order:
            if self.checkpoint(name).is_file():
                return self.checkpoint(name)
        raise CheckpointError(
            f"no trained checkpoint in {self.checkpoints} (looked for "
            f"{', '.join(CHECKPOINT_NAMES[n] for n in order)}); refusing to evaluate an untrained model. "
            f"Train first (vireid train CONFIG --out {self.path}) or pass --checkpoint PATH."
        )

    def write_run_files(self, cfg: Config) -> None:
        """Write config.yaml and env.json (atomically)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config, dump_config(cfg))
        env = environment()
        env["git_revision"] = git_revision()
        write_json(self.env, env)

    def truncate_metrics(self, upto_epoch: int) -> None:
        """Drop metrics records of epochs after `upto_epoch` (a resumed run rewrites them)."""
        if not self.metrics.exists():
            return
        keep = [ln for ln in self.metrics.read_text().splitlines()
                if ln and json.loads(ln).get("epoch", -1) <= upto_epoch]
        write_text(self.metrics, "".join(ln + "\n" for ln in keep))

    def write_trial_lists(self, trials: Iterable[EvalTrial]) -> list[Path]:
        """Write every trial's gallery paths to galleries/<name>.txt (and its sampled query list to
        queries/<name>.txt when the query side is the sampled one), atomically."""
        written = []
        for t in trials:
            target = trial_file(self.galleries, t.name)
            write_text(target, "".join(f"{s.path}\n" for s in t.gallery))
            written.append(target)
            if t.info.get("sampled_side") == "query":
                target = trial_file(self.queries, t.name)
                write_text(target, "".join(f"{s.path}\n" for s in t.query))
                written.append(target)
        return written


def git_revision(where: str | Path | None = None) -> str | None:
    """The git commit of the vireid source tree (or of `where`), with '-dirty' when modified; None outside git."""
    here = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
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
    return {
        "vireid": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "argv": sys.argv,
    }


class MetricsLog:
    """Append-only JSON-lines metrics (metrics.jsonl) plus optional TensorBoard scalars."""

    def __init__(self, run: RunDir, tensorboard: bool = True) -> None:
        self.path = run.metrics
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run.tensorboard))
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
