"""Gallery index at scale: exact NumPy search vs FAISS IVF and HNSW, side by side in one run.

Gallery vectors have identity structure (clusters of unit vectors), half visible, half infrared;
queries are perturbed copies of gallery vectors. For each kind it prints build time, queries per
second, recall@10 against the exact result (exact = 1 by definition) and the speed ratio to exact.

    .venv/bin/python benchmarks/index_scale.py [--n 200000] [--dim 512] [--queries 500] [--cross-modal]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vireid.core import Modality
from vireid.serve.index import GalleryIndex, IndexItem


def gallery(n: int, dim: int, seed: int) -> tuple[np.ndarray, list[IndexItem]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 20), dim)).astype(np.float32)
    ids = rng.integers(0, len(centres), size=n)
    x = centres[ids] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    items = [IndexItem(path=f"g/{i}.jpg", modality=Modality.VISIBLE if i % 2 else Modality.INFRARED,
                       pid=int(ids[i])) for i in range(n)]
    return x, items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--cross-modal", action="store_true", help="search only the other modality")
    args = ap.parse_args()
    vecs, items = gallery(args.n, args.dim, seed=0)
    rng = np.random.default_rng(1)
    q = vecs[rng.integers(0, args.n, size=args.queries)] + 0.05 * rng.normal(size=(args.queries, args.dim))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    qmod = Modality.VISIBLE
    kinds = ["flat"]
    try:
        import faiss  # noqa: F401

        kinds += ["ivf", "hnsw"]
    except ImportError:
        print("faiss not installed: only exact search is measured (pip install vireid[faiss])")
    truth, exact_qps = None, None
    print(f"gallery {args.n} x {args.dim}, {args.queries} queries, top-{args.topk}, cross-modal={args.cross_modal}")
    print(f"{'kind':6s} {'build s':>8s} {'queries/s':>10s} {'recall@k':>9s} {'vs exact':>9s}")
    for kind in kinds:
        index = GalleryIndex(args.dim, fingerprint="bench", kind=kind)
        t0 = time.perf_counter()
        index.add(vecs, items)
        if kind != "flat":
            index._faiss_index()  # build now so the search timing excludes training
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = index.search(q, args.topk, cross_modal_only=args.cross_modal, query_modality=qmod)
        qps = args.queries / (time.perf_counter() - t0)
        ids = [{h.id for h in r} for r in res]
        if truth is None:
            truth, exact_qps = ids, qps
        recall = float(np.mean([len(a & b) / args.topk for a, b in zip(ids, truth)]))
        print(f"{kind:6s} {build:8.2f} {qps:10.1f} {recall:9.3f} {qps / exact_qps:8.2f}x")


if __name__ == "__main__":
    main()
