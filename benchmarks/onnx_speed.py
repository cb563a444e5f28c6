"""Inference speed: ONNX Runtime vs PyTorch eager, per registered method, at batch 1 and 32, in one run.

For each registered method (or `--methods`) it builds the method at its test size (the tests' tiny
config: the synthetic preset shrunk to a ResNet-18 on small images, `tests/helpers.py:tiny_config`) or at
its preset size (`--size preset`), saves an untrained checkpoint, and times:

- eager: `embed_images` (the inference path evaluation and the torch backend run) on normalised tensors;
- ort: the graph the onnx backend runs (`vireid export`'s graph, uint8 input, normalisation inside),
  exported and parity-checked through `FeatureExtractor(..., backend="onnx")`.

Both get `--threads` intra-op threads (default 1: per-image cost without thread scaling) and see the same
images (visible), as the backends run them; image decoding and resizing are outside both timings. For
modality-specific methods the onnx backend runs one graph per modality (marked "per-modality graph"),
each with its own branch only, like eager. It prints ms/image per cell and the ORT speed-up (eager / ort).
Run it on a quiet machine: other busy processes change every number (see docs/performance.md).

    .venv/bin/python benchmarks/onnx_speed.py [--methods baseline,mpanet] [--batches 1,32] [--threads 1]
        [--size test|preset] [--repeats 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def method_config(method: str, size: str):
    """The method's config at its test size (tests' tiny config) or at its synthetic preset's size."""
    if size == "test":
        sys.path.insert(0, str(REPO))  # the tests' own definition of "test size", not a copy of it
        from tests.helpers import tiny_config

        return tiny_config(method)
    from vireid.config import load_config

    path = REPO / "configs" / "synthetic" / f"{method}.yaml"
    return load_config(path if path.is_file() else None, [] if path.is_file() else [f"method.name={method}"])


def save_untrained(method: str, size: str, path: Path) -> Path:
    """An untrained but complete checkpoint of `method` (seeded), as `vireid train` would write it."""
    from vireid.config import config_to_dict
    from vireid.methods import build_method
    from vireid.runs import save_checkpoint

    cfg = method_config(method, size)
    torch.manual_seed(0)
    model = build_method(cfg, 8, pretrained=False).eval()
    save_checkpoint(path, {"config": config_to_dict(cfg), "num_classes": 8, "model": model.state_dict(),
                           "method": method})
    return path


def time_per_image(fn, n_images: int, repeats: int) -> float:
    """Median ms/image of `fn()` over `repeats` calls after two untimed warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000 / n_images


def bench_method(method: str, size: str, batches: list[int], threads: int, repeats: int, work: Path) -> list[dict]:
    """One row per batch size: eager and ORT ms/image and the speed-up."""
    from vireid.core import Modality
    from vireid.inference import FeatureExtractor, embed_images

    ck = save_untrained(method, size, work / f"{method}.pt")
    eager = FeatureExtractor(ck)
    ort = FeatureExtractor(ck, backend="onnx", threads=threads, onnx_cache=work / "onnx")
    assert ort._onnx is not None
    branch = Modality.VISIBLE if Modality.VISIBLE in ort._onnx.sessions else None  # per-modality graphs or one
    session, inputs = ort._onnx.sessions[branch], ort._onnx.inputs[branch]
    spec = eager.method.inference_spec()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        u8 = rng.integers(0, 256, size=(b, 3, eager.height, eager.width), dtype=np.uint8)
        x = (torch.from_numpy(u8).float() / 255 - mean) / std
        codes = np.zeros(b, dtype=np.int64)  # one modality per batch, as eager runs it
        feed = {k: v for k, v in {"images": u8, "modality": codes}.items() if k in inputs}
        eager_ms = time_per_image(lambda x=x: embed_images(eager.method, x, Modality.VISIBLE, flip=eager.flip), b,
                                  repeats)
        ort_ms = time_per_image(lambda feed=feed: session.run(["features"], feed), b, repeats)
        rows.append({"method": method, "size": f"{eager.height}x{eager.width}", "batch": b, "threads": threads,
                     "modality_specific": bool(spec.modality_specific), "eager_ms_per_image": round(eager_ms, 3),
                     "ort_ms_per_image": round(ort_ms, 3), "ort_speedup": round(eager_ms / ort_ms, 2)})
    return rows


def main() -> None:
    from vireid.methods import available_methods

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(available_methods()), help="comma-separated (default: all)")
    ap.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for both (default 1)")
    ap.add_argument("--size", choices=("test", "preset"), default="test",
                    help="test: the tests' tiny config (default); preset: the synthetic preset's size")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per cell (median)")
    ap.add_argument("--json", action="store_true", help="one JSON object per cell")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",") if b]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vireid-onnx-speed-") as tmp:
        for method in [m for m in args.methods.split(",") if m]:
            rows += bench_method(method, args.size, batches, args.threads, args.repeats, Path(tmp))
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"ONNX Runtime vs PyTorch eager, {args.threads} thread(s), median of {args.repeats} calls, ms/image")
    print(f"{'method':10s} {'size':>8s} {'batch':>5s} {'eager':>9s} {'ort':>9s} {'ort x':>6s}  note")
    for r in rows:
        note = "per-modality graph" if r["modality_specific"] else ""
        print(f"{r['method']:10s} {r['size']:>8s} {r['batch']:5d} {r['eager_ms_per_image']:9.3f} "
              f"{r['ort_ms_per_image']:9.3f} {r['ort_speedup']:6.2f}  {note}")


if __name__ == "__main__":
    main()
