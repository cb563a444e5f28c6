"""`vireid bench SPEC --out DIR`: run a bench (methods x datasets x seeds) and write its leaderboard (no torch
import at registration)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec import BenchSpec


def _summary(board: dict) -> str:
    """A few console lines: each row's R1 and mAP (percent, mean ± std over seeds) and where the files are."""
    lines = []
    for row in board["rows"]:
        m = row["measured"]
        if m["mAP"]["mean"] is None:
            text = "no finished seed"
        else:
            text = (f"R1 {100 * m['rank1']['mean']:.2f} ± {100 * (m['rank1']['std'] or 0):.2f}  "
                    f"mAP {100 * m['mAP']['mean']:.2f} ± {100 * (m['mAP']['std'] or 0):.2f}")
        tag = " +rerank" if row["rerank"] else ""
        lines.append(f"{row['protocol']:<24} {row['method'] + tag:<24} {text}  "
                     f"({len(row['seeds_done'])}/{len(row['seeds'])} seeds)")
    cells = board["cells"]
    lines.append(f"cells: {cells['done']}/{cells['total']} done, {cells['failed']} failed; leaderboard: "
                 f"{Path(board['bench_dir']) / 'leaderboard.md'} (.csv, .html, .json)")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..core import ConfigError
    from .launch import print_commands, run_bench, write_leaderboard_only
    from .spec import load_spec

    out = Path(args.out) if args.out else Path("runs") / f"bench-{Path(args.spec).stem}"
    if (args.cell or args.print_commands or args.status) and (args.publish or args.readme or args.restore):
        other = "--cell" if args.cell else "--print-commands" if args.print_commands else "--status"
        raise ConfigError(f"--publish, --readme and --restore go with a run of the bench or --leaderboard-only, not "
                          f"with {other}")
    if args.only and (args.cell or args.status or args.leaderboard_only):
        other = "--cell" if args.cell else "--status" if args.status else "--leaderboard-only"
        raise ConfigError(f"--only chooses the cells a run (or --print-commands) trains, not with {other}")
    spec = load_spec(args.spec)  # once: every step below reads the same spec
    if args.status:
        from ..utils.atomic import lock_holder
        from .layout import BenchDir
        from .status import cell_states, format_status

        if not out.is_dir():
            raise ConfigError(f"--out {out} does not exist: no cell of this bench has run there")
        print(format_status(cell_states(spec, out), driver=lock_holder(BenchDir(out).lock_file)))
        return 0
    if args.cell:
        from .cell import run_cell

        record = run_cell(spec, out, args.cell, progress=not args.no_progress)
        _close_process_group()
        print(f"{args.cell}: {record['status']}" + (f" ({record['error']})" if record.get("error") else ""))
        return 0 if record["status"] == "done" else 1
    if args.print_commands:
        print("\n".join(print_commands(spec, out, args.only)))
        return 0
    if args.readme:
        from .publish import check_readme

        check_readme(args.readme)  # before hours of training, not after
    if args.restore:
        from .archive import restore_cells

        restored = restore_cells(spec, args.restore, out)
        print(f"restored {len(restored)} done cell(s) from {args.restore}")
    if args.leaderboard_only:
        board = write_leaderboard_only(spec, out)
    else:
        board = run_bench(spec, out, launcher=args.launcher, isolate=args.isolate, jobs=args.jobs,
                          progress=not args.no_progress, only=args.only)
    print(_summary(board))
    _publish(board, spec, out, args.publish, args.readme)
    return 1 if board["cells"]["failed"] else 0


def _publish(board: dict, spec: BenchSpec, out: Path, dest: str | None, readme: str | None) -> None:
    """--publish: copy the leaderboard's files and done cells to DEST; --readme: write its summary into the
    README's block."""
    from .publish import publish, update_readme

    if dest:
        board = publish(spec, out, dest)
        print(f"published: {dest}")
    if readme:
        update_readme(readme, board, dest or out)
        print(f"README block updated: {readme}")


def _close_process_group() -> None:
    """End the torchrun process group a cell of several GPUs opened (the trainer opens it)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench`."""
    p = sub.add_parser("bench", help="run methods x datasets x seeds under one protocol and write a leaderboard",
                       description="Run every cell (method x dataset x seed) of a bench spec into ordinary run "
                                   "directories under --out, skipping finished cells, then write "
                                   "leaderboard.{md,csv,html,json}. See docs/bench.md.")
    p.add_argument("spec", help="bench spec YAML (benchmarks/tiny.yaml, benchmarks/synthetic.yaml)")
    p.add_argument("--out", help="bench directory (default runs/bench-<spec name>)")
    p.add_argument("--launcher", choices=["local", "submitit"],
                   help="local: cells one after another here (default, or the spec's launcher.kind); submitit: one "
                        "job per cell (SLURM, or launcher.submitit.cluster: local)")
    p.add_argument("--isolate", action="store_true", help="local launcher: each cell in a process of its own")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="local launcher: N cells side by side, each a process of its own with 1/N of the CPU "
                        "threads (and its own GPUs); default the spec's launcher.jobs, or 1")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", action="store_true",
                      help="print one shell command per pending cell (for any scheduler) and the leaderboard command")
    mode.add_argument("--cell", metavar="ID", help="run only this cell (METHOD/DATASET/seedN), as those commands do")
    mode.add_argument("--leaderboard-only", action="store_true",
                      help="write the leaderboard of the cells already run, run nothing (also while the bench runs)")
    mode.add_argument("--status", action="store_true",
                      help="print each cell's state (done, failed, running, partial, pending), epochs and training "
                           "time so far; writes nothing")
    p.add_argument("--only", metavar="PATTERN", action="append",
                   help="run (or print the commands of) only the cells whose METHOD/DATASET/seedN matches this "
                        "shell-style pattern, e.g. 'mpanet/*/seed2' (repeat it for more); the leaderboard still "
                        "counts every done cell")
    p.add_argument("--publish", metavar="DIR",
                   help="also copy the leaderboard's files (.md, .csv, .html, .json, CMC plots) and its done cells "
                        "(records, results.json, config, metrics; no checkpoints) to DIR, e.g. a folder of the "
                        "repository")
    p.add_argument("--restore", metavar="DIR",
                   help="first copy into --out the done cells that DIR (a --publish folder) holds and --out has not "
                        "started: they are not trained again, and the leaderboard counts them")
    p.add_argument("--readme", metavar="FILE",
                   help="also write the leaderboard's summary into FILE between its '<!-- leaderboard:begin -->' "
                        "and '<!-- leaderboard:end -->' lines, linking the published (or BENCH_DIR's) leaderboard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)
