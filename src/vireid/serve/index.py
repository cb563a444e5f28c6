"""GalleryIndex: feature vectors + an SQLite table of items + meta.json, saved atomically, checked on open.

Directory layout (format "vireid-gallery-index", version 1):

- ``vectors.npy``: (count, dim) float32, row i is item id i (L2-normalised features);
- ``index.faiss``: only for ``kind="ivf"`` or ``"hnsw"`` (FAISS, optional extra ``vireid[faiss]``);
- ``items.sqlite``: table ``items(id, path, modality, camera, pid, timestamp, tags)``;
- ``meta.json``: format, version, model fingerprint and description, feature kind, dim, count, kind,
  FAISS parameters and the image roots that served paths must stay inside;
- ``images/``: images added through the service (paths stored relative to the index directory).

Scores are inner products of L2-normalised vectors (cosine similarity); higher is better.

Concurrency and durability (docs/deploy.md): writers take an exclusive lock (``index_lock``: the file
``.<name>.lock`` beside the directory) from reading the current state to committing; ``meta.json``
(its ``count`` and ``generation``) is the commit point. An append writes the new item rows and vector
rows first (appending to ``vectors.npy`` in place, never rewriting it), then ``meta.json`` atomically;
rows beyond the committed count, left by a writer that was killed, are ignored and overwritten by the
next append. Readers take no lock: they read ``meta.json``, load the committed rows, and read it again,
retrying when a writer committed in between. A full save (build, ``--overwrite``) swaps in a new
directory; a kill between its two renames is repaired by the next writer (``recover_dir``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..core import GalleryIndexError, Modality
from ..data.images import IMAGE_EXTENSIONS
from ..utils.atomic import atomic_dir, atomic_path, clean_leftovers, file_lock, recover_dir, storage_errors, write_json

log = logging.getLogger(__name__)

FORMAT = "vireid-gallery-index"
VERSION = 1
KINDS = ("flat", "ivf", "hnsw")
# nlist 0 = automatic (4 * sqrt(count)); train_per_list caps the k-means sample at nlist * train_per_list rows
DEFAULT_PARAMS: dict[str, int] = {"nlist": 0, "nprobe": 16, "train_per_list": 64, "hnsw_m": 32,
                                  "ef_search": 128, "ef_construction": 80}
KIND_PARAMS: dict[str, tuple[str, ...]] = {"flat": (), "ivf": ("nlist", "nprobe", "train_per_list"),
                                           "hnsw": ("hnsw_m", "ef_search", "ef_construction")}
_SCORE_BUDGET = 512 * 2 ** 20  # bytes of float32 scores per block of queries in exact search
# Exact search goes through FAISS from this many queries at once (FAISS's own BLAS threshold): measured on 2 cores,
# FAISS's k-NN beat NumPy by 1.3-1.5x for 256 queries on 5k-300k x 512 galleries (1.7x for 1000 on 1M) but ran
# at 0.4-0.7x for one query (benchmarks/index_scale.py, docs/performance.md)
FAISS_MIN_QUERIES = 20
_INT64 = (-(2 ** 63), 2 ** 63 - 1)  # what SQLite's INTEGER holds
MAX_TAG_DEPTH = 8
MAX_TAG_BYTES = 16 * 1024
LOCK_TIMEOUT_S = 60.0
META, VECTORS, ITEMS, FAISS_FILE, IMAGES = "meta.json", "vectors.npy", "items.sqlite", "index.faiss", "images"

_INSERT = "INSERT INTO items (id, path, modality, camera, pid, timestamp, tags) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SCHEMA = """CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    modality TEXT NOT NULL CHECK (modality IN ('visible', 'infrared')),
    camera INTEGER,
    pid INTEGER,
    timestamp TEXT,
    tags TEXT NOT NULL DEFAULT '{}'
)"""


@dataclass(frozen=True)
class IndexItem:
    """One gallery image; `id` is its row in the vectors (assigned by `GalleryIndex.add`)."""

    path: str
    modality: Modality
    camera: int | None = None
    pid: int | None = None
    timestamp: str | None = None
    tags: dict = field(default_factory=dict)
    id: int = -1

    def to_dict(self) -> dict[str, Any]:
        """JSON view: id, path, modality, camera, pid, timestamp, tags."""
        return {"id": self.id, "path": self.path, "modality": self.modality.value, "camera": self.camera,
                "pid": self.pid, "timestamp": self.timestamp, "tags": dict(self.tags)}


class Hit(NamedTuple):
    """One search result: item id, inner-product score (higher is closer) and the item."""

    id: int
    score: float
    item: IndexItem

    def to_dict(self) -> dict[str, Any]:
        """The API/CLI result record: id, path, score, modality, camera, pid."""
        return {"id": self.id, "path": self.item.path, "score": round(float(self.score), 6),
                "modality": self.item.modality.value, "camera": self.item.camera, "pid": self.item.pid}


def _import_faiss():
    try:
        import faiss  # noqa: PLC0415 - optional dependency, imported only when asked for
    except ImportError as exc:
        raise GalleryIndexError(
            "approximate indexes (kind 'ivf' or 'hnsw') need FAISS, which is not installed; "
            "run `pip install vireid[faiss]` (or faiss-cpu), or use kind 'flat' (exact search, no FAISS)"
        ) from exc
    return faiss


def _exact_faiss() -> Any:
    """FAISS for exact search when it is installed and not turned off ($VIREID_EXACT_SEARCH=numpy), else None."""
    if os.environ.get("VIREID_EXACT_SEARCH", "").strip().lower() == "numpy":
        return None
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return faiss


def _pack_modality_filter(n_queries: int, modality: Any, cross_modal_only: bool,
                          query_modality: Any) -> list[Modality | None]:
    """The gallery modality each query may match (None: any)."""
    if modality is not None and not isinstance(modality, (Modality, str)):
        allowed = [None if m is None else Modality.parse(m) for m in modality]
    else:
        allowed = [None if modality is None else Modality.parse(modality)] * n_queries
    if len(allowed) != n_queries:
        raise ValueError(f"got {len(allowed)} gallery modalities for {n_queries} queries")
    if not cross_modal_only:
        return allowed
    if query_modality is None:
        raise ValueError("cross_modal_only needs query_modality (the spectrum of each query image)")
    if isinstance(query_modality, (Modality, str)):
        qmods = [Modality.parse(query_modality)] * n_queries
    else:
        qmods = [Modality.parse(m) for m in query_modality]
    if len(qmods) != n_queries:
        raise ValueError(f"got {len(qmods)} query modalities for {n_queries} queries")
    out: list[Modality | None] = []
    for want, q in zip(allowed, qmods, strict=True):
        other = Modality.INFRARED if q is Modality.VISIBLE else Modality.VISIBLE
        if want is not None and want is not other:
            raise ValueError(f"cross_modal_only with a {q.value} query searches {other.value} images, "
                             f"but modality={want.value} was asked for")
        out.append(other)
    return out


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting at most `limit + 1` levels (no recursion on deep input)."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        level = nxt
    return depth


def check_item(item: IndexItem) -> None:
    """ValueError naming the field when an item cannot be stored: camera and pid fit SQLite's 64-bit INTEGER,
    tags are a JSON object of at most MAX_TAG_DEPTH levels and MAX_TAG_BYTES bytes."""
    for name in ("camera", "pid"):
        v = getattr(item, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not _INT64[0] <= v <= _INT64[1]):
            raise ValueError(f"{name} must be an integer between {_INT64[0]} and {_INT64[1]}, got {v!r}")
    if not isinstance(item.tags, dict):
        raise ValueError(f"tags must be a JSON object (a dict), got {type(item.tags).__name__}")
    if _depth(item.tags, MAX_TAG_DEPTH) > MAX_TAG_DEPTH:
        raise ValueError(f"tags are nested more than {MAX_TAG_DEPTH} levels deep")
    try:
        size = len(json.dumps(item.tags, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tags must hold JSON values only ({exc})") from None
    if size > MAX_TAG_BYTES:
        raise ValueError(f"tags take {size} bytes as JSON; at most {MAX_TAG_BYTES} are allowed")


def lock_file(directory: str | Path) -> Path:
    """The lock file of the index at `directory`: `.<name>.lock` beside it (it survives the directory's swaps)."""
    d = Path(directory).expanduser()
    return d.parent / f".{d.name}.lock"


@contextlib.contextmanager
def index_lock(directory: str | Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold the exclusive writer lock of the index at `directory`; on entry, repair a save interrupted between
    its two renames and remove the temporary files of killed writers. GalleryIndexError after `timeout` s."""
    d = Path(directory).expanduser()
    path = lock_file(d)
    busy = (f"the gallery index {d} is being written by another process (lock {path}) for more than {timeout:.0f} s; "
            "try again when it has finished")
    with file_lock(path, timeout=timeout, busy=lambda: GalleryIndexError(busy)):
        if recover_dir(d):
            log.warning("restored %s from its previous version (a save was interrupted)", d)
        clean_leftovers(d)
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink(missing_ok=True)
        yield d


def _npy_header(rows: int, dim: int) -> bytes:
    """The header np.save writes for a C-order (rows, dim) float32 array (its length does not depend on rows)."""
    import io  # noqa: PLC0415

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                               "fortran_order": False, "shape": (rows, dim)})
    return buf.getvalue()


def _append_npy(path: Path, rows: np.ndarray, committed: int) -> None:
    """Append `rows` to the (committed, dim) float32 .npy at `path` in place: rows past `committed` (left by a
    killed writer) are dropped, the data are written, then the header's row count; the file is synced."""
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        if version != (1, 0):
            raise ValueError(f"{path}: .npy format {version}, expected 1.0")
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        start = f.tell()
        if fortran or dtype != np.float32 or len(shape) != 2 or shape[1] != rows.shape[1] or shape[0] < committed:
            raise ValueError(f"{path}: holds {dtype} {shape}, expected at least ({committed}, {rows.shape[1]}) float32")
        header = _npy_header(committed + rows.shape[0], rows.shape[1])
        if len(header) != start:
            raise ValueError(f"{path}: its header cannot grow in place")
        f.seek(start + committed * rows.shape[1] * 4)
        f.truncate()
        f.write(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        f.write(header)
        f.flush()
        os.fsync(f.fileno())


class GalleryIndex:
    """Gallery vectors with their items; exact inner-product search, or FAISS IVF/HNSW when asked for."""

    def __init__(self, dim: int, *, fingerprint: str, feature: str = "bn", kind: str = "flat",
                 model: dict | None = None, roots: Sequence[str] = (), params: dict | None = None,
                 directory: str | Path | None = None) -> None:
        if kind not in KINDS:
            raise GalleryIndexError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        if kind != "flat":
            _import_faiss()  # fail now, before any work, when FAISS is missing
        self.dim = int(dim)
        self.fingerprint = str(fingerprint)
        self.feature = feature
        self.kind = kind
        self.model = dict(model or {})
        self.roots = [str(r) for r in roots]
        self.params = {**DEFAULT_PARAMS, **_check_params(params or {})}
        self.directory = Path(directory) if directory is not None else None
        self._buffer = np.zeros((0, self.dim), dtype=np.float32)  # rows [0, len) are the vectors; grows by doubling
        # per-modality (item ids, contiguous vectors) for FAISS's exact search; emptied whenever the rows change
        self._rows_cache: dict[Modality, tuple[np.ndarray, np.ndarray]] = {}
        self.items: list[IndexItem] = []
        self._codes = np.zeros(0, dtype=np.int8)
        self._faiss: Any = None
        self._faiss_on_disk = 0  # rows index.faiss holds on disk (meta.json "faiss_count"); may lag the count
        self._trained_count = 0  # gallery size when the IVF quantizer was trained (retrained after 4x growth)
        self.generation = 0  # meta.json's commit counter when this index was read or last written

    @property
    def vectors(self) -> np.ndarray:
        """(count, dim) float32, row i the vector of item i (a view: do not keep it across adds)."""
        return self._buffer[: len(self.items)]

    @vectors.setter
    def vectors(self, value: np.ndarray) -> None:
        self._buffer = np.ascontiguousarray(value, dtype=np.float32)
        self._rows_cache.clear()

    @classmethod
    def for_extractor(cls, extractor: Any, kind: str = "flat", **kwargs: Any) -> GalleryIndex:
        """An empty index for the features of a FeatureExtractor."""
        return cls(extractor.dim, fingerprint=extractor.fingerprint, feature=extractor.feature, kind=kind,
                   model=extractor.describe(), **kwargs)

    def __len__(self) -> int:
        return len(self.items)

    def item(self, item_id: int) -> IndexItem:
        """The item with id `item_id`; KeyError when there is none."""
        if not 0 <= int(item_id) < len(self.items):
            raise KeyError(f"no item {item_id} in the index (ids are 0..{len(self.items) - 1})")
        return self.items[int(item_id)]

    # ------------------------------------------------------------------ building
    def _prepare(self, vectors: np.ndarray, items: Sequence[IndexItem]) -> tuple[np.ndarray, list[IndexItem]]:
        """Checked float32 rows and the items with their new ids; nothing is changed (ValueError naming the fault)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected ({len(items)}, {self.dim}) vectors, got shape {vectors.shape}")
        if vectors.shape[0] != len(items):
            raise ValueError(f"got {vectors.shape[0]} vectors for {len(items)} items")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors hold NaN or infinite values; refusing to add them to the index")
        start = len(self.items)
        new = [replace(it, id=start + i, modality=Modality.parse(it.modality), tags=dict(it.tags))
               for i, it in enumerate(items)]
        for it in new:
            check_item(it)
        return vectors, new

    def _apply(self, vectors: np.ndarray, new: list[IndexItem]) -> None:
        """Append checked rows in memory (amortised O(new rows): the buffer doubles when full)."""
        self._rows_cache.clear()
        n, k = len(self.items), len(new)
        if n + k > self._buffer.shape[0]:
            grown = np.zeros((max(n + k, 2 * self._buffer.shape[0], 64), self.dim), dtype=np.float32)
            grown[:n] = self._buffer[:n]
            self._buffer = grown
        self._buffer[n:n + k] = vectors
        self.items.extend(new)
        self._codes = np.concatenate([self._codes, np.array([it.modality.code for it in new], dtype=np.int8)])
        if self._faiss is not None:
            if self.kind == "ivf" and len(self) > 4 * max(self._trained_count, 1):
                self._faiss = None  # centroids trained on a quarter of the data or less: retrain on the next search
            else:
                self._faiss.add(vectors)

    def add(self, vectors: np.ndarray, items: Sequence[IndexItem]) -> list[int]:
        """Append rows in memory (`save` or `append` write them); returns the new ids (consecutive, from the count).

        Everything is checked before anything changes: a bad row leaves the index as it was."""
        vectors, new = self._prepare(vectors, items)
        self._apply(vectors, new)
        return [it.id for it in new]

    def append(self, vectors: np.ndarray, items: Sequence[IndexItem], *,
               memory_lock: contextlib.AbstractContextManager | None = None) -> list[int]:
        """Add rows and commit them to the index's directory without rewriting it (hold `index_lock`).

        Item rows and vector rows are written first, then meta.json (the commit point), then, for FAISS
        kinds, index.faiss; memory changes only after the commit (inside `memory_lock`, the lock readers of
        this object hold, so they wait for the in-memory step only, never for the disk), so a failure leaves
        this object and the directory as they were. GalleryIndexError when the directory changed since this
        index was read."""
        d = self.directory
        if d is None:
            raise ValueError("GalleryIndex.append needs an index that was saved or opened from a directory")
        vectors, new = self._prepare(vectors, items)
        on_disk = read_meta(d)
        if int(on_disk.get("generation", 0)) != self.generation:
            raise GalleryIndexError(f"the gallery index {d} changed on disk since it was read (generation "
                                    f"{on_disk.get('generation', 0)} vs {self.generation}); open it again and retry")
        start = len(self.items)
        try:
            with storage_errors(d):
                con = sqlite3.connect(d / ITEMS)
                try:
                    with con:  # one transaction: rows of a killed writer (ids >= start) go, the new ones come
                        con.execute("DELETE FROM items WHERE id >= ?", (start,))
                        con.executemany(_INSERT, [_row(it) for it in new])
                finally:
                    con.close()
                _append_npy(d / VECTORS, vectors, start)
        except (sqlite3.Error, ValueError) as exc:
            raise GalleryIndexError(f"cannot append to the gallery index {d} ({exc}); it was left as it was") from None
        count, generation = start + len(new), self.generation + 1
        write_json(d / META, self._meta(count, generation))  # the commit
        with memory_lock or contextlib.nullcontext():
            self._apply(vectors, new)
            self.generation = generation
        if self.kind != "flat":
            self._write_faiss(d)
        return [it.id for it in new]

    def nlist_for(self, count: int) -> int:
        """IVF list count: params['nlist'], or 4 * sqrt(count) when 0.

        At most count // 39 (k-means needs 39 rows a list).
        """
        want = int(self.params["nlist"]) or int(round(4 * math.sqrt(max(count, 1))))
        return max(1, min(want, count // 39))

    def _build_faiss(self) -> Any:
        """The FAISS index over all vectors (IVF: k-means on at most nlist * train_per_list sampled rows)."""
        faiss = _import_faiss()
        n = len(self)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, int(self.params["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(self.params["ef_construction"])
        else:
            nlist = self.nlist_for(n)
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.max_points_per_centroid = max(39, int(self.params["train_per_list"]))
            if n:
                index.train(self.vectors)
        if n:
            index.add(self.vectors)
        self._trained_count = n
        return index

    def _faiss_index(self) -> Any:
        if self._faiss is None:
            self._faiss = self._build_faiss()
        if self.kind == "hnsw":
            self._faiss.hnsw.efSearch = int(self.params["ef_search"])
        else:
            self._faiss.nprobe = min(int(self.params["nprobe"]), self._faiss.nlist)
        return self._faiss

    # ------------------------------------------------------------------ search
    def search(self, query_vectors: np.ndarray, topk: int = 10, modality: Any = None, *,
               cross_modal_only: bool = False, query_modality: Any = None) -> list[list[Hit]]:
        """Per query, the `topk` items by inner product (best first, ties by id), optionally of one modality."""
        q = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query vectors must be (N, {self.dim}), got shape {q.shape}")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        allowed = _pack_modality_filter(q.shape[0], modality, cross_modal_only, query_modality)
        if not len(self):
            return [[] for _ in range(q.shape[0])]
        if self.kind == "flat":
            faiss = _exact_faiss() if q.shape[0] >= FAISS_MIN_QUERIES else None
            if faiss is not None:  # FAISS blocks its own work and keeps no score matrix: all queries in one call
                return self._exact_faiss(faiss, q, topk, allowed)
            block = max(1, min(256, _SCORE_BUDGET // (4 * len(self))))
            out: list[list[Hit]] = []
            for j in range(0, q.shape[0], block):
                out += self._exact(q[j:j + block], topk, allowed[j:j + block])
            return out
        return self._approximate(q, topk, allowed)

    def _hits(self, ids: np.ndarray, scores: np.ndarray, topk: int) -> list[Hit]:
        order = np.lexsort((ids, -scores))[:topk]  # score descending, then id ascending: deterministic ties
        return [Hit(int(ids[i]), float(scores[i]), self.items[int(ids[i])]) for i in order]

    def _exact(self, q: np.ndarray, topk: int, allowed: list[Modality | None]) -> list[list[Hit]]:
        """Exact top-k of one block of queries without FAISS: one matrix product and a top-k per modality group,
        ties at the k-th place resolved by item id."""
        import torch  # noqa: PLC0415 - torch is a core dependency; kept out of `import vireid.serve.index`

        scores = torch.from_numpy(q @ self.vectors.T)  # NumPy's sgemm measured faster than torch's here
        groups = dict.fromkeys(allowed)
        out: list[list[Hit]] = [[] for _ in allowed]
        for want in groups:
            rows = [i for i, a in enumerate(allowed) if a is want]
            block = scores if len(groups) == 1 else scores[rows]
            if want is None:
                n_allowed = len(self)
            else:
                other = torch.from_numpy(self._codes != want.code)
                n_allowed = len(self) - int(other.sum())
                block.masked_fill_(other[None], -math.inf)
            if n_allowed == 0:
                continue
            k = min(topk, n_allowed)
            # one more than asked: when the (k+1)-th score equals the k-th, tied items may have been cut
            # arbitrarily, so that row takes every item scoring >= the k-th and the id tie-break decides
            top_t, idx_t = torch.topk(block, min(k + 1, n_allowed), dim=1, sorted=True)
            top, idx = top_t.numpy(), idx_t.numpy()
            for r, row_top, row_idx, row in zip(rows, top, idx, block, strict=True):
                if len(row_top) > k and row_top[k] == row_top[k - 1]:
                    row_idx = torch.nonzero(row >= float(row_top[k - 1])).squeeze(1).numpy()
                    row_top = row.numpy()[row_idx]
                out[r] = self._hits(row_idx.astype(np.int64), row_top, topk)
        return out

    def _modality_rows(self, want: Modality | None) -> tuple[np.ndarray | None, np.ndarray]:
        """(item ids, contiguous vectors) of one modality (None: all rows, no copy); copies are cached until the
        next add, so a filtered search pays for the copy once."""
        if want is None:
            return None, self.vectors
        if want not in self._rows_cache:
            ids = np.flatnonzero(self._codes == want.code).astype(np.int64)
            self._rows_cache[want] = (ids, np.ascontiguousarray(self.vectors[ids]))
        return self._rows_cache[want]

    def _exact_faiss(self, faiss: Any, q: np.ndarray, topk: int, allowed: list[Modality | None]) -> list[list[Hit]]:
        """Exact top-k by FAISS's flat k-NN (blocked inner products and heap selection, all cores), with
        vireid's tie rule: like the NumPy path it asks for k + 1, and a row whose k-th and (k+1)-th scores are
        equal is re-ranked from its full score row, ties by item id."""
        out: list[list[Hit]] = [[] for _ in allowed]
        for want in dict.fromkeys(allowed):
            rows = [i for i, a in enumerate(allowed) if a is want]
            ids, vecs = self._modality_rows(want)
            n_allowed = len(vecs)
            if n_allowed == 0:
                continue
            k = min(topk, n_allowed)
            block = np.ascontiguousarray(q[rows])
            top, idx = faiss.knn(block, vecs, min(k + 1, n_allowed), metric=faiss.METRIC_INNER_PRODUCT)
            for r, qrow, row_top, row_idx in zip(rows, block, top, idx, strict=True):
                if len(row_top) > k and row_top[k] == row_top[k - 1]:
                    # a tie crosses the cut: every item scoring >= the k-th, scored again together so equal
                    # vectors get equal scores, and the id tie-break decides
                    full = vecs @ qrow
                    kth = np.partition(full, n_allowed - k)[n_allowed - k]
                    row_idx = np.flatnonzero(full >= kth)
                    row_top = full[row_idx]
                pos = row_idx.astype(np.int64)
                out[r] = self._hits(pos if ids is None else ids[pos], row_top, topk)
        return out

    def _approximate(self, q: np.ndarray, topk: int, allowed: list[Modality | None]) -> list[list[Hit]]:
        """FAISS top-k for all queries at once; a modality filter over-fetches and widens until topk pass."""
        index = self._faiss_index()
        n = len(self)
        pools = np.array([topk if want is None else max(4 * topk, 32) for want in allowed], dtype=np.int64)
        out: list[list[Hit]] = [[] for _ in allowed]
        pending = np.arange(len(allowed))
        while len(pending):
            retry: list[int] = []
            for pool in np.unique(pools[pending]):
                rows = pending[pools[pending] == pool]
                k = int(min(pool, n))
                scores, ids = index.search(q[rows], k)
                for r, row_scores, row_ids in zip(rows, scores, ids, strict=True):
                    ok = row_ids >= 0
                    want = allowed[r]
                    if want is not None:
                        ok &= self._codes[np.clip(row_ids, 0, None)] == want.code
                    if ok.sum() >= topk or k >= n:
                        out[r] = self._hits(row_ids[ok].astype(np.int64), row_scores[ok], topk)
                    else:
                        pools[r] = pool * 4
                        retry.append(int(r))
            pending = np.array(retry, dtype=np.int64)
        return out

    # ------------------------------------------------------------------ persistence
    def _meta(self, count: int, generation: int) -> dict[str, Any]:
        meta = {"format": FORMAT, "version": VERSION, "generation": generation, "fingerprint": self.fingerprint,
                "feature": self.feature, "dim": self.dim, "count": count, "kind": self.kind, "params": self.params,
                "model": self.model, "roots": self.roots, "trained_count": self._trained_count}
        if self.kind != "flat":
            meta["faiss_count"] = self._faiss_on_disk
        return meta

    def _write_faiss(self, directory: Path) -> None:
        """Write index.faiss up to the committed count (atomically), then record that in meta.json; a failure is
        logged, not raised: the rows are committed, and the next open adds the ones the file lacks."""
        try:
            with atomic_path(directory / FAISS_FILE) as tmp:
                _import_faiss().write_index(self._faiss_index(), str(tmp))
            self._faiss_on_disk = len(self)
            write_json(directory / META, self._meta(len(self), self.generation + 1))
            self.generation += 1
        except Exception as exc:  # noqa: BLE001 - committed data are safe; the FAISS file catches up later
            log.warning("could not write %s (%s); it is brought up to date on the next open", directory / FAISS_FILE,
                        exc)

    def save(self, directory: str | Path | None = None) -> Path:
        """Write the whole index to `directory` (default: where it was opened) atomically: temp dir, then rename.

        For a new index or a rebuild; hold `index_lock(directory)` when another writer may be at work."""
        target = Path(directory) if directory is not None else self.directory
        if target is None:
            raise ValueError("GalleryIndex.save needs a directory (the index was not opened from one)")
        generation = self.generation + 1
        self._faiss_on_disk = len(self) if self.kind != "flat" else 0
        with atomic_dir(target) as tmp:
            np.save(tmp / VECTORS, self.vectors)
            con = sqlite3.connect(tmp / ITEMS)
            try:
                con.execute(_SCHEMA)
                con.executemany(_INSERT, [_row(it) for it in self.items])
                con.commit()
            finally:
                con.close()
            if self.kind != "flat":
                _import_faiss().write_index(self._faiss_index(), str(tmp / FAISS_FILE))
            old_images = target / IMAGES
            if old_images.is_dir():  # uploaded images travel with the index: hard links, copies across devices
                shutil.copytree(old_images, tmp / IMAGES, copy_function=_link_or_copy)
            (tmp / META).write_text(json.dumps(self._meta(len(self), generation), indent=2) + "\n")
        self.directory = target
        self.generation = generation
        return target

    def changed_on_disk(self) -> bool:
        """Whether another writer committed to this index's directory since it was read or written here."""
        if self.directory is None:
            return False
        return int(read_meta(self.directory).get("generation", 0)) != self.generation

    @classmethod
    def open(cls, directory: str | Path, extractor: Any = None, fingerprint: str | None = None) -> GalleryIndex:
        """Load and check an index: meta present, counts agree, model fingerprint matches when given.

        Takes no lock: meta.json is read before and after the data, and the read is retried when a writer
        committed in between, so the result is always one committed state."""
        d = Path(directory).expanduser()
        for attempt in range(8):
            try:
                index = cls._read(d)
                if int(read_meta(d).get("generation", 0)) == index.generation:
                    break
            except (FileNotFoundError, GalleryIndexError):
                if attempt == 7 or not (d.exists() or d.with_name(f".{d.name}.old").exists()):
                    raise
            time.sleep(0.02 * (attempt + 1))  # a writer is swapping or committing: read again
        if extractor is not None:
            index.check_model(extractor)
        elif fingerprint is not None and fingerprint != index.fingerprint:
            raise GalleryIndexError(f"gallery index {d} was built by model {index.fingerprint[:12]} but "
                                    f"{fingerprint[:12]} was expected; rebuild the index with the model you search "
                                    "with")
        return index

    @classmethod
    def _read(cls, d: Path) -> GalleryIndex:
        meta = read_meta(d)
        count = int(meta["count"])
        index = cls(int(meta["dim"]), fingerprint=meta["fingerprint"], feature=meta.get("feature", "bn"),
                    kind=meta.get("kind", "flat"), model=meta.get("model"), roots=meta.get("roots", ()),
                    params=meta.get("params"), directory=d)
        index.generation = int(meta.get("generation", 0))
        try:
            vectors = np.load(d / VECTORS, allow_pickle=False, mmap_mode="r")
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise GalleryIndexError(f"{d / VECTORS} cannot be read ({exc}); the index is damaged, rebuild it") from None
        if vectors.ndim != 2 or vectors.shape[1] != index.dim or vectors.dtype != np.float32:
            raise GalleryIndexError(f"{d / VECTORS} holds {vectors.dtype} {vectors.shape}, but {META} says "
                                    f"(count, {index.dim}) float32; the index is damaged, rebuild it")
        items = _read_items(d / ITEMS, count)
        parts = {f"{ITEMS} rows": len(items), f"{VECTORS} rows": int(vectors.shape[0])}
        if index.kind != "flat":
            faiss = _import_faiss()
            try:
                index._faiss = faiss.read_index(str(d / FAISS_FILE))
            except Exception as exc:  # faiss raises RuntimeError with C++ text
                raise GalleryIndexError(f"{d / FAISS_FILE} cannot be read ({str(exc).splitlines()[0]}); "
                                        "the index is damaged, rebuild it") from None
        # rows past the count are an uncommitted append (ignored); fewer rows than the count are a damaged index.
        # index.faiss holds exactly "faiss_count" rows: the count, or fewer when an append committed and was
        # stopped before it rewrote the FAISS file (the missing rows are added below)
        faiss_count = int(meta.get("faiss_count", count))
        if index._faiss is not None:
            parts[f"{FAISS_FILE} vectors"] = int(index._faiss.ntotal)
        if min(v for k, v in parts.items() if k != f"{FAISS_FILE} vectors") < count or (
                index._faiss is not None and not int(index._faiss.ntotal) == faiss_count <= count):
            raise GalleryIndexError(f"gallery index {d} is inconsistent: "
                                    + ", ".join(f"{k} = {v}" for k, v in {**parts, f"{META} count": count}.items())
                                    + "; the parts disagree in count (an interrupted copy or a damaged file), "
                                      "rebuild it")
        bad_ids = [it.id for i, it in enumerate(items) if it.id != i]
        if bad_ids:
            raise GalleryIndexError(f"{d / ITEMS}: item ids must be 0..{len(items) - 1} in order, found {bad_ids[:5]}; "
                                    "the index is damaged, rebuild it")
        index.vectors = np.array(vectors[:count])
        index.items = items
        index._trained_count = int(meta.get("trained_count") or len(items))
        index._codes = np.array([it.modality.code for it in items], dtype=np.int8)
        if index._faiss is not None:
            index._faiss_on_disk = faiss_count
            if faiss_count < count:  # the last append committed but did not get to write index.faiss
                index._faiss.add(index.vectors[faiss_count:])
        index._check_roots()
        return index

    def _check_roots(self) -> None:
        """Refuse image roots that would let the service read beyond the folders the index was built from: each
        root must be an absolute folder other than the file-system root, holding an indexed image."""
        paths = [Path(it.path) for it in self.items if Path(it.path).is_absolute()]
        meta = (self.directory or Path(".")) / META
        for r in self.roots:
            root = Path(r)
            if not root.is_absolute() or root == Path(root.anchor):
                raise GalleryIndexError(f"{meta} lists the image root {r!r}, which is not an absolute folder below the "
                                        "file-system root; the index was edited or damaged, rebuild it")
            if self.items and not any(root == p.parent or root in p.parents for p in paths):
                raise GalleryIndexError(f"{meta} lists the image root {r!r}, but no indexed image lies in it; the "
                                        "index was edited or damaged, rebuild it")

    def check_model(self, extractor: Any) -> None:
        """Refuse a FeatureExtractor other than the one that built this index."""
        if extractor.fingerprint == self.fingerprint:
            return
        built = self.model
        raise GalleryIndexError(
            f"gallery index {self.directory} was built by another model: index fingerprint "
            f"{self.fingerprint[:12]} (method {built.get('method')!r}, feature {self.feature!r}, checkpoint "
            f"{built.get('checkpoint')}) vs extractor {extractor.fingerprint[:12]} (method {extractor.method_name!r}, "
            f"feature {extractor.feature!r}, checkpoint {extractor.checkpoint_path}); features of different models "
            "are not comparable: search with the run that built the index, or rebuild it with `vireid index build`")

    # ------------------------------------------------------------------ images
    def describe(self) -> dict[str, Any]:
        """Counts per modality, the model, the approximate-index parameters, roots and size on disk."""
        n_vis = int(sum(it.modality is Modality.VISIBLE for it in self.items))
        size = sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file()) if self.directory else 0
        return {"index": str(self.directory) if self.directory else None, "kind": self.kind, "count": len(self),
                "visible": n_vis, "infrared": len(self) - n_vis, "dim": self.dim, "feature": self.feature,
                "fingerprint": self.fingerprint, "method": self.model.get("method"),
                "checkpoint": self.model.get("checkpoint"),
                "params": {k: self.params[k] for k in KIND_PARAMS[self.kind]},
                "roots": list(self.roots), "bytes": size}

    def image_path(self, item: IndexItem) -> Path:
        """The file of `item`, refused unless it lies inside the index directory or a recorded image root."""
        base = (self.directory or Path(".")).resolve()
        p = Path(item.path)
        full = (base / p).resolve() if not p.is_absolute() else p.resolve()
        allowed = [base, *(Path(r).resolve() for r in self.roots)]
        if not any(full == r or r in full.parents for r in allowed):
            raise GalleryIndexError(f"item {item.id} points at {full}, outside the index directory and its image roots "
                              f"({', '.join(map(str, allowed))}); refusing to read it")
        if full.suffix.lower() not in IMAGE_EXTENSIONS:
            raise GalleryIndexError(f"item {item.id} points at {full}, which is not an image file "
                                    f"({', '.join(sorted(IMAGE_EXTENSIONS))}); refusing to read it")
        return full


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The checked meta.json of the index at `directory` (format and version); GalleryIndexError naming the fix."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        old = d.with_name(f".{d.name}.old")
        if old.is_dir():
            raise GalleryIndexError(f"no gallery index at {d}, but its previous version is intact at {old} (a save "
                                    "was interrupted): `vireid index add` restores it, or rename it back to "
                                    f"{d.name}")
        raise GalleryIndexError(f"no gallery index at {d}: the directory does not exist; "
                          "create one with `vireid index build RUN_DIR --images DIR --out INDEX_DIR`")
    meta_path = d / META
    if not meta_path.is_file():
        raise GalleryIndexError(f"{d} is not a gallery index: {META} is missing (expected {META}, {VECTORS}, {ITEMS}); "
                          "rebuild it with `vireid index build`")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise GalleryIndexError(
            f"{meta_path} is damaged ({exc}); rebuild the index with `vireid index build`"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GalleryIndexError(f"{meta_path} is not a vireid gallery index description (format {FORMAT!r} expected)")
    if meta.get("version") != VERSION:
        raise GalleryIndexError(f"{meta_path} has index format version {meta.get('version')!r}; this vireid reads "
                          f"version {VERSION}. Rebuild the index with this version")
    _check_meta_fields(meta_path, meta)
    return meta


def _check_meta_fields(path: Path, meta: dict[str, Any]) -> None:
    """GalleryIndexError naming the first field of meta.json that is missing or of the wrong type."""
    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    def count_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    checks = {
        "dim": (positive_int, "an integer >= 1"),
        "count": (count_int, "an integer >= 0"),
        "fingerprint": (lambda v: isinstance(v, str) and bool(v), "the model's fingerprint (a non-empty string)"),
        "kind": (lambda v: v in KINDS, f"one of {', '.join(KINDS)}"),
    }
    optional = {
        "generation": (count_int, "an integer >= 0"),
        "feature": (lambda v: isinstance(v, str) and bool(v), "a feature name"),
        "model": (lambda v: isinstance(v, dict), "an object"),
        "params": (lambda v: isinstance(v, dict), "an object"),
        "roots": (lambda v: isinstance(v, list) and all(isinstance(r, str) for r in v), "a list of folders"),
        "trained_count": (count_int, "an integer >= 0"),
    }
    for key, (ok, what) in {**checks, **optional}.items():
        if key not in meta:
            if key in checks:
                raise GalleryIndexError(f"{path} has no {key!r} (expected {what}); the index is damaged, rebuild it "
                                        "with `vireid index build`")
            continue
        if not ok(meta[key]):
            raise GalleryIndexError(f"{path}: {key!r} must be {what}, got {meta[key]!r}; the index is damaged, rebuild "
                                    "it with `vireid index build`")


def _check_params(params: dict) -> dict[str, int]:
    """Refuse unknown or non-positive index parameters (nlist may be 0: automatic)."""
    import difflib  # noqa: PLC0415

    out = {}
    for key, value in params.items():
        if key not in DEFAULT_PARAMS:
            close = difflib.get_close_matches(key, DEFAULT_PARAMS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GalleryIndexError(f"unknown index parameter {key!r}{hint}; known: {', '.join(DEFAULT_PARAMS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "nlist" else 1):
            raise GalleryIndexError(
                f"index parameter {key} must be an integer >= {0 if key == 'nlist' else 1}, got {value!r}"
            )
        out[key] = value
    return out


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _row(it: IndexItem) -> tuple:
    return (it.id, it.path, it.modality.value, it.camera, it.pid, it.timestamp, json.dumps(it.tags, sort_keys=True))


def _read_items(path: Path, count: int) -> list[IndexItem]:
    if not path.is_file():
        raise GalleryIndexError(f"{path} is missing; the index is incomplete, rebuild it with `vireid index build`")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute(  # rows past the committed count belong to a writer that was killed
                "SELECT id, path, modality, camera, pid, timestamp, tags FROM items WHERE id < ? ORDER BY id", (count,)
            ).fetchall()
        finally:
            con.close()
        return [IndexItem(path=r[1], modality=Modality.parse(r[2]), camera=r[3], pid=r[4], timestamp=r[5],
                          tags=json.loads(r[6] or "{}"), id=int(r[0])) for r in rows]
    except (sqlite3.Error, ValueError) as exc:
        raise GalleryIndexError(
            f"{path} cannot be read as the item table ({exc}); the index is damaged, rebuild it"
        ) from None
