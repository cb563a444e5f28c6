"""The bench directory as a value: `BenchDir(path)` owns its layout; cells' run folders are ordinary `RunDir`s.

    BENCH/bench.json            the spec as last run (provenance)    BENCH/.bench.lock   one driver at a time
    BENCH/runs/<m>/<d>/seed<N>/ one ordinary run directory per cell  BENCH/data/<d>/     synthesised datasets
    BENCH/cells/<m>/<d>/seed<N>.json  the cell's record: done or failed (with its error), timings, device
    BENCH/logs/<m>/<d>/seed<N>.log    output of a cell run in its own process
    BENCH/leaderboard.{md,csv,html,json}, BENCH/cmc-<protocol>.png   the comparison
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import StorageError
from ..utils.atomic import file_lock, write_json

if TYPE_CHECKING:  # runs/ imports torch; the bench's command line must not
    from ..runs import RunDir

LEADERBOARD_FORMATS = ("md", "csv", "html", "json")
CELL_DONE = "done"
CELL_FAILED = "failed"


class BenchDir:
    """The files of one bench under `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"BenchDir({str(self.path)!r})"

    @property
    def spec(self) -> Path:
        return self.path / "bench.json"

    @property
    def lock_file(self) -> Path:
        return self.path / ".bench.lock"

    @property
    def leaderboard_lock_file(self) -> Path:
        return self.path / ".leaderboard.lock"

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def submitit(self) -> Path:
        """Where submitit keeps its job files (pickles, logs)."""
        return self.path / "submitit"

    def run(self, cell_id: str) -> RunDir:
        """The cell's ordinary run directory."""
        from ..runs import RunDir

        return RunDir(self.path / "runs" / cell_id)

    def record(self, cell_id: str) -> Path:
        return self.path / "cells" / f"{cell_id}.json"

    def log(self, cell_id: str) -> Path:
        return self.path / "logs" / f"{cell_id}.log"

    def cell_lock_file(self, cell_id: str) -> Path:
        return self.path / "cells" / f".{cell_id}.lock"

    def leaderboard(self, fmt: str) -> Path:
        return self.path / f"leaderboard.{fmt}"

    def cmc_plot(self, protocol: str) -> Path:
        return self.path / f"cmc-{protocol}.png"

    # ---- records
    def read_record(self, cell_id: str) -> dict[str, Any] | None:
        """The cell's record, or None when it has none (never run, or killed before it finished)."""
        try:
            data = json.loads(self.record(cell_id).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_record(self, cell_id: str, record: dict[str, Any]) -> None:
        """Write the cell's record atomically (a kill leaves the previous one or the new one, never half)."""
        write_json(self.record(cell_id), record)

    # ---- locks
    @contextlib.contextmanager
    def lock(self, what: str = "vireid bench") -> Iterator[None]:
        """Hold BENCH/.bench.lock: one driver (or leaderboard writer) at a time; StorageError when it is held."""
        busy = (f"another vireid bench is running on {self.path} (lock {self.lock_file} is held); wait for it to "
                "finish, or choose another --out")
        with file_lock(self.lock_file, timeout=0, busy=lambda: StorageError(busy)):
            yield

    @contextlib.contextmanager
    def leaderboard_lock(self) -> Iterator[None]:
        """Hold BENCH/.leaderboard.lock (waiting for another writer): one writer of the leaderboard's files, so
        `--leaderboard-only` can write a partial leaderboard while the driver runs."""
        with file_lock(self.leaderboard_lock_file):
            yield

    @contextlib.contextmanager
    def cell_lock(self, cell_id: str) -> Iterator[None]:
        """Hold the cell's lock (waiting for another process that runs it): one writer of a cell's files."""
        with file_lock(self.cell_lock_file(cell_id)):
            yield

