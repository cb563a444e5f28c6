"""The `vireid` command: one entry point, sub-commands registered by the modules that own them.

Each sub-command module exposes `register(subparsers)`; its handler is a thin layer over a library
function. Importing these modules must not import torch (`vireid --help` stays fast). Library code
reports through `logging` (logger "vireid"); the command shows INFO records on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .core import VireidError

# The modules that register sub-commands, in help order.
_COMMAND_MODULES = (
    "vireid.data.synthetic.cli",  # synth
    "vireid.data.cli",  # data check
    "vireid.engine.cli",  # train, eval
    "vireid.demo",  # demo
    "vireid.report.cli",  # report, viz
    "vireid.serve.cli",  # index, search, serve, export
    "vireid.convert.cli",  # convert
    "vireid.bench.cli",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="vireid", description="Visible-infrared cross-modality person re-identification toolkit."
    )
    parser.add_argument("--version", action="version", version=f"vireid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`; a command that takes `overrides` also takes KEY=VALUE words after its options."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and not any(e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of the record (it may be replaced, e.g. by a test)."""

    @property
    def stream(self):  # noqa: D102
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # the base class assigns it once; sys.stdout is always used
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """Show vireid's log records as plain lines on stdout (once; a host application may configure its own)."""
    logger = logging.getLogger("vireid")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; VireidError becomes a one-line message and exit code 2."""
    parser = build_parser()
    args = parse_args(parser, argv)
    configure_logging()
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        rc = args.func(args)
    except VireidError as exc:
        print(f"vireid {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vireid {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
