"""A small load burst on the real `vireid serve` process: concurrent searches, none fails, each full length.

Uses the burst code of benchmarks/serve_load.py, so the benchmark is tested too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tests.test_serve_helpers import make_gallery_folder, trained_run  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"
TOPK = 5


def _bench():
    spec = importlib.util.spec_from_file_location("serve_load_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up while being created
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_concurrent_searches_all_succeed_with_topk_results(tmp_path_factory):
    from vireid.inference import FeatureExtractor
    from vireid.serve.gallery import build_index

    bench = _bench()
    run, _ = trained_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("load")
    gallery = make_gallery_folder(base / "images", pids=(1, 2, 3, 4), per=2)
    build_index(FeatureExtractor(run), gallery, base / "index")
    queries = bench.index_queries(base / "index", limit=8)
    assert {m for _, m in queries} == {"visible", "infrared"} and len(queries) == 8

    port = bench.free_port()
    proc = bench.start_server(base / "index", port)
    try:
        report = bench.burst(f"http://127.0.0.1:{port}/", queries, requests=40, concurrency=8, topk=TOPK,
                             timeout=120)
        # the checker itself must flag a short answer: 17 results cannot come from a 16-image gallery
        short = bench.burst(f"http://127.0.0.1:{port}/", queries[:1], requests=1, concurrency=1, topk=17)
    finally:
        bench.stop_server(proc)
    assert report.errors == [] and report.ok == 40
    s = report.summary()
    assert s["throughput_rps"] > 0 and 0 < s["p50_ms"] <= s["p95_ms"] <= s["max_ms"]
    assert short.ok == 0 and short.errors == ["16 results, expected 17"]
    assert proc.returncode is not None  # the server was stopped, not left running
