"""`vireid train` and `vireid eval` (thin layers over the engine's library functions)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import parse_key_values


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..utils.distributed import cleanup
    from .trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    trainer = Trainer(cfg, out, resume=args.resume, progress=not args.no_progress)
    trainer.fit()
    if trainer.dist.is_main:
        print(f"trained: {trainer.run.checkpoint('last')}")
    cleanup(trainer.dist)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    target = Path(args.run)
    options = parse_key_values(args.option, example="--option mode=indoor")
    if target.suffix == ".npz":
        from .evaluate import evaluate_npz

        if not args.protocol:
            from ..core import ConfigError

            raise ConfigError("evaluating a feature file needs --protocol (sysu, regdb or llcm)")
        results = evaluate_npz(target, args.protocol, options, out_dir=args.out,
                               distance=args.distance or "cosine", rerank=args.rerank)
        print(results.format_table())
        return 0
    from ..config import options_dict
    from ..inference import load_trained
    from ..runs import RunDir
    from ..utils.distributed import cleanup, init_distributed, resolve_device
    from .evaluate import evaluate_method

    dist = init_distributed(args.device)
    device = resolve_device(args.device, dist, key="--device")
    ck = RunDir(target).find_checkpoint(args.checkpoint) if target.is_dir() else target
    out_dir = Path(args.out) if args.out else results_dir(target, ck)
    cfg, method, ck = load_trained(ck, device=device)
    if not args.protocol:  # the run's protocol: --option changes its configured options
        options = {**options_dict(cfg.eval.options), **options}
    results = evaluate_method(method, cfg, protocol=args.protocol, options=options,
                              root=args.data_root, out_dir=out_dir if dist.is_main else None, device=device,
                              dist=dist, flip=True if args.flip else None, rerank=True if args.rerank else None,
                              meta={"checkpoint": str(ck)})
    if dist.is_main:
        print(f"checkpoint: {ck}")
        print(results.format_table())
    cleanup(dist)
    return 0


def results_dir(target: Path, checkpoint: Path) -> Path:
    """Where `vireid eval TARGET` writes results.json without --out: the run directory TARGET when the checkpoint
    is one of its own; for a checkpoint file, its run (the folder above checkpoints/) or its folder. A checkpoint
    of another run is refused: its numbers must not replace TARGET's results."""
    from ..core import ConfigError
    from ..runs import RunDir

    def run_of(ck: Path) -> Path:
        run = RunDir(ck.parent.parent)
        return run.path if ck.parent == run.checkpoints else ck.parent

    if not target.is_dir():
        return run_of(target)
    own = RunDir(target).checkpoints.resolve()
    if checkpoint.resolve().parent == own:
        return target
    raise ConfigError(f"--checkpoint {checkpoint} is not one of {target}'s checkpoints, so its results must not "
                      f"replace {RunDir(target).results}; pass --out DIR for them, or evaluate that checkpoint "
                      f"itself: vireid eval {checkpoint} (results go to {run_of(checkpoint)})")


def add_test_set_arguments(p: argparse.ArgumentParser) -> None:
    """The options of every command that scores a trained run on a test set (eval, report, viz): --protocol,
    --option, --checkpoint, --data-root, --device."""
    p.add_argument("--protocol", help="sysu | regdb | llcm (default: the run's eval.protocol)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="protocol option, repeatable: mode=indoor, shots=10, gallery_sampler=official, trials=3, ...")
    p.add_argument("--checkpoint", default="auto", help="auto (best, else last) | best | last | PATH")
    p.add_argument("--data-root", help="dataset root (default: the run's data.root)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one) | cpu | cuda | cuda:N")


def register(sub: argparse._SubParsersAction) -> None:
    """Add train and eval."""
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
    add_test_set_arguments(p)
    p.add_argument("--flip", action="store_true", help="CAJ flip fusion at test time")
    p.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranking (separately)")
    p.add_argument("--distance", choices=["cosine", "euclidean"])
    p.add_argument("--out", help="where results.json goes (default: the run directory; needed with a --checkpoint "
                                 "of another run)")
    p.set_defaults(func=cmd_eval)
