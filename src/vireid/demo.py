"""`vireid demo`: synthesise a SYSU-layout set, train a synthetic preset on the CPU (the baseline unless
`--config` names another), compare with the untrained network under SYSU all-search and indoor-search
(single-shot, 10 trials), write the run's HTML report (`vireid.report`: curves, results, rank lists, embeddings,
the modality gap, per-camera rank-1 and the method's own pictures) as <out>/report.html with figures/ beside it.

The presets are the shipped `configs/synthetic/*.yaml`, found as package data (`vireid.configs`),
so the demo runs from an installed wheel in any directory. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from .core import ConfigError

log = logging.getLogger(__name__)

DEMO_DATA: dict[str, Any] = {"layout": "sysu", "ids": 240, "images_per_camera": 5, "size": (128, 64),
                             "difficulty": 0.5, "seed": 0}
MODES = ("all", "indoor")
# the report shows the all-search protocol the demo's table starts with
REPORT_OPTIONS = {"mode": "all", "shots": 1, "gallery_sampler": "agw", "trials": 10}


def _summary(results: Any, kind: str = "bn") -> dict[str, float]:
    protocols = results.to_json()["protocols"]
    entry = next(iter(protocols.values()))["features"][kind]["mean"]
    return {k: float(entry[k]) for k in ("rank1", "mAP", "mINP")}


def run_demo(out: Path, *, data_root: Path = Path("data/synthetic-sysu"), epochs: int | None = None,
             ids: int | None = None, progress: bool = True, config: str = "configs/synthetic/baseline.yaml",
             overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the whole demo into `out` and return what demo.json holds."""
    from .config import load_config
    from .data.synthetic import generate
    from .engine.evaluate import evaluate_method
    from .engine.trainer import Trainer, ensure_dataset
    from .methods import build_method
    from .report.build import build_report, demo_section
    from .runs import RunDir
    from .utils.atomic import write_json
    from .utils.seed import seed_everything

    for option, value in (("--epochs", epochs), ("--ids", ids)):
        if value is not None and value < 1:
            raise ConfigError(f"vireid demo {option} must be >= 1, got {value}; pass {option} N with N >= 1, or leave "
                              "it out for the preset's value")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if not (data_root / "manifest.json").is_file():
        spec = dict(DEMO_DATA, ids=DEMO_DATA["ids"] if ids is None else ids)
        log.info("[demo] synthesising a SYSU-layout set (%d identities) into %s", spec["ids"], data_root)
        generate(spec.pop("layout"), data_root, progress=progress, **spec)
    ov = [f"data.root={data_root}", *overrides] + ([f"train.epochs={epochs}"] if epochs is not None else [])
    cfg = load_config(config, ov)
    run = RunDir(out / "run")
    log.info("[demo] training %s (%s, %dx%d) for %d epochs on the CPU -> %s", cfg.method.name, cfg.model.arch,
             cfg.data.height, cfg.data.width, cfg.train.epochs, run.path)
    dataset = ensure_dataset(cfg, progress=False)  # read once: training and the four evaluations share it
    trainer = Trainer(cfg, run, resume="auto" if run.is_trained else None, progress=progress, dataset=dataset)
    trained = trainer.fit()
    seed_everything(cfg.train.seed)
    untrained = build_method(cfg, dataset.num_classes)  # the same network at its initialisation
    rows: dict[str, dict[str, dict[str, float]]] = {"trained": {}, "untrained": {}}
    for label, method in (("trained", trained), ("untrained", untrained)):
        for mode in MODES:
            log.info("[demo] evaluating the %s network, SYSU %s-search single-shot, 10 trials", label, mode)
            res = evaluate_method(method.eval(), cfg, protocol="sysu", dataset=dataset,
                                  options={"mode": mode, "shots": 1, "gallery_sampler": "agw", "trials": 10},
                                  out_dir=(out / f"eval-{label}-{mode}"), device="cpu", progress=progress,
                                  features=("bn", "pool"), meta={"model": label})
            rows[label][mode] = _summary(res, "bn")
    seconds = time.perf_counter() - t0
    table = format_demo_table(rows)
    print(table)
    log.info("[demo] writing the report (features, evaluation, figures)")
    t_report = time.perf_counter()
    page = build_report(trained, cfg, dataset.test, out=out, run=run, protocol="sysu", options=dict(REPORT_OPTIONS),
                        root=dataset.root, device="cpu", progress=progress, title="vireid demo",
                        intro=[demo_section(table, seconds)])
    demo = {"trained": rows["trained"], "untrained": rows["untrained"], "seconds": seconds,
            "report_seconds": time.perf_counter() - t_report}
    write_json(out / "demo.json", demo)
    log.info("[demo] done in %.0fs: %s, %s", time.perf_counter() - t0, out / "demo.json", page)
    return demo


def format_demo_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    """Trained beside untrained, in percent (10-trial means, bn feature)."""
    lines = ["SYSU-layout synthetic set, single-shot, 10 trials, bn feature (percent)",
             f"{'search':<8} {'model':<10} {'rank1':>7} {'mAP':>7} {'mINP':>7}"]
    for mode in MODES:
        for label in ("trained", "untrained"):
            m = rows[label][mode]
            lines.append(f"{mode:<8} {label:<10} {100 * m['rank1']:7.2f} {100 * m['mAP']:7.2f} {100 * m['mINP']:7.2f}")
        t, u = rows["trained"][mode], rows["untrained"][mode]
        ratios = [t[k] / max(u[k], 1e-9) for k in ("rank1", "mAP", "mINP")]
        lines.append(f"{mode:<8} {'ratio':<10} " + " ".join(f"{r:6.2f}x" for r in ratios))
    return "\n".join(lines)


def draw_translations(method: Any, cfg: Any, dataset: Any, path: Path, pairs: int = 6) -> Path | None:
    """A generative method's translations of same-identity test pairs into `path`; None (nothing written) when
    the method makes no images."""
    from .viz.translations import render_translations, same_identity_pairs, translate_samples

    images = translate_samples(method.eval(), same_identity_pairs(dataset.test, pairs, seed=cfg.train.seed),
                               cfg.data.height, cfg.data.width)
    if not images:
        return None
    return render_translations(images, path, tile=(cfg.data.height * 2, cfg.data.width * 2))


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(Path(args.out), data_root=Path(args.data), epochs=args.epochs, ids=args.ids,
             progress=not args.no_progress, config=args.config)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `vireid demo`."""
    p = sub.add_parser("demo", help="synthesise data, train a synthetic preset on the CPU, evaluate, write a report")
    p.add_argument("--config", default="configs/synthetic/baseline.yaml",
                   help="the preset to train (default: the baseline; e.g. configs/synthetic/jsia.yaml)")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--data", default="data/synthetic-sysu", help="synthetic SYSU-layout set (made if missing)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--ids", type=int, default=None, help="identities of the synthetic set if it is generated")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
