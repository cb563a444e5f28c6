"""Launchers: run the cells of a bench that are not done, then write the leaderboard.

- local (default): one cell after another in this process; `isolate=True` runs each in a process of its own
  (`vireid bench SPEC --out DIR --cell ID`), and a cell of several GPUs always runs under `torchrun`; `jobs=N`
  runs N such processes side by side, the CPU threads (and GPUs) shared out between them;
- submitit: one job per cell (SLURM, or submitit's local executor with `launcher.submitit.cluster: local`);
  the driver waits for the jobs, then writes the leaderboard;
- `commands`: one shell command per cell for any scheduler, and the command that writes the leaderboard.

The driver holds BENCH/.bench.lock throughout; each cell holds its own lock while it runs (see cell.py).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core import ConfigError
from ..utils.atomic import clean_leftovers, write_json
from .cell import CELL_DONE, CELL_FAILED, cell_done, check_saved_config, prepare_dataset, run_cell
from .layout import BenchDir
from .spec import BenchSpec, Cell, load_spec

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "submitit")


def pending_cells(spec: BenchSpec, bench: BenchDir) -> list[Cell]:
    """The cells not done under the spec as it is now; ConfigError first if a trained cell's config no longer
    matches the spec (its numbers would be another experiment's)."""
    todo = []
    for cell in spec.cells():
        cfg = spec.cell_config(cell, bench.path)  # a bad override fails here, before any training
        run = bench.run(cell.id)
        if run.is_trained:
            check_saved_config(run, cfg)
        if not cell_done(spec, bench, cell, cfg):
            todo.append(cell)
    return todo


def chosen_cells(spec: BenchSpec, cells: list[Cell], only: Sequence[str] | None) -> list[Cell]:
    """`cells` whose id matches one of the shell-style patterns `only` (all of them when `only` is empty)."""
    if not only:
        return cells
    chosen = {c.id for c in spec.select_cells(only)}
    return [c for c in cells if c.id in chosen]


def cell_command(spec: BenchSpec, bench: BenchDir, cell: Cell, *, vireid: tuple[str, ...] | None = None
                 ) -> list[str]:
    """The command that runs one cell: `vireid bench SPEC --out DIR --cell ID` (under torchrun for several GPUs);
    `vireid` is how to call vireid (default: this Python, `-m vireid`)."""
    args = ["bench", str(spec.path.resolve()), "--out", str(bench.path.resolve()), "--cell", cell.id, "--no-progress"]
    gpus = spec.launcher.gpus_per_cell
    if gpus > 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "vireid", *args]
    return [*(vireid or (sys.executable, "-m", "vireid")), *args]


def print_commands(spec: BenchSpec, bench_dir: str | Path, only: Sequence[str] | None = None) -> list[str]:
    """The shell commands that run the bench's pending cells (those matching `only`, if given; any order, any
    machine that sees BENCH_DIR), then the one that writes the leaderboard."""
    bench = BenchDir(bench_dir)
    with bench.lock():
        _write_bench_json(spec, bench)
        cells = chosen_cells(spec, pending_cells(spec, bench), only)
    lines = [shlex.join(cell_command(spec, bench, c, vireid=("vireid",))) for c in cells]
    lines.append(shlex.join(["vireid", "bench", str(spec.path.resolve()), "--out", str(bench.path.resolve()),
                             "--leaderboard-only"]))
    return lines


def run_bench(spec_path: str | Path | BenchSpec, out: str | Path, *, launcher: str | None = None,
              isolate: bool = False, jobs: int | None = None, progress: bool = False,
              only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every pending cell of the spec (or those matching the shell-style patterns `only`) into `out` with
    `launcher` (default: the spec's), `jobs` cells at a time (local launcher; default: the spec's launcher.jobs),
    then write and return the leaderboard of every done cell. Finished cells are skipped; a failed cell is
    recorded and the others go on."""
    from .leaderboard import write_leaderboard

    spec = spec_path if isinstance(spec_path, BenchSpec) else load_spec(spec_path)
    kind = launcher or spec.launcher.kind
    if kind not in LAUNCHERS:
        raise ConfigError(f"--launcher {kind!r}: expected one of {', '.join(LAUNCHERS)}")
    jobs = spec.launcher.jobs if jobs is None else int(jobs)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected how many cells run side by side, 1 or more")
    if jobs > 1 and kind != "local":
        raise ConfigError(f"--jobs {jobs} is for the local launcher; {kind} runs every cell as a job of its own")
    bench = BenchDir(out)
    start = time.perf_counter()
    with bench.lock():
        _write_bench_json(spec, bench)
        pending = pending_cells(spec, bench)
        cells = chosen_cells(spec, pending, only)
        total = len(spec.cells())
        if only:
            left = len(pending) - len(cells)
            log.info("[bench] %s: %d cells, %d to run now (--only %s), %d other(s) not done left for later "
                     "(%s launcher) -> %s", spec.name, total, len(cells), " ".join(only), left, kind, bench.path)
        else:
            log.info("[bench] %s: %d cells, %d done, %d to run (%s launcher) -> %s", spec.name, total,
                     total - len(cells), len(cells), kind, bench.path)
        for dataset in {c.dataset.name: c.dataset for c in cells}.values():
            prepare_dataset(spec, bench, dataset, progress=progress)  # once, before cells run side by side
        if kind == "submitit":
            _run_submitit(spec, bench, cells)
        elif jobs > 1:
            _run_side_by_side(spec, bench, cells, jobs)
        else:
            for i, cell in enumerate(cells, start=1):
                log.info("[bench] cell %d/%d: %s", i, len(cells), cell.id)
                if isolate or spec.launcher.gpus_per_cell > 1:
                    _CellProcess.start(spec, bench, cell).finish(bench)
                else:
                    run_cell(spec, bench.path, cell.id, progress=progress)
        return write_leaderboard(spec, bench.path, wall_seconds=time.perf_counter() - start)


def write_leaderboard_only(spec_path: str | Path | BenchSpec, out: str | Path) -> dict[str, Any]:
    """Write the leaderboard of the cells already run (after --print-commands' cells ran elsewhere)."""
    from .leaderboard import write_leaderboard

    spec = spec_path if isinstance(spec_path, BenchSpec) else load_spec(spec_path)
    bench = BenchDir(out)
    if not bench.path.is_dir():
        raise ConfigError(f"--out {bench.path} does not exist: run the bench (or its --print-commands) first")
    return write_leaderboard(spec, bench.path)  # no driver lock: it only reads the cells, while they may run


def _write_bench_json(spec: BenchSpec, bench: BenchDir) -> None:
    """Write bench.json (call with the bench lock held): first remove what killed writers left half-written."""
    clean_leftovers(bench.spec)
    write_json(bench.spec, {"schema": "vireid.bench/1", "spec": str(spec.path.resolve()), "name": spec.name,
                            "raw": spec.raw, "cells": [c.id for c in spec.cells()]})


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the cell process gets SIGKILL when the driver dies (a killed bench leaves no orphan training)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def slot_environment(slot: int, jobs: int, gpus_per_cell: int, *, cpus: int, cuda_devices: int,
                     environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the cell process in `slot` (0 .. jobs-1) when `jobs` cells run side by side: the CPU
    threads shared out (OMP_NUM_THREADS = cpus // jobs, at least 1, unless `environ` sets it) and, on a machine
    with `cuda_devices` GPUs, the slot's own `gpus_per_cell` of the visible ones (CUDA_VISIBLE_DEVICES)."""
    env = dict(environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // jobs)))
    if cuda_devices and gpus_per_cell >= 1:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()] or \
            [str(i) for i in range(cuda_devices)]
        if len(visible) < jobs * gpus_per_cell:
            raise ConfigError(f"--jobs {jobs} with launcher.gpus_per_cell {gpus_per_cell} needs "
                              f"{jobs * gpus_per_cell} GPUs, {len(visible)} are visible; lower --jobs")
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[slot * gpus_per_cell:(slot + 1) * gpus_per_cell])
    return env


def _run_side_by_side(spec: BenchSpec, bench: BenchDir, cells: list[Cell], jobs: int) -> None:
    """Run the cells as processes of their own, `jobs` at a time, each in its slot's environment. Every process
    is started from this thread, which outlives them (a child's PR_SET_PDEATHSIG follows its forking thread)."""
    import torch

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    envs = [slot_environment(k, jobs, spec.launcher.gpus_per_cell, cpus=cpus, cuda_devices=cuda, environ=os.environ)
            for k in range(jobs)]
    todo = list(enumerate(cells, start=1))
    running: dict[int, _CellProcess] = {}  # slot -> its process
    finished = 0
    try:
        while todo or running:
            for slot in [k for k in range(jobs) if k not in running]:
                if not todo:
                    break
                i, cell = todo.pop(0)
                log.info("[bench] %s cell %d/%d: %s (slot %d of %d)", time.strftime("%H:%M:%S"), i, len(cells),
                         cell.id, slot + 1, jobs)
                running[slot] = _CellProcess.start(spec, bench, cell, envs[slot])
            time.sleep(0.2)
            for slot, proc in list(running.items()):
                if proc.popen.poll() is not None:
                    proc.finish(bench)
                    finished += 1
                    log.info("[bench] %s %s: %s after %.1f min (%d of %d finished)", time.strftime("%H:%M:%S"),
                             proc.cell.id, (bench.read_record(proc.cell.id) or {}).get("status", "no record"),
                             (time.monotonic() - proc.started) / 60, finished, len(cells))
                    del running[slot]
    finally:  # an interrupted driver takes its cells down with it, as a killed one does
        for proc in running.values():
            proc.popen.kill()
            proc.popen.wait()
            proc.log.close()


class _CellProcess:
    """One cell running as `vireid bench ... --cell ID`, its output going to BENCH/logs/."""

    def __init__(self, cell: Cell, popen: subprocess.Popen, log: Any, log_path: Path, before: dict | None) -> None:
        self.cell, self.popen, self.log, self.log_path, self.before = cell, popen, log, log_path, before
        self.started = time.monotonic()

    @classmethod
    def start(cls, spec: BenchSpec, bench: BenchDir, cell: Cell, env: Mapping[str, str] | None = None
              ) -> _CellProcess:
        """Start the cell's process in `env` (default: this process's environment)."""
        log_path = bench.log(cell.id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        before = bench.read_record(cell.id)
        fh = open(log_path, "w")  # noqa: SIM115 - closed by finish()
        popen = subprocess.Popen(cell_command(spec, bench, cell), stdout=fh, stderr=subprocess.STDOUT,
                                 env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
                                 preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        return cls(cell, popen, fh, log_path, before)

    def finish(self, bench: BenchDir) -> None:
        """After the process ended: one that died without a record (killed, out of memory, a crash in native code)
        gets a failed record naming its exit code and log."""
        self.log.close()
        code = self.popen.wait()
        after = bench.read_record(self.cell.id)
        if code != 0 and (after is None or after == self.before or after.get("status") != CELL_FAILED):
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            _record_crash(bench, self.cell, f"the cell's process exited with code {code} ({tail[0][:300]}); its "
                                            f"output: {self.log_path}")


def _record_crash(bench: BenchDir, cell: Cell, error: str) -> None:
    record = bench.read_record(cell.id) or {}
    if record.get("status") == CELL_DONE:
        return
    bench.write_record(cell.id, {"schema": "vireid.bench-cell/1", "cell": cell.id, "method": cell.method.name,
                                 "method_name": cell.method.method, "dataset": cell.dataset.name, "seed": cell.seed,
                                 "status": CELL_FAILED, "error": error,
                                 "attempts": int(record.get("attempts", 0)) + 1})
    log.error("[bench] %s failed: %s", cell.id, error)


def submitit_job(spec_path: str, bench_dir: str, cell_id: str, gpus_per_cell: int = 1) -> str:
    """The function a submitit job runs: one cell (its record says how it went); returns its status."""
    from ..cli import configure_logging

    configure_logging()
    if gpus_per_cell > 1:  # one task per GPU: torch.distributed's variables from SLURM's
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    spec = load_spec(spec_path)
    return str(run_cell(spec, bench_dir, cell_id).get("status"))


def _run_submitit(spec: BenchSpec, bench: BenchDir, cells: list[Cell]) -> None:
    try:
        import submitit
    except ImportError:
        raise ConfigError("the submitit launcher needs submitit: pip install 'vireid[slurm]' (or pip install "
                          "submitit); or use --launcher local, or --print-commands for another scheduler") from None
    params = dict(spec.launcher.submitit)
    cluster = params.pop("cluster", None)
    folder = Path(params.pop("folder", bench.submitit))
    gpus = spec.launcher.gpus_per_cell
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    defaults: dict[str, Any] = {"name": f"vireid-bench-{spec.name}", "timeout_min": 24 * 60}
    if gpus >= 1 and cluster != "local":
        defaults.update(gpus_per_node=gpus, tasks_per_node=gpus)
    executor.update_parameters(**{**defaults, **params})
    jobs = [(cell, executor.submit(submitit_job, str(spec.path.resolve()), str(bench.path.resolve()), cell.id, gpus))
            for cell in cells]
    log.info("[bench] submitted %d job(s) to %s (job files in %s)", len(jobs), executor.cluster, folder)
    for cell, job in jobs:
        try:
            job.result()
        except Exception as exc:  # the job died (timeout, pre-emption, crash): record it, the others go on
            first = (str(exc).strip().splitlines() or [""])[0]
            _record_crash(bench, cell, f"submitit job {job.job_id} failed: {type(exc).__name__}: {first[:300]}")
