"""Load test of `vireid serve`: a bounded burst of concurrent POST /search requests on loopback.

Starts the real server (`vireid serve INDEX --host 127.0.0.1 --port <free>`) as a child process, sends
`--requests` searches `--concurrency` at a time with real query images, and prints throughput, p50/p95
latency and the error count (a non-200 reply, a timeout, or a reply with fewer than `--topk` results).
Without `--index` it builds a tiny world in a temporary folder first: a SynthVI set, a baseline trained
for a few steps at 32x16, and a folder-layout gallery indexed with it (about a minute on 2 CPU cores).
It always stops: the request count is bounded and `--timeout` caps the whole burst.

    .venv/bin/python benchmarks/serve_load.py [--index INDEX_DIR] [--requests 500] [--concurrency 16] [--topk 10]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIREID = [sys.executable, "-c", "import sys; from vireid.cli import main; sys.exit(main())"]


@dataclass
class LoadReport:
    """Outcome of one burst; latencies in seconds of the requests that succeeded."""

    requests: int
    concurrency: int
    wall_s: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict:
        lat = np.array(self.latencies or [float("nan")]) * 1000
        return {"requests": self.requests, "concurrency": self.concurrency, "ok": self.ok,
                "errors": len(self.errors), "wall_s": round(self.wall_s, 3),
                "throughput_rps": round(self.ok / self.wall_s, 2) if self.wall_s > 0 else 0.0,
                "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
                "max_ms": round(float(lat.max()), 1)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index_dir: Path, port: int, timeout: float = 60.0) -> subprocess.Popen:
    """`vireid serve` on 127.0.0.1:port as a child process; returns once GET /health answers."""
    proc = subprocess.Popen([*VIREID, "serve", str(index_dir), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vireid serve {index_dir} exited with code {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"vireid serve {index_dir} did not answer /health on port {port} within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def multipart(fields: dict[str, str], image: bytes, filename: str) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request with the fields and one `image` file."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def search_once(url: str, image: bytes, modality: str, topk: int, timeout: float) -> tuple[float, str | None]:
    """(latency s, None) for a good reply; (latency s, why) when the status or the result count is wrong."""
    body, ctype = multipart({"modality": modality, "topk": str(topk)}, image, "q.jpg")
    req = urllib.request.Request(url + "search", data=body, headers={"Content-Type": ctype}, method="POST")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            results = json.loads(r.read())["results"]
    except urllib.error.HTTPError as exc:
        return time.perf_counter() - t0, f"HTTP {exc.code}: {exc.read()[:200]!r}"
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        return time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
    dt = time.perf_counter() - t0
    if len(results) != topk:
        return dt, f"{len(results)} results, expected {topk}"
    return dt, None


def burst(url: str, queries: list[tuple[bytes, str]], requests: int, concurrency: int, topk: int = 10,
          timeout: float = 300.0) -> LoadReport:
    """`requests` searches, `concurrency` in flight, cycling through (image bytes, modality) queries."""
    report = LoadReport(requests, concurrency, 0.0)
    per_request = min(60.0, timeout)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(search_once, url, *queries[i % len(queries)], topk, per_request)
                   for i in range(requests)]
        done, pending = wait(futures, timeout=timeout)
        for f in pending:
            f.cancel()
        report.wall_s = time.perf_counter() - t0
    for f in futures:
        if f in pending:
            report.errors.append(f"not answered within the {timeout:.0f} s burst timeout")
            continue
        dt, err = f.result()
        (report.errors.append(err) if err else report.latencies.append(dt))
    return report


def index_queries(index_dir: Path, limit: int = 32) -> list[tuple[bytes, str]]:
    """Up to `limit` (image bytes, modality) pairs from the gallery images of an index, both modalities mixed."""
    from vireid.serve.index import GalleryIndex

    index = GalleryIndex.open(index_dir)
    step = max(1, len(index) // limit)
    out = []
    for item in index.items[::step][:limit]:
        path = index.image_path(item)
        if path.is_file():
            out.append((path.read_bytes(), item.modality.value))
    if not out:
        raise SystemExit(f"no readable gallery image in {index_dir}; pass an index whose images are on disk")
    return out


def build_tiny_index(work: Path) -> Path:
    """SynthVI data -> a baseline trained for a few steps -> a folder-layout gallery index; returns the index dir."""
    from PIL import Image

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = lambda *a: subprocess.run([*VIREID, *a], check=True, env=env, stdout=subprocess.DEVNULL)  # noqa: E731
    run("synth", "--layout", "sysu", "--out", str(work / "data"), "--ids", "12", "--images-per-camera", "2",
        "--size", "64x32", "--workers", "1", "--no-progress")
    run("train", "--out", str(work / "run"), "--no-progress", str(REPO / "configs" / "synthetic" / "baseline.yaml"),
        f"data.root={work / 'data'}", "data.height=32", "data.width=16", "data.num_workers=0", "train.device=cpu",
        "sampler.num_ids=4", "sampler.num_pos=2", "train.epochs=1", "train.max_steps_per_epoch=2",
        "eval.options={mode: all, shots: 1, gallery_sampler: agw, trials: 1}")
    rng = np.random.default_rng(0)
    gallery = work / "gallery"
    for pid in range(1, 17):
        colour = rng.integers(0, 255, size=3)
        for mod, cam in (("visible", 1), ("infrared", 3)):
            d = gallery / mod / f"cam{cam}" / f"{pid:04d}"
            d.mkdir(parents=True)
            for i in range(4):
                arr = np.clip(colour + rng.normal(0, 20, size=(64, 32, 3)), 0, 255).astype(np.uint8)
                if mod == "infrared":
                    arr = np.repeat(arr.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i:04d}.jpg", quality=90)
    run("index", "build", str(work / "run"), "--images", str(gallery), "--out", str(work / "index"), "--no-progress")
    return work / "index"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, help="index to serve (default: build a tiny one in a temporary folder)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=300.0, help="cap on the whole burst, seconds")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = ap.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        raise SystemExit("--requests and --concurrency must be at least 1")
    with tempfile.TemporaryDirectory(prefix="vireid-load-") as tmp:
        if args.index is None:
            t0 = time.perf_counter()
            index_dir = build_tiny_index(Path(tmp))
            print(f"built a tiny index in {time.perf_counter() - t0:.1f} s: {index_dir}", file=sys.stderr)
        else:
            index_dir = args.index
        queries = index_queries(index_dir)
        port = free_port()
        proc = start_server(index_dir, port)
        try:
            report = burst(f"http://127.0.0.1:{port}/", queries, args.requests, args.concurrency, args.topk,
                           args.timeout)
        finally:
            stop_server(proc)
    s = report.summary()
    if args.json:
        print(json.dumps(s))
    else:
        print(f"{s['requests']} POST /search, {s['concurrency']} concurrent, top-{args.topk}, "
              f"{len(queries)} distinct query images")
        print(f"ok {s['ok']}  errors {s['errors']}  wall {s['wall_s']:.2f} s  "
              f"throughput {s['throughput_rps']:.1f} req/s")
        print(f"latency p50 {s['p50_ms']:.1f} ms  p95 {s['p95_ms']:.1f} ms  max {s['max_ms']:.1f} ms")
    for err in sorted(set(report.errors))[:5]:
        print(f"error: {err}", file=sys.stderr)
    sys.exit(1 if report.errors else 0)


if __name__ == "__main__":
    main()
