"""A bench's finished cells kept without their checkpoints: `--publish DIR` copies each done cell's record and its
run's small files (results.json, config.yaml, env.json, metrics.jsonl) to DIR in the bench directory's own layout,
and `--restore DIR` copies them back into a bench directory that lacks them. The leaderboard can then be rebuilt
from the repository alone, and a bench carried on on another machine (or after its folder was lost) trains only
the cells the published ones do not cover."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ..core import StorageError
from ..utils.atomic import atomic_dir, file_lock, storage_errors, write_json
from .cell import cell_done
from .layout import BenchDir
from .spec import BenchSpec

log = logging.getLogger(__name__)

RUN_FILES = ("results.json", "config.yaml", "env.json", "metrics.jsonl")


class _Busy(Exception):
    """A cell's lock is held by a process running it."""


def _copy_run_files(src: Path, dest: Path) -> None:
    """Copy the RUN_FILES that `src` has into the run folder `dest`, replacing it as a whole (atomic_dir)."""
    with atomic_dir(dest) as tmp:
        for name in RUN_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)


def done_cells(spec: BenchSpec, bench_dir: str | Path) -> list[str]:
    """The cells of `spec` that `bench_dir` holds as done under the spec's current settings, in run order."""
    bench = BenchDir(bench_dir)
    return [c.id for c in spec.cells() if cell_done(spec, bench, c)]


def archive_cells(spec: BenchSpec, cells: list[str], bench_dir: str | Path, dest: str | Path) -> None:
    """Copy `cells` (done in `bench_dir`) to `dest`: each record to dest/cells/, its run's RUN_FILES to dest/runs/.

    StorageError, before anything is copied, when `dest` holds a done cell that `cells` lacks (a bench folder
    that lost its cells would otherwise unpublish them: restore them first). Cells of `dest` not in `cells`
    (not done under the spec's settings now, or not in the spec) are removed; nothing else in `dest` is touched."""
    bench, out = BenchDir(bench_dir), BenchDir(dest)
    lost = [c for c in done_cells(spec, out.path) if c not in cells]
    if lost:
        raise StorageError(f"--publish {out.path} holds {len(lost)} done cell(s) that {bench.path} does not "
                           f"({lost[0]}{', ...' if len(lost) > 1 else ''}); bring them back first with --restore "
                           f"{out.path}, or publish to another folder")
    keep = set(cells)
    with storage_errors(out.path):
        for record in sorted(out.path.glob("cells/**/*.json")):
            cell_id = record.relative_to(out.path / "cells").with_suffix("").as_posix()
            if cell_id not in keep:
                record.unlink()
                shutil.rmtree(out.run(cell_id).path, ignore_errors=True)
        for cell_id in cells:
            # the run's files first: a record names a cell whose files are there
            _copy_run_files(bench.run(cell_id).path, out.run(cell_id).path)
            write_json(out.record(cell_id), published_record(bench.read_record(cell_id) or {}, out, cell_id))


def published_record(record: dict[str, Any], dest: BenchDir, cell_id: str) -> dict[str, Any]:
    """The record as `dest` keeps it: `run` relative to `dest`, no `restored_from` (the published folder is where
    cells are restored from), so republishing the same cells from another machine changes no byte."""
    kept = {k: v for k, v in record.items() if k != "restored_from"}
    kept["run"] = dest.run(cell_id).path.relative_to(dest.path).as_posix()
    return kept


def restore_cells(spec: BenchSpec, src: str | Path, bench_dir: str | Path) -> list[str]:
    """Copy into `bench_dir` the cells that `src` (a `--publish` folder or another bench directory) holds as done
    and `bench_dir` has not started (no run folder, no done record); returns their ids.

    A cell another process is running (its lock held) is left alone; a restored record names its new run folder
    and where it came from. The restored cells have no checkpoints: they count in the leaderboard as they are,
    and evaluating them under other settings trains them again."""
    source, bench = BenchDir(src), BenchDir(bench_dir)
    if not source.path.is_dir():
        raise StorageError(f"--restore {source.path}: no such folder; give a folder written by --publish (or a bench "
                           "directory)")
    restored = []
    for cell_id in done_cells(spec, source.path):
        run = bench.run(cell_id)
        if run.path.exists() or bench.read_record(cell_id) is not None:
            continue  # this bench's own cell, finished or not, is never replaced
        try:
            with file_lock(bench.cell_lock_file(cell_id), timeout=0, busy=_Busy):
                if run.path.exists():
                    continue
                _copy_run_files(source.run(cell_id).path, run.path)
                record: dict[str, Any] = {**(source.read_record(cell_id) or {}), "run": str(run.path),
                                          "restored_from": str(source.path)}
                write_json(bench.record(cell_id), record)
        except _Busy:
            log.warning("[bench] %s not restored: another process is running it", cell_id)
            continue
        restored.append(cell_id)
    log.info("[bench] restored %d done cell(s) from %s (not trained again)", len(restored), source.path)
    return restored
