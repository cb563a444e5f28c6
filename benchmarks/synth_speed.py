"""Time SynthVI on a demo-sized SYSU-MM01 set against the 60 s target (not a test; prints ratios).

Usage: python benchmarks/synth_speed.py [--ids 400] [--images-per-camera 5] [--size 128x64] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from vireid.data.synthetic import synthesize
from vireid.data.synthetic.cli import parse_size

TARGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=400)
    ap.add_argument("--images-per-camera", type=int, default=5)
    ap.add_argument("--size", default="128x64")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        start = time.perf_counter()
        res = synthesize("sysu", Path(tmp) / "sysu", ids=args.ids, images_per_camera=args.images_per_camera,
                         size=parse_size(args.size), workers=workers, progress=False)
        seconds = time.perf_counter() - start
    print(f"SynthVI sysu: {args.ids} ids, {args.images_per_camera} images/camera, {args.size}, {workers} workers "
          f"(os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.2f})")
    print(f"images      {res.images}")
    print(f"seconds     {seconds:.2f}")
    print(f"images/s    {res.images / seconds:.0f}")
    print(f"time / 60 s target: {seconds / TARGET_S:.3f}  ({TARGET_S / seconds:.1f}x faster than the target)")


if __name__ == "__main__":
    main()
