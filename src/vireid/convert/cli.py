"""`vireid convert`: an official AGW, CAJ, MPANet, LbA or JSIA-ReID checkpoint as a vireid run (no torch at import)."""

from __future__ import annotations

import argparse

from .sources import DATASETS, SOURCES


def cmd_convert(args: argparse.Namespace) -> int:
    from .official import convert_official

    result = convert_official(args.source, args.checkpoint, args.out, dataset=args.dataset,
                              overrides=args.overrides, num_classes=args.num_classes, epoch=args.epoch)
    print(result.describe())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add convert."""
    sources = ", ".join(f"{s.name} ({s.repo})" for s in SOURCES.values())
    p = sub.add_parser("convert", help="import an official checkpoint (AGW, CAJ, MPANet, LbA, JSIA-ReID) as a run",
                       description="Write a vireid run directory from the weights the authors of a method released "
                                   f"or their code saved: {sources}. The run evaluates with the official test-time "
                                   "settings (docs/official-weights.md); vireid eval, index, search, export and "
                                   "FeatureExtractor take it as any run.")
    p.add_argument("--from", dest="source", required=True, choices=list(SOURCES),
                   help="the code base that saved the checkpoint")
    p.add_argument("checkpoint", help="the official file (jsia: the folder of model-0..3_<epoch>.pkl or one of them)")
    p.add_argument("--out", required=True, help="the new run directory (must not exist, or be empty)")
    p.add_argument("--dataset", default="sysu", choices=list(DATASETS),
                   help="the preset and official test-time settings of this dataset (default sysu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable: data.root=DIR, eval.options={...}; also accepted as bare "
                        "KEY=VALUE words")
    p.add_argument("--num-classes", type=int, help="refuse a checkpoint whose classifier has another number of "
                                                   "identities (SYSU-MM01 395, RegDB 206, LLCM 713)")
    p.add_argument("--epoch", type=int, help="jsia: the epoch of the files in the folder (the released one is 649)")
    p.set_defaults(func=cmd_convert)
