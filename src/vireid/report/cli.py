"""`vireid report RUN` (the whole HTML report) and `vireid viz KIND RUN` (one figure): thin layers over
`vireid.report.make_report` and `vireid.report.single.make_figure`. Importing this module does not import torch."""

from __future__ import annotations

import argparse

from ..config import parse_key_values

KIND_HELP = {
    "curves": "training curves from metrics.jsonl", "cmc": "CMC curves to rank 20",
    "ranklist": "rank lists of the best/median/worst queries (--which)", "tsne": "t-SNE of a sample of identities",
    "gap": "modality gap: same/different-identity distances, AUCs", "cameras": "rank-1 per camera pair",
    "patterns": "MPANet pattern maps", "correspondences": "LbA correspondences",
    "translations": "translated images (jsia, d2rl)",
}


def cmd_report(args: argparse.Namespace) -> int:
    from .build import make_report

    options = parse_key_values(args.option, example="--option mode=indoor")
    page = make_report(args.run, protocol=args.protocol, options=options, out=args.out, checkpoint=args.checkpoint,
                       device=_device(args.device), data_root=args.data_root, progress=not args.no_progress,
                       rerank=True if args.rerank else None, flip=True if args.flip else None)
    print(f"report: {page}")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from .single import make_figure

    options = parse_key_values(args.option, example="--option mode=indoor")
    path = make_figure(args.kind, args.run, out=args.out, protocol=args.protocol, options=options,
                       checkpoint=args.checkpoint, device=_device(args.device), data_root=args.data_root,
                       feature=args.feature, which=args.which, seed=args.seed, num_ids=args.ids,
                       progress=not args.no_progress)
    print(f"{args.kind}: {path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    from ..engine.cli import add_test_set_arguments

    add_test_set_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _device(pref: str) -> str:
    """--device resolved (auto: a GPU when there is one), or a one-line error naming --device."""
    from ..utils.distributed import DistInfo, resolve_device

    return str(resolve_device(pref, DistInfo(), key="--device"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add `vireid report` and `vireid viz`."""
    p = sub.add_parser("report", help="write a run's HTML report (curves, results, rank lists, embeddings, ...)",
                       description="Write a self-contained HTML report of a trained run: the run, training curves, "
                                   "results, CMC, rank lists, t-SNE, modality gap, per-camera rank-1 and the "
                                   "method's own pictures. Figures go beside the page in figures/.")
    p.add_argument("run", help="run directory (or a checkpoint file)")
    p.add_argument("--out", help="output folder (default <run>/report); the page is report.html in it")
    p.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranking (separately)")
    p.add_argument("--flip", action="store_true", help="CAJ flip fusion at test time")
    _common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("viz", help="draw one figure of a run (or of a .npz feature file)",
                       description="Draw one figure as PNG, SVG or PDF (by --out's suffix). Kinds: "
                                   + "; ".join(f"{k}: {v}" for k, v in KIND_HELP.items())
                                   + ". A .npz feature file (vireid eval's format) gives tsne and gap, and cmc, "
                                     "ranklist and cameras with --protocol.")
    p.add_argument("kind", choices=list(KIND_HELP), metavar="KIND", help=", ".join(KIND_HELP))
    p.add_argument("run", help="run directory, checkpoint file, or features .npz")
    p.add_argument("--out", help="output file .png/.svg/.pdf (default <run>/report/figures/<kind>.png)")
    p.add_argument("--feature", help="feature kind to draw (default: the method's reported one, or bn)")
    p.add_argument("--which", default="best", choices=["best", "median", "worst"], help="ranklist: which queries")
    p.add_argument("--ids", type=int, default=10, help="tsne: identities to sample (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples drawn (default 0)")
    _common(p)
    p.set_defaults(func=cmd_viz)
