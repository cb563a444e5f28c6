"""Gallery index at scale: exact NumPy search vs FAISS IVF (nprobe sweep) and HNSW (efSearch sweep).

Everything goes through `GalleryIndex`, the code path `vireid search` and `vireid serve` use. The gallery
imitates ReID features: `--centres` identities, each a random unit direction; every gallery vector is
its identity's direction plus isotropic noise of total norm `--spread` (cosine to the centre about
1/sqrt(1 + spread^2)), re-normalised; half the rows are visible, half infrared. Queries are fresh draws
around random identities (another image of a known person), not copies of gallery rows.
`--centres 0` gives uniform random unit vectors instead: no structure at all, the worst case for IVF.
For each setting it prints build time, queries per second, recall@k against exact search and the
speed ratio to exact search; the last line says whether the target (recall >= 0.95 at >= 20x) is met.

    .venv/bin/python benchmarks/index_scale.py [--n 1000000] [--dim 512] [--centres 5000] [--kinds flat,ivf]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vireid.core import Modality
from vireid.serve.index import GalleryIndex, IndexItem

CHUNK = 100_000  # rows generated at a time: the float64 noise of 1M x 512 alone would be 4 GiB


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def draw(rng: np.random.Generator, centres: np.ndarray | None, n: int, dim: int,
         spread: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 unit vectors and their identity (-1 without centres): x = unit(c + spread * g / sqrt(dim))."""
    out = np.empty((n, dim), dtype=np.float32)
    ids = np.full(n, -1, dtype=np.int64)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        if centres is None:
            out[s:s + m] = _unit(noise)
        else:
            ids[s:s + m] = rng.integers(0, len(centres), size=m)
            out[s:s + m] = _unit(centres[ids[s:s + m]] + (spread / np.sqrt(dim)) * noise)
    return out, ids


def timed_search(index: GalleryIndex, q: np.ndarray, topk: int, cross: bool) -> tuple[list[set[int]], float]:
    t0 = time.perf_counter()
    res = index.search(q, topk, cross_modal_only=cross, query_modality=Modality.VISIBLE)
    qps = len(q) / (time.perf_counter() - t0)
    return [{h.id for h in r} for r in res], qps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="gallery size")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--centres", type=int, default=5000, help="identities; 0 = uniform random unit vectors")
    ap.add_argument("--spread", type=float, default=0.75, help="noise norm relative to the unit centre")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--kinds", default="flat,ivf,hnsw", help="comma list out of flat,ivf,hnsw (flat always runs)")
    ap.add_argument("--nprobe", default="8,16,32,64", help="IVF nprobe values to sweep")
    ap.add_argument("--ef", default="64,128,256", help="HNSW efSearch values to sweep")
    ap.add_argument("--cross-modal", action="store_true", help="search only the other modality")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k and k != "flat"]
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("faiss not installed: only exact search is measured (pip install vireid[faiss])")
        kinds = []

    rng = np.random.default_rng(args.seed)
    centres = _unit(rng.standard_normal((args.centres, args.dim), dtype=np.float32)) if args.centres else None
    t0 = time.perf_counter()
    vecs, ids = draw(rng, centres, args.n, args.dim, args.spread)
    q, _ = draw(np.random.default_rng(args.seed + 1), centres, args.queries, args.dim, args.spread)
    items = [IndexItem(path=f"g/{i}.jpg", modality=Modality.VISIBLE if i % 2 else Modality.INFRARED,
                       pid=None if ids[i] < 0 else int(ids[i])) for i in range(args.n)]
    data = (f"{args.centres} identities, spread {args.spread} (cosine to centre ~{1 / np.sqrt(1 + args.spread ** 2):.2f})"
            if args.centres else "uniform random unit vectors (no structure)")
    print(f"gallery {args.n} x {args.dim} float32 ({vecs.nbytes / 2 ** 30:.2f} GiB), {data}; made in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"{args.queries} queries, top-{args.topk}, cross-modal={args.cross_modal}")
    print(f"{'kind':6s} {'setting':>14s} {'build s':>8s} {'queries/s':>10s} {'recall@k':>9s} {'vs exact':>9s}")

    exact = GalleryIndex(args.dim, fingerprint="bench", kind="flat")
    exact.add(vecs, items)
    del vecs
    truth, exact_qps = timed_search(exact, q, args.topk, args.cross_modal)
    print(f"{'flat':6s} {'exact':>14s} {0.0:8.2f} {exact_qps:10.1f} {1.0:9.3f} {1.0:8.2f}x")
    met = []
    for kind in kinds:
        index = GalleryIndex(args.dim, fingerprint="bench", kind=kind)
        t0 = time.perf_counter()
        index.add(exact.vectors, exact.items)
        index._faiss_index()  # build (and for IVF train) now so search timings exclude it
        build = time.perf_counter() - t0
        name, values = ("nprobe", args.nprobe) if kind == "ivf" else ("efSearch", args.ef)
        label = f"nlist {index._faiss.nlist}, " if kind == "ivf" else f"M {index.params['hnsw_m']}, "
        print(f"{kind:6s} {label:>14s} {build:8.2f}")
        for v in (int(x) for x in values.split(",")):
            index.params["nprobe" if kind == "ivf" else "ef_search"] = v
            got, qps = timed_search(index, q, args.topk, args.cross_modal)
            recall = float(np.mean([len(a & b) / args.topk for a, b in zip(got, truth)]))
            print(f"{kind:6s} {f'{name} {v}':>14s} {'':8s} {qps:10.1f} {recall:9.3f} {qps / exact_qps:8.2f}x")
            if recall >= 0.95 and qps >= 20 * exact_qps:
                met.append(f"{kind} {name} {v} (recall {recall:.3f}, {qps / exact_qps:.1f}x)")
        del index
    print("target recall@k >= 0.95 at >= 20x exact QPS: "
          + (f"met by {'; '.join(met)}" if met else "not met by any setting"))


if __name__ == "__main__":
    main()
