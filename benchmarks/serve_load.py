"""Load test of `vireid serve`: bounded bursts of concurrent POST /search requests on loopback, per configuration.

Starts the real server (`vireid serve INDEX --host 127.0.0.1 --port <free> --backend B --batch-size N`) as a
child process for each configuration in `--configs` (default: torch and onnx backends, each without
batching, `--batch-size 1`, and with it, `--batch-size 16`), sends `--requests` searches at each client count
in `--clients` (default 1 and 16) with real query images, and prints throughput, p50/p95 latency and the
error count (a non-200 reply, a timeout, or a reply with fewer than `--topk` results) for every cell, then
the ratios of every configuration to the first one (torch, no batching) at the same client count, all
measured in this one run. Without `--index` it builds a tiny world in a temporary folder first: a SynthVI
set, a baseline trained for a few steps at 32x16, and a folder-layout gallery indexed with it (about a
minute on 2 CPU cores). It always stops: request counts are bounded and `--timeout` caps each burst.
Run it on a quiet machine: other busy processes change every number (see docs/performance.md).

    .venv/bin/python benchmarks/serve_load.py [--index INDEX_DIR] [--requests 500] [--clients 1,16]
        [--configs torch:1,torch:16,onnx:1,onnx:16] [--threads N] [--topk 10] [--json]
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


def start_server(index_dir: Path, port: int, timeout: float = 120.0, extra: list[str] | tuple[str, ...] = ()
                 ) -> subprocess.Popen:
    """`vireid serve` on 127.0.0.1:port (plus `extra` options) as a child process; returns once GET /health
    answers (the onnx backend exports and caches its graph first, so the first start takes longer)."""
    proc = subprocess.Popen([*VIREID, "serve", str(index_dir), "--host", "127.0.0.1", "--port", str(port), *extra],
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


def parse_configs(text: str) -> list[tuple[str, int]]:
    """'torch:1,onnx:16' -> [("torch", 1), ("onnx", 16)]: backend and --batch-size per configuration."""
    out = []
    for part in text.split(","):
        backend, _, size = part.strip().partition(":")
        if backend not in ("torch", "onnx") or not size.isdigit() or int(size) < 1:
            raise SystemExit(f"--configs entry {part!r}: expected BACKEND:BATCH_SIZE with BACKEND torch or onnx and "
                             "BATCH_SIZE >= 1, e.g. torch:1,onnx:16")
        out.append((backend, int(size)))
    return out


def run_config(index_dir: Path, queries: list[tuple[bytes, str]], backend: str, batch_size: int,
               clients: list[int], requests: int, topk: int, timeout: float, threads: int | None) -> list[dict]:
    """One server with `backend` and `batch_size`; a warm-up, then one burst per client count; summaries."""
    extra = ["--backend", backend, "--batch-size", str(batch_size)]
    if threads:
        extra += ["--threads", str(threads)]
    port = free_port()
    proc = start_server(index_dir, port, extra=extra)
    rows = []
    try:
        url = f"http://127.0.0.1:{port}/"
        burst(url, queries, min(len(queries), 16), 4, topk, timeout)  # warm-up: first-call costs are not timed
        for c in clients:
            # one client: fewer requests (they run one at a time); never fewer than 2 per client
            n = max(2 * c, requests // 4 if c == 1 else requests)
            report = burst(url, queries, n, c, topk, timeout)
            rows.append({"backend": backend, "batch_size": batch_size, **report.summary(),
                         "error_samples": sorted(set(report.errors))[:3]})
    finally:
        stop_server(proc)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, help="index to serve (default: build a tiny one in a temporary folder)")
    ap.add_argument("--requests", type=int, default=500, help="requests per burst at > 1 client (a quarter at 1)")
    ap.add_argument("--clients", default="1,16", help="client counts (concurrent requests), comma-separated")
    ap.add_argument("--configs", default="torch:1,torch:16,onnx:1,onnx:16",
                    help="BACKEND:BATCH_SIZE per server configuration; ratios are to the first")
    ap.add_argument("--threads", type=int, default=None, help="vireid serve --threads (default: its own default)")
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=300.0, help="cap on each burst, seconds")
    ap.add_argument("--json", action="store_true", help="print one JSON object per cell")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.requests < 1 or not clients or min(clients) < 1:
        raise SystemExit("--requests and every --clients entry must be at least 1")
    configs = parse_configs(args.configs)
    with tempfile.TemporaryDirectory(prefix="vireid-load-") as tmp:
        if args.index is None:
            t0 = time.perf_counter()
            index_dir = build_tiny_index(Path(tmp))
            print(f"built a tiny index in {time.perf_counter() - t0:.1f} s: {index_dir}", file=sys.stderr)
        else:
            index_dir = args.index
        queries = index_queries(index_dir)
        rows = [row for backend, size in configs
                for row in run_config(index_dir, queries, backend, size, clients, args.requests, args.topk,
                                      args.timeout, args.threads)]
    base = {r["concurrency"]: r for r in rows if (r["backend"], r["batch_size"]) == configs[0]}
    for r in rows:
        b = base[r["concurrency"]]
        r["throughput_x"] = round(r["throughput_rps"] / b["throughput_rps"], 2) if b["throughput_rps"] else None
        r["p95_x"] = round(r["p95_ms"] / b["p95_ms"], 2) if b["p95_ms"] else None
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(f"POST /search, top-{args.topk}, {len(queries)} distinct query images; ratios vs "
              f"{configs[0][0]} batch {configs[0][1]} at the same client count")
        print(f"{'backend':8s} {'batch':>5s} {'clients':>7s} {'ok':>5s} {'err':>4s} {'req/s':>8s} {'p50 ms':>8s} "
              f"{'p95 ms':>8s} {'thru x':>7s} {'p95 x':>6s}")
        for r in rows:
            print(f"{r['backend']:8s} {r['batch_size']:5d} {r['concurrency']:7d} {r['ok']:5d} {r['errors']:4d} "
                  f"{r['throughput_rps']:8.1f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['throughput_x'] or 0:7.2f} "
                  f"{r['p95_x'] or 0:6.2f}")
    errors = [e for r in rows for e in r["error_samples"]]
    for err in sorted(set(errors))[:5]:
        print(f"error: {err}", file=sys.stderr)
    sys.exit(1 if any(r["errors"] for r in rows) else 0)


if __name__ == "__main__":
    main()
