"""Gallery index at scale: vireid's exact search vs FAISS IVF (nprobe sweep) and HNSW (efSearch sweep).

Everything goes through `GalleryIndex`, the code path `vireid search` and `vireid serve` use. The exact
references are timed in the same run: vireid's `flat` index (FAISS's flat k-NN with vireid's tie rule when
FAISS is installed, else a NumPy matrix product + top-k), its NumPy path for the results' identity, and FAISS
`IndexFlatIP` (when FAISS is installed). Speed ratios are printed against each exact search and the target
is judged against each, so a slow exact path cannot flatter the ratio unseen.

The gallery imitates ReID features: `--centres` identities, each a random unit direction; every vector is
its identity's direction plus isotropic Gaussian noise of total norm `--spread`, re-normalised (cosine to
the centre about 1/sqrt(1 + spread^2)); half the rows are visible, half infrared. Queries are fresh draws
around random identities (another image of a known person), not copies of gallery rows. `--centres 0`
draws uniform random unit vectors instead: no neighbourhood structure at all, the worst case for every
approximate index (in 512-d all points are nearly equidistant).

The default is 1,000,000 x 512-d: the methods' 2048-d features would need 8 GiB per copy of the vectors
and HNSW keeps its own copy, which does not fit this 24 GiB, 2-core machine together with the exact index.
For each setting it prints build time, queries per second, recall@k against exact search and the speed
ratios; the last lines say whether the target (recall@k >= 0.95 at >= 20x exact QPS) is met against
vireid's exact search and against FAISS's, and by which settings.

    .venv/bin/python benchmarks/index_scale.py [--n 1000000] [--dim 512] [--centres 20000] [--spread 1.0]
        [--kinds ivf,hnsw] [--nlist 0] [--nprobe 4,8,16,32] [--ef 32,48,64,128] [--hnsw-m 32]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from vireid.core import Modality
from vireid.serve.index import DEFAULT_PARAMS, GalleryIndex, IndexItem

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
    """Result id sets and queries per second (after one untimed warm-up query)."""
    index.search(q[:1], topk, cross_modal_only=cross, query_modality=Modality.VISIBLE)
    t0 = time.perf_counter()
    res = index.search(q, topk, cross_modal_only=cross, query_modality=Modality.VISIBLE)
    qps = len(q) / (time.perf_counter() - t0)
    return [{h.id for h in r} for r in res], qps


def numpy_exact(index: GalleryIndex, q: np.ndarray, topk: int, cross: bool) -> tuple[list[list[int]], float]:
    """Ordered result ids and queries per second of the NumPy exact path ($VIREID_EXACT_SEARCH=numpy)."""
    old = os.environ.get("VIREID_EXACT_SEARCH")
    os.environ["VIREID_EXACT_SEARCH"] = "numpy"
    try:
        index.search(q[:1], topk, cross_modal_only=cross, query_modality=Modality.VISIBLE)
        t0 = time.perf_counter()
        res = index.search(q, topk, cross_modal_only=cross, query_modality=Modality.VISIBLE)
        qps = len(q) / (time.perf_counter() - t0)
    finally:
        if old is None:
            os.environ.pop("VIREID_EXACT_SEARCH", None)
        else:
            os.environ["VIREID_EXACT_SEARCH"] = old
    return [[h.id for h in r] for r in res], qps


def faiss_flat_qps(vectors: np.ndarray, q: np.ndarray, topk: int) -> float:
    """Queries per second of FAISS IndexFlatIP (exact) over the same vectors (no modality filter)."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    flat.search(q[:1], topk)
    t0 = time.perf_counter()
    flat.search(q, topk)
    return len(q) / (time.perf_counter() - t0)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--centres", type=int, default=20000, help="identities; 0 = uniform random unit vectors")
    ap.add_argument("--spread", type=float, default=1.0, help="noise norm relative to the unit centre")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--kinds", default="ivf,hnsw", help="comma list out of ivf,hnsw (exact always runs)")
    ap.add_argument("--nlist", type=int, default=DEFAULT_PARAMS["nlist"], help="IVF lists; 0 = 4 * sqrt(n)")
    ap.add_argument("--nprobe", default="4,8,16,32,64", help="IVF nprobe values to sweep")
    ap.add_argument("--ef", default="32,48,64,96,128", help="HNSW efSearch values to sweep")
    ap.add_argument("--hnsw-m", type=int, default=DEFAULT_PARAMS["hnsw_m"])
    ap.add_argument("--ef-construction", type=int, default=DEFAULT_PARAMS["ef_construction"])
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
    if args.centres:
        data = (f"{args.centres} identities (~{args.n / args.centres:.0f} images each), spread {args.spread} "
                f"(cosine to centre ~{1 / np.sqrt(1 + args.spread ** 2):.2f})")
    else:
        data = "uniform random unit vectors (no structure)"
    print(f"gallery {args.n} x {args.dim} float32 ({vecs.nbytes / 2 ** 30:.2f} GiB), {data}; made in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"{args.queries} queries, top-{args.topk}, cross-modal={args.cross_modal}")

    exact = GalleryIndex(args.dim, fingerprint="bench", kind="flat")
    exact.add(vecs, items)
    del vecs
    truth, exact_qps = timed_search(exact, q, args.topk, args.cross_modal)
    references = {"vireid flat": exact_qps}  # every exact search measured: the target is judged against each
    from vireid.serve.index import _exact_faiss

    path = "FAISS k-NN path" if _exact_faiss() is not None else "NumPy path"
    print(f"exact: vireid flat ({path}) {exact_qps:.1f} queries/s", end="")
    if path != "NumPy path":
        # the NumPy path is the reference for the results: the same ids in the same order, ties included
        ordered = [[h.id for h in r] for r in exact.search(q, args.topk, cross_modal_only=args.cross_modal,
                                                            query_modality=Modality.VISIBLE)]
        np_ids, np_qps = numpy_exact(exact, q, args.topk, args.cross_modal)
        print(f", vireid flat (NumPy path) {np_qps:.1f} queries/s, identical results: {ordered == np_ids}", end="")
    if kinds and not args.cross_modal:
        fq = faiss_flat_qps(exact.vectors, q, args.topk)
        references["FAISS IndexFlatIP"] = fq
        print(f", FAISS IndexFlatIP {fq:.1f} queries/s (vireid flat / IndexFlatIP = {exact_qps / fq:.2f}x)", end="")
    print("; 'x <name>' columns are queries/s relative to that exact search")
    columns = "".join(f" {'x ' + ('vireid' if n == 'vireid flat' else 'FlatIP'):>9s}" for n in references)
    print(f"{'kind':5s} {'setting':>22s} {'build s':>8s} {'queries/s':>10s} {f'recall@{args.topk}':>9s}{columns}")
    met: dict[str, list[str]] = {name: [] for name in references}
    for kind in kinds:
        params = {"nlist": args.nlist, "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction}
        index = GalleryIndex(args.dim, fingerprint="bench", kind=kind, params=params)
        t0 = time.perf_counter()
        index.add(exact.vectors, exact.items)
        index._faiss_index()  # build (and for IVF train) now so search timings exclude it
        build = time.perf_counter() - t0
        label = (f"nlist {index._faiss.nlist}" if kind == "ivf"
                 else f"M {args.hnsw_m} efC {args.ef_construction}")
        print(f"{kind:5s} {label:>22s} {build:8.1f}", flush=True)
        key, values = ("nprobe", args.nprobe) if kind == "ivf" else ("ef_search", args.ef)
        for v in _ints(values):
            index.params[key] = v
            got, qps = timed_search(index, q, args.topk, args.cross_modal)
            recall = float(np.mean([len(a & b) / args.topk for a, b in zip(got, truth, strict=True)]))
            ratios = "".join(f" {qps / reference:8.1f}x" for reference in references.values())
            print(f"{kind:5s} {f'{key} {v}':>22s} {'':8s} {qps:10.1f} {recall:9.3f}{ratios}", flush=True)
            for name, reference in references.items():
                if recall >= 0.95 and qps >= 20 * reference:
                    met[name].append(f"{kind} {key} {v} (recall {recall:.3f}, {qps / reference:.1f}x)")
        del index
    for name in references:
        print(f"target recall@{args.topk} >= 0.95 at >= 20x the QPS of {name}: "
              + (f"met by {'; '.join(met[name])}" if met[name] else "not met by any setting"))


if __name__ == "__main__":
    main()
