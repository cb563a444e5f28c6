"""`vireid train`, `vireid eval` and `vireid demo` (thin layers over the engine's library functions)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _parse_options(pairs: list[str]) -> dict:
    import yaml

    from ..core import ConfigError

    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--option {p!r} must look like key=value (e.g. mode=indoor)")
        k, _, v = p.partition("=")
        out[k.strip()] = yaml.safe_load(v)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from .trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    trainer = Trainer(cfg, out, resume=args.resume, progress=not args.no_progress)
    trainer.fit()
    if trainer.dist.is_main:
        print(f"trained: {out / 'checkpoints' / 'last.pt'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:

    target = Path(args.run)
    options = _parse_options(args.option)
    if target.suffix == ".npz":
        from .evaluator import evaluate_npz

        if not args.protocol:
            from ..core import ConfigError

            raise ConfigError("evaluating a feature file needs --protocol (sysu, regdb or llcm)")
        results = evaluate_npz(target, args.protocol, options, out_dir=args.out,
                               distance=args.distance or "cosine", rerank=args.rerank)
        print(results.format_table())
        return 0
    from .distributed import init_distributed, resolve_device
    from .evaluate import evaluate_method, load_trained

    dist = init_distributed(args.device)
    device = resolve_device(args.device, dist)
    cfg, method, ck = load_trained(target, args.checkpoint, device)
    out_dir = Path(args.out) if args.out else target if target.is_dir() else ck.parent
    results = evaluate_method(method, cfg, protocol=args.protocol, options=options if args.protocol else None,
                              root=args.data_root, out_dir=out_dir if dist.is_main else None, device=device,
                              dist=dist, flip=True if args.flip else None, rerank=True if args.rerank else None,
                              meta={"checkpoint": str(ck)})
    if dist.is_main:
        print(f"checkpoint: {ck}")
        print(results.format_table())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), data_root=Path(args.data), epochs=args.epochs, ids=args.ids,
             progress=not args.no_progress)
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add train, eval and demo."""
    p = sub.add_parser("train", help="train a method from a config file",
                       description="Train a method. Any config key can be overridden as key.sub=value.")
    p.add_argument("config", help="YAML config (configs/...)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=5 data.root=DIR")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", help="'auto' (the run's last checkpoint) or a checkpoint path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run (or a saved .npz feature file)")
    p.add_argument("run", help="run directory, checkpoint file, or features .npz")
    p.add_argument("--protocol", help="sysu | regdb | llcm (default: the run's eval.protocol)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="protocol option, repeatable: mode=indoor, shots=10, gallery_sampler=official, trial=3, ...")
    p.add_argument("--checkpoint", default="auto", help="auto (best, else last) | best | last | PATH")
    p.add_argument("--data-root", help="dataset root (default: the run's data.root)")
    p.add_argument("--flip", action="store_true", help="CAJ flip fusion at test time")
    p.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranking (separately)")
    p.add_argument("--distance", choices=["cosine", "euclidean"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="where results.json goes (default: the run directory)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="synthesise data, train the baseline on the CPU, evaluate, write a report")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--data", default="data/synthetic-sysu", help="synthetic SYSU-layout set (made if missing)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--ids", type=int, default=None, help="identities of the synthetic set if it is generated")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

