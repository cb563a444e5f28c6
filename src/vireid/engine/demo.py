"""`vireid demo`: synthesise a SYSU-layout set, train the baseline preset on the CPU, compare with the
untrained network under SYSU all-search and indoor-search (single-shot, 10 trials), write a report."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import torch

from ..config import load_config
from ..core import ConfigError
from ..utils.atomic import atomic_path, write_json, write_text

DEMO_DATA = {"layout": "sysu", "ids": 240, "images_per_camera": 5, "size": (128, 64), "difficulty": 0.5, "seed": 0}


def find_config(relative: str) -> Path:
    """A shipped config: ./configs/<relative>, else the configs/ folder of the source checkout."""
    for base in (Path.cwd() / "configs", Path(__file__).resolve().parents[3] / "configs"):
        if (base / relative).is_file():
            return base / relative
    raise ConfigError(f"config configs/{relative} not found (looked in ./configs and the vireid source tree)")


def _summary(results: Any, kind: str = "bn") -> dict[str, float]:
    protocols = results.to_json()["protocols"]
    entry = next(iter(protocols.values()))["features"][kind]["mean"]
    return {k: float(entry[k]) for k in ("rank1", "mAP", "mINP")}


def run_demo(out: Path, *, data_root: Path = Path("data/synthetic-sysu"), epochs: int | None = None,
             ids: int | None = None, progress: bool = True, config: str = "synthetic/baseline.yaml",
             overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the whole demo into `out` and return what demo.json holds."""
    from ..data.synthetic import generate
    from ..methods import build_method
    from ..utils.seed import seed_everything
    from .evaluate import evaluate_method
    from .trainer import Trainer, ensure_dataset

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if not (data_root / "manifest.json").is_file():
        spec = dict(DEMO_DATA, ids=ids or DEMO_DATA["ids"])
        print(f"[demo] synthesising a SYSU-layout set ({spec['ids']} identities) into {data_root}", flush=True)
        generate(spec.pop("layout"), data_root, progress=progress, **spec)
    ov = [f"data.root={data_root}", *overrides] + ([f"train.epochs={epochs}"] if epochs else [])
    cfg = load_config(find_config(config), ov)
    run_dir = out / "run"
    resume = "auto" if (run_dir / "checkpoints" / "last.pt").exists() else None
    print(f"[demo] training {cfg.method.name} ({cfg.model.arch}, {cfg.data.height}x{cfg.data.width}) "
          f"for {cfg.train.epochs} epochs on the CPU -> {run_dir}", flush=True)
    trainer = Trainer(cfg, run_dir, resume=resume, progress=progress)
    trained = trainer.fit()
    dataset = ensure_dataset(cfg, progress=False)
    seed_everything(cfg.train.seed)
    untrained = build_method(cfg, dataset.num_classes)  # the same network at its initialisation
    rows: dict[str, dict[str, dict[str, float]]] = {"trained": {}, "untrained": {}}
    all_results = {}
    for label, method in (("trained", trained), ("untrained", untrained)):
        for mode in ("all", "indoor"):
            print(f"[demo] evaluating the {label} network, SYSU {mode}-search single-shot, 10 trials", flush=True)
            res = evaluate_method(method.eval(), cfg, protocol="sysu",
                                  options={"mode": mode, "shots": 1, "gallery_sampler": "agw", "trials": 10},
                                  out_dir=(out / f"eval-{label}-{mode}"), device="cpu", progress=progress,
                                  features=("bn", "pool"), meta={"model": label})
            rows[label][mode] = _summary(res, "bn")
            all_results[(label, mode)] = res
    seconds = time.perf_counter() - t0
    demo = {"trained": rows["trained"], "untrained": rows["untrained"], "seconds": seconds}
    write_json(out / "demo.json", demo)
    table = format_demo_table(rows)
    print(table)
    ranklist = out / "ranklist.png"
    draw_ranklist(trained, cfg, dataset, ranklist)
    write_report(out / "report.html", table, demo, ranklist.name, cfg)
    print(f"[demo] done in {seconds:.0f}s: {out / 'demo.json'}, {out / 'report.html'}, {ranklist}", flush=True)
    return demo


def format_demo_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    """Trained beside untrained, in percent (10-trial means, bn feature)."""
    lines = ["SYSU-layout synthetic set, single-shot, 10 trials, bn feature (percent)",
             f"{'search':<8} {'model':<10} {'rank1':>7} {'mAP':>7} {'mINP':>7}"]
    for mode in ("all", "indoor"):
        for label in ("trained", "untrained"):
            m = rows[label][mode]
            lines.append(f"{mode:<8} {label:<10} {100 * m['rank1']:7.2f} {100 * m['mAP']:7.2f} {100 * m['mINP']:7.2f}")
        t, u = rows["trained"][mode], rows["untrained"][mode]
        ratios = [t[k] / max(u[k], 1e-9) for k in ("rank1", "mAP", "mINP")]
        lines.append(f"{mode:<8} {'ratio':<10} " + " ".join(f"{r:6.2f}x" for r in ratios))
    return "\n".join(lines)


@torch.no_grad()
def draw_ranklist(method, cfg, dataset, path: Path, num_queries: int = 6, topk: int = 8) -> None:
    """Infrared queries with their top visible matches; correct matches framed green, wrong ones red."""
    from PIL import Image, ImageDraw

    from ..core import Modality
    from ..data.images import load_rgb
    from .extract import make_extractor

    test = dataset.test
    gallery = sorted(s for s in test if s.modality is Modality.VISIBLE)
    irs = sorted(s for s in test if s.modality is Modality.INFRARED)
    step = max(len(irs) // num_queries, 1)
    queries = irs[::step][:num_queries]
    feats = make_extractor(method.eval(), cfg.data.height, cfg.data.width, torch.device("cpu"), kinds=("bn",))(
        queries + gallery)["bn"]
    q, g = feats[: len(queries)], feats[len(queries):]
    order = torch.argsort(-(q @ g.T), dim=1, stable=True)[:, :topk]
    h, w, pad = cfg.data.height, cfg.data.width, 4
    canvas = Image.new("RGB", ((topk + 1) * (w + 2 * pad) + 12, num_queries * (h + 2 * pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (qs, row) in enumerate(zip(queries, order.tolist())):
        y = r * (h + 2 * pad)
        canvas.paste(load_rgb(qs.path).resize((w, h)), (pad, y + pad))
        draw.rectangle([pad - 2, y + pad - 2, pad + w + 1, y + pad + h + 1], outline=(60, 60, 200), width=2)
        for c, gi in enumerate(row):
            x = (c + 1) * (w + 2 * pad) + 12
            canvas.paste(load_rgb(gallery[gi].path).resize((w, h)), (x + pad, y + pad))
            colour = (0, 170, 0) if gallery[gi].pid == qs.pid else (210, 0, 0)
            draw.rectangle([x + pad - 3, y + pad - 3, x + pad + w + 2, y + pad + h + 2], outline=colour, width=3)
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")


def write_report(path: Path, table: str, demo: dict, ranklist: str, cfg) -> None:
    """A small self-contained HTML report."""
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>vireid demo</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}pre{{background:#f4f4f4;padding:1em}}</style>
</head><body><h1>vireid demo</h1>
<p>Method <b>{html.escape(cfg.method.name)}</b> ({html.escape(getattr(cfg.method, 'variant', ''))}),
{html.escape(cfg.model.arch)}, {cfg.data.height}x{cfg.data.width}, {cfg.train.epochs} epochs on the CPU,
trained and evaluated on the built-in synthetic SYSU-layout set (not the real SYSU-MM01).
Total time {demo['seconds']:.0f} s.</p>
<pre>{html.escape(table)}</pre>
<h2>Rank lists</h2><p>Infrared queries (blue) and their top visible matches: green = same person, red = another person.</p>
<img src="{html.escape(ranklist)}" alt="rank lists">
</body></html>"""
    write_text(path, body)
