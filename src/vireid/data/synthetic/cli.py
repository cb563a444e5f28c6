"""`vireid synth`: generate a SynthVI set in the SYSU-MM01, RegDB or LLCM layout (no torch import)."""

from __future__ import annotations

import argparse
import re

from ...core import ConfigError

_LAYOUTS = ("sysu", "regdb", "llcm")


def parse_size(text: str) -> tuple[int, int]:
    """'128x64' -> (128, 64): height x width in pixels."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise ConfigError(f"--size must be HEIGHTxWIDTH in pixels, e.g. 128x64; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` sub-command."""
    p = subparsers.add_parser(
        "synth",
        help="generate the synthetic cross-modality dataset (SynthVI) in a benchmark layout",
        description="Generate SynthVI, a procedural visible/infrared person dataset, in the on-disk layout "
                    "of SYSU-MM01, RegDB or LLCM. The same arguments give byte-identical files.",
    )
    p.add_argument("--layout", required=True, choices=_LAYOUTS, help="on-disk layout to write")
    p.add_argument("--out", required=True, help="output directory (replaced atomically when done)")
    p.add_argument("--ids", type=int, default=None,
                   help="number of identities (default: sysu 120, regdb 40, llcm 90)")
    p.add_argument("--images-per-camera", type=int, default=None, dest="images_per_camera",
                   help="images per person per camera, varied by up to +-K//4 (default: sysu 5, regdb 10, llcm 4)")
    p.add_argument("--size", default="128x64", help="image size HEIGHTxWIDTH (default 128x64)")
    p.add_argument("--difficulty", type=float, default=0.5,
                   help="0 (easy) .. 1 (hard): jitter, occlusion, noise, weakness of the visible-IR link")
    p.add_argument("--ir-consistency", type=float, default=1.0, dest="ir_consistency",
                   help="1 (default): a garment's infrared intensity is fixed by its colour (one mapping per "
                        "dataset); 0: drawn per person's garment, independently of colour; between: a mix")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPU cores)")
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it is a non-empty directory that is not a SynthVI set")
    p.add_argument("--no-progress", action="store_true", dest="no_progress", help="hide the progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .generator import synthesize

    size = parse_size(args.size)
    res = synthesize(args.layout, args.out, ids=args.ids, images_per_camera=args.images_per_camera, size=size,
                     difficulty=args.difficulty, seed=args.seed, force=args.force, workers=args.workers,
                     progress=not args.no_progress, ir_consistency=args.ir_consistency)
    if res.up_to_date:
        print(f"{res.path}: up to date (SynthVI {args.layout}, {res.images} images; --force rebuilds it)")
    else:
        rate = res.images / res.seconds if res.seconds > 0 else float("inf")
        print(f"{res.path}: wrote SynthVI {args.layout}, {res.images} images in {res.seconds:.1f} s "
              f"({rate:.0f} images/s)")
    return 0
