"""The `vireid` command: one entry point, sub-commands registered by the modules that own them.

Each sub-command module exposes `register(subparsers)`; its handler is a thin layer over a library
function. Modules are imported lazily-light: importing them must not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .core import VireidError

# (module, description) for each group of sub-commands, in help order.
_COMMAND_MODULES = (
    "vireid.data.synthetic.cli",  # synth
    "vireid.data.cli",  # data check
    "vireid.engine.cli",  # train, eval, demo
    "vireid.serve.cli",  # index, search, serve, export
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
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; VireidError becomes a one-line message and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
