"""`vireid data ...` sub-commands (currently `check`); importing this module does not import torch."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data` with its nested sub-command `check` to the vireid parser."""
    data = subparsers.add_parser("data", help="inspect datasets on disk",
                                 description="Inspect datasets on disk.")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 1)[1])

    check = sub.add_parser(
        "check", help="parse a dataset, print its counts and checks, optionally decode every image",
        description="Parse dataset NAME at ROOT, print identities and images per split, modality and camera, "
                    "the checks run and OK; exit code 1 with one line per problem.",
    )
    check.add_argument("name", help="registered dataset reader: sysu, regdb, llcm, folder")
    check.add_argument("root", help="dataset root folder")
    check.add_argument("--decode", action="store_true", help="decode every image and list undecodable files")
    check.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                       help="reader option, repeatable (sysu: train_split=train; regdb: trial=3)")
    check.add_argument("--workers", type=int, default=0, help="decoding threads (default: 2 x CPU cores, max 8)")
    check.add_argument("--no-progress", action="store_true", help="hide the decoding progress bar")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Handler of `vireid data check`: print the report; 0 when OK, 1 when there are problems."""
    from ..config import parse_key_values
    from .check import check_dataset

    report = check_dataset(args.name, args.root, decode=args.decode, workers=args.workers,
                           progress=not args.no_progress, **parse_key_values(args.option))
    print(report.format())
    return 0 if report.ok else 1
