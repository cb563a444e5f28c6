"""`vireid bench SPEC --out DIR --status`: each cell's state (done, failed, running, partly trained, pending),
its epochs and training time so far, read without writing anything, while the bench runs or after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..runs import training_time
from ..utils.atomic import lock_holder
from .cell import cell_done
from .layout import CELL_FAILED, BenchDir
from .spec import BenchSpec

STATES = ("done", "failed", "running", "partial", "pending")


def cell_states(spec: BenchSpec, bench_dir: str | Path) -> list[dict[str, Any]]:
    """One entry per cell, in the order the bench runs them: its state, epochs logged of the spec's epochs,
    training seconds so far, attempts, the pid running it, its error when failed."""
    bench = BenchDir(bench_dir)
    out = []
    for cell in spec.cells():
        cfg = spec.cell_config(cell, bench.path)
        run, record = bench.run(cell.id), bench.read_record(cell.id)
        pid = lock_holder(bench.cell_lock_file(cell.id))
        epochs, seconds = training_time(run.read_metrics())
        if cell_done(spec, bench, cell, cfg):
            state = "done"
        elif pid is not None:
            state = "running"
        elif record is not None and record.get("status") == CELL_FAILED:
            state = "failed"
        else:
            state = "partial" if epochs else "pending"
        wall = (record or {}).get("wall_seconds") if state == "done" else None
        out.append({"cell": cell.id, "method": cell.method.name, "state": state, "epochs": epochs,
                    "of": cfg.train.epochs, "wall_seconds": wall,
                    "train_seconds": seconds, "attempts": int((record or {}).get("attempts", 0)), "pid": pid,
                    "error": (record or {}).get("error") if state == "failed" else None})
    return out


def time_left(states: list[dict[str, Any]]) -> tuple[float, int]:
    """(seconds, cells without an estimate): for each cell not done, the mean wall time of its method's done cells
    times the share of its epochs still to run, summed over cells (cells run side by side divide it)."""
    walls: dict[str, list[float]] = {}
    for s in states:
        if s["state"] == "done" and s["wall_seconds"]:
            walls.setdefault(s["method"], []).append(float(s["wall_seconds"]))
    seconds, unknown = 0.0, 0
    for s in states:
        if s["state"] == "done":
            continue
        if s["method"] not in walls:
            unknown += 1
            continue
        mean = sum(walls[s["method"]]) / len(walls[s["method"]])
        seconds += mean * max(0.0, 1.0 - s["epochs"] / max(s["of"], 1))
    return seconds, unknown


def format_status(states: list[dict[str, Any]], driver: int | None = None) -> str:
    """A table of the cells, a line of counts per state and, while cells are left, an estimate of their time and
    whether a driver (pid `driver`, None: none) holds the bench."""
    lines = [f"{'cell':<36} {'state':<8} {'epochs':>7} {'train':>9}  note"]
    for s in states:
        note = f"pid {s['pid']}" if s["state"] == "running" and s["pid"] else (s["error"] or "")
        lines.append(f"{s['cell']:<36} {s['state']:<8} {s['epochs']:>3}/{s['of']:<3} "
                     f"{s['train_seconds'] / 60:>5.1f} min  {note}".rstrip())
    counts = {k: sum(s["state"] == k for s in states) for k in STATES}
    lines.append(", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" (of {len(states)} cells)")
    if counts["done"] < len(states):
        seconds, unknown = time_left(states)
        lines.append(f"left: about {seconds / 3600:.1f} h of cell time (each cell: its method's done cells' mean wall "
                     "time, times its share of epochs to run; cells run side by side divide it)"
                     + (f"; {unknown} cell(s) of methods with no done cell not counted" if unknown else ""))
        lines.append(f"a vireid bench driver is running on it (pid {driver})" if driver is not None else
                     "no vireid bench driver is running on it (cells run by --cell commands show as running)")
    return "\n".join(lines)
