"""Trainer step vs a bare PyTorch loop (same model, batch, optimizer), and the data loader alone.

Prints images/s of each and two ratios, measured side by side in one run:
  trainer / bare loop   (target >= 0.95: the engine adds no measurable overhead)
  loader / model        (target >= 3 with 2 workers: the loader is never the bottleneck)

    python benchmarks/train_throughput.py [--data data/synthetic-sysu] [--steps 20] [--height 128 --width 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def bare_step(method, optimizer, batch, margin_unused=None):
    """What one would write by hand: forward, CE + triplet, zero_grad, backward, step."""
    from vireid.losses import cross_entropy, weighted_regularized_triplet

    pooled, feat = method(batch.images, batch.modalities)
    loss = cross_entropy(method.classifier(feat), batch.labels) + weighted_regularized_triplet(pooled, batch.labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/synthetic-sysu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    from vireid.config import load_config
    from vireid.data.loading import build_train_loader
    from vireid.engine.stepper import TrainStepper
    from vireid.engine.trainer import ensure_dataset
    from vireid.methods import build_method

    root = Path(args.data)
    if not (root / "manifest.json").exists():
        from vireid.data.synthetic import generate

        generate("sysu", root, ids=240, images_per_camera=5, progress=False)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs/synthetic/baseline.yaml",
                      [f"data.root={root}", f"data.height={args.height}", f"data.width={args.width}",
                       f"data.num_workers={args.workers}", "train.progress=false"])
    dataset = ensure_dataset(cfg, progress=False)
    loader, sampler = build_train_loader(dataset, cfg.data, cfg.sampler, cfg.augment, cache_dir=Path("runs/.cache"),
                                         seed=0, progress=False)
    sampler.set_epoch(0)
    it = iter(loader)
    batches = [next(it) for _ in range(4)]
    bsz = len(batches[0])

    torch.manual_seed(0)
    engine_model = build_method(cfg, dataset.num_classes).train()
    torch.manual_seed(0)
    bare_model = build_method(cfg, dataset.num_classes).train()
    stepper = TrainStepper(engine_model.optimizers())
    bare_opt = bare_model.optimizers()["main"][0]

    def timed(fn, n):
        t0 = time.perf_counter()
        for i in range(n):
            fn(batches[i % len(batches)])
        return n * bsz / (time.perf_counter() - t0)

    warm = 3
    timed(lambda b: engine_model.training_step(b, stepper), warm)
    timed(lambda b: bare_step(bare_model, bare_opt, b), warm)
    engine_rates, bare_rates = [], []
    for _ in range(3):  # interleaved rounds so machine noise hits both alike
        engine_rates.append(timed(lambda b: engine_model.training_step(b, stepper), args.steps // 3 or 1))
        bare_rates.append(timed(lambda b: bare_step(bare_model, bare_opt, b), args.steps // 3 or 1))
    engine = sorted(engine_rates)[1]
    bare = sorted(bare_rates)[1]

    sampler.set_epoch(1)
    n_loader = 0
    t0 = time.perf_counter()
    for i, b in enumerate(loader):
        n_loader += len(b)
        if i + 1 >= max(args.steps, 20):
            break
    loader_rate = n_loader / (time.perf_counter() - t0)

    print(f"batch {bsz} images of {args.height}x{args.width}, {cfg.model.arch}, {torch.get_num_threads()} threads")
    print(f"bare PyTorch loop : {bare:8.1f} img/s")
    print(f"vireid trainer    : {engine:8.1f} img/s   ratio trainer/bare = {engine / bare:.3f}  (target >= 0.95)")
    print(f"loader ({args.workers} workers): {loader_rate:8.1f} img/s   ratio loader/model = {loader_rate / engine:.2f}"
          "  (target >= 3)")


if __name__ == "__main__":
    main()
