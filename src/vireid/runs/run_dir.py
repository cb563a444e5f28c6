"""The run directory as a value: `RunDir(path)` owns the layout; no other module spells its file names.

    <run>/config.yaml        the resolved config          <run>/env.json      versions, platform, git revision
    <run>/metrics.jsonl      one JSON record per log line <run>/tensorboard/  the same scalars for TensorBoard
    <run>/checkpoints/       last.pt, best.pt, epoch_NNNN.pt
    <run>/results.json       evaluation results           <run>/galleries/, <run>/queries/  audited trial lists
    <run>/report/            reports                      <run>/../.cache/    decoded-image cache (shared by runs)
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy
import torch

from .. import __version__
from ..config import Config, dump_config
from ..core import CheckpointError, EvalTrial, Sample
from ..protocols.common import trial_file
from ..utils.atomic import mode_for, old_copy, storage_errors, write_json, write_text

log = logging.getLogger(__name__)

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

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl ([] when missing); torn lines (a killed writer) are skipped."""
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def truncate_metrics(self, upto_epoch: int) -> None:
        """Drop metrics records of epochs after `upto_epoch` (a resumed run rewrites them).

        A line that is not a JSON record (the last line torn by a full disk or a power loss) is dropped with a
        warning: it never stops a resume."""
        if not self.metrics.exists():
            return
        keep, torn = [], []
        for number, line in enumerate(self.metrics.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                torn.append(number)
                continue
            epoch = record.get("epoch", -1)
            if isinstance(epoch, int) and epoch > upto_epoch:
                continue
            keep.append(line)
        if torn:
            log.warning("%s: dropped %d unreadable line(s) (line %s), a write cut short (full disk or power loss?)",
                        self.metrics, len(torn), ", ".join(map(str, torn[:5])))
        write_text(self.metrics, "".join(ln + "\n" for ln in keep))

    def reset_metrics(self) -> bool:
        """Remove metrics.jsonl and tensorboard/ (a fresh start after an attempt that wrote no checkpoint), so the
        new run's records are not appended to the old ones; True when there was something to remove."""
        found = self.metrics.exists() or self.tensorboard.exists()
        self.metrics.unlink(missing_ok=True)
        if self.tensorboard.is_dir():
            shutil.rmtree(self.tensorboard)
        return found

    def write_trial_lists(self, trials: Iterable[EvalTrial], results: str | None = None) -> list[Path]:
        """Write every trial's gallery paths to galleries/<name>.txt (and its sampled query list to
        queries/<name>.txt when the query side is the sampled one) and, given `results` (the text of
        results.json), results.json, as one unit.

        galleries/ and queries/ are built whole in temporary folders, results.json in a temporary file; only
        when all are written are they renamed into place (results.json last), replacing the previous ones and
        their files of other evaluations. A failure (a full disk: StorageError naming the path) leaves the
        previous galleries/, queries/ and results.json as they were."""
        trials = list(trials)
        lists: dict[Path, dict[Path, list[Sample]]] = {self.galleries: {}, self.queries: {}}
        for t in trials:
            lists[self.galleries][trial_file(self.galleries, t.name)] = list(t.gallery)
            if t.info.get("sampled_side") == "query":
                lists[self.queries][trial_file(self.queries, t.name)] = list(t.query)
        staged: dict[Path, Path | None] = {}  # target -> its new version (None: no new version, remove it)
        results_tmp: Path | None = None
        try:
            with storage_errors(self.path) as where:
                self.path.mkdir(parents=True, exist_ok=True)
                for folder, files in lists.items():
                    where.target = folder
                    if not files:
                        staged[folder] = None
                        continue
                    tmp = staged[folder] = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp",
                                                                 dir=self.path))
                    os.chmod(tmp, mode_for(folder, directory=True))
                    for path, samples in files.items():
                        where.target = path
                        inside = tmp / path.relative_to(folder)
                        inside.parent.mkdir(parents=True, exist_ok=True)
                        inside.write_text("".join(f"{s.path}\n" for s in samples))
                if results is not None:
                    where.target = self.results
                    fd, name = tempfile.mkstemp(prefix=f".{self.results.name}.", suffix=".tmp", dir=self.path)
                    os.close(fd)
                    results_tmp = Path(name)
                    results_tmp.write_text(results)
                    os.chmod(results_tmp, mode_for(self.results, directory=False))
                where.target = self.path
                _swap_in(staged, results_tmp, self.results)
                results_tmp = None
        finally:
            for left in staged.values():
                if left is not None and left.exists():
                    shutil.rmtree(left, ignore_errors=True)
            if results_tmp is not None:
                results_tmp.unlink(missing_ok=True)
        return [path for files in lists.values() for path in files]


def _swap_in(folders: dict[Path, Path | None], results_tmp: Path | None, results: Path) -> None:
    """Rename each new folder over its target (the old one moved aside first) and `results_tmp` over `results`
    last; if a rename fails, the old folders are put back before the error goes on."""
    moved: list[tuple[Path, Path]] = []  # (target, its previous version moved aside)
    placed: list[Path] = []
    try:
        for target, new in folders.items():
            old = old_copy(target)
            if old.exists():
                shutil.rmtree(old)
            if target.exists():
                os.replace(target, old)
                moved.append((target, old))
            if new is not None:
                os.replace(new, target)
                placed.append(target)
        if results_tmp is not None:
            os.replace(results_tmp, results)
    except OSError:
        for target in placed:
            shutil.rmtree(target, ignore_errors=True)
        for target, old in moved:
            os.replace(old, target)
        raise
    for _, old in moved:
        shutil.rmtree(old, ignore_errors=True)


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


def training_time(records: Iterable[dict[str, Any]]) -> tuple[int, float]:
    """(end-of-epoch records, their `seconds` summed) of metrics.jsonl records: the epochs the run is made of and
    their training-loop time (a resumed run keeps its earlier epochs' records; `truncate_metrics` drops those of
    epochs it runs again, so none counts twice)."""
    epochs = [r for r in records if r.get("kind") == "epoch"]
    return len(epochs), sum(float(r.get("seconds", 0.0)) for r in epochs)


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
