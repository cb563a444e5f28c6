"""GalleryIndex: feature vectors + an SQLite table of items + meta.json, saved atomically, checked on open.

Directory layout (format "vireid-gallery-index", version 1):

- ``vectors.npy``: (count, dim) float32, row i is item id i (L2-normalised features);
- ``index.faiss``: only for ``kind="ivf"`` or ``"hnsw"`` (FAISS, optional extra ``vireid[faiss]``);
- ``items.sqlite``: table ``items(id, path, modality, camera, pid, timestamp, tags)``;
- ``meta.json``: format, version, model fingerprint and description, feature kind, dim, count, kind,
  FAISS parameters and the image roots that served paths must stay inside;
- ``images/``: images added through the service (paths stored relative to the index directory).

Scores are inner products of L2-normalised vectors (cosine similarity); higher is better.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..core import GalleryIndexError, Modality
from ..utils.atomic import atomic_dir

FORMAT = "vireid-gallery-index"
VERSION = 1
KINDS = ("flat", "ivf", "hnsw")
# nlist 0 = automatic (4 * sqrt(count)); train_per_list caps the k-means sample at nlist * train_per_list rows
DEFAULT_PARAMS: dict[str, int] = {"nlist": 0, "nprobe": 16, "train_per_list": 64, "hnsw_m": 32,
                                  "ef_search": 128, "ef_construction": 80}
KIND_PARAMS: dict[str, tuple[str, ...]] = {"flat": (), "ivf": ("nlist", "nprobe", "train_per_list"),
                                           "hnsw": ("hnsw_m", "ef_search", "ef_construction")}
_SCORE_BUDGET = 512 * 2 ** 20  # bytes of float32 scores per block of queries in exact search
META, VECTORS, ITEMS, FAISS_FILE, IMAGES = "meta.json", "vectors.npy", "items.sqlite", "index.faiss", "images"

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
        self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        self.items: list[IndexItem] = []
        self._codes = np.zeros(0, dtype=np.int8)
        self._faiss: Any = None
        self._trained_count = 0  # gallery size when the IVF quantizer was trained (retrained after 4x growth)

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
    def add(self, vectors: np.ndarray, items: Sequence[IndexItem]) -> list[int]:
        """Append rows; returns the new ids (consecutive, starting at the current count)."""
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
        self.vectors = np.concatenate([self.vectors, vectors]) if start else vectors.copy()
        self.items.extend(new)
        self._codes = np.concatenate([self._codes, np.array([it.modality.code for it in new], dtype=np.int8)])
        if self._faiss is not None:
            if self.kind == "ivf" and len(self) > 4 * max(self._trained_count, 1):
                self._faiss = None  # centroids trained on a quarter of the data or less: retrain on the next search
            else:
                self._faiss.add(vectors)
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
        """Exact top-k of one block of queries: one matrix product, then a top-k per modality group."""
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
    def save(self, directory: str | Path | None = None) -> Path:
        """Write the index to `directory` (default: where it was opened) atomically: temp dir, then rename."""
        target = Path(directory) if directory is not None else self.directory
        if target is None:
            raise ValueError("GalleryIndex.save needs a directory (the index was not opened from one)")
        with atomic_dir(target) as tmp:
            np.save(tmp / VECTORS, self.vectors)
            con = sqlite3.connect(tmp / ITEMS)
            try:
                con.execute(_SCHEMA)
                con.executemany(
                    "INSERT INTO items (id, path, modality, camera, pid, timestamp, tags) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(it.id, it.path, it.modality.value, it.camera, it.pid, it.timestamp,
                      json.dumps(it.tags, sort_keys=True)) for it in self.items])
                con.commit()
            finally:
                con.close()
            if self.kind != "flat":
                _import_faiss().write_index(self._faiss_index(), str(tmp / FAISS_FILE))
            old_images = target / IMAGES
            if old_images.is_dir():  # uploaded images travel with the index: hard links, copies across devices
                shutil.copytree(old_images, tmp / IMAGES, copy_function=_link_or_copy)
            meta = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "feature": self.feature,
                    "dim": self.dim, "count": len(self), "kind": self.kind, "params": self.params,
                    "model": self.model, "roots": self.roots, "trained_count": self._trained_count}
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        self.directory = target
        return target

    @classmethod
    def open(cls, directory: str | Path, extractor: Any = None, fingerprint: str | None = None) -> GalleryIndex:
        """Load and check an index: meta present, counts agree, model fingerprint matches when given."""
        d = Path(directory).expanduser()
        meta = read_meta(d)
        index = cls(int(meta["dim"]), fingerprint=meta["fingerprint"], feature=meta.get("feature", "bn"),
                    kind=meta.get("kind", "flat"), model=meta.get("model"), roots=meta.get("roots", ()),
                    params=meta.get("params"), directory=d)
        try:
            vectors = np.load(d / VECTORS, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise GalleryIndexError(f"{d / VECTORS} cannot be read ({exc}); the index is damaged, rebuild it") from None
        if vectors.ndim != 2 or vectors.shape[1] != index.dim or vectors.dtype != np.float32:
            raise GalleryIndexError(f"{d / VECTORS} holds {vectors.dtype} {vectors.shape}, but {META} says "
                              f"(count, {index.dim}) float32; the index is damaged, rebuild it")
        items = _read_items(d / ITEMS)
        counts = {f"{ITEMS} rows": len(items), f"{VECTORS} rows": vectors.shape[0], f"{META} count": meta.get("count")}
        if index.kind != "flat":
            faiss = _import_faiss()
            try:
                index._faiss = faiss.read_index(str(d / FAISS_FILE))
            except Exception as exc:  # faiss raises RuntimeError with C++ text
                raise GalleryIndexError(f"{d / FAISS_FILE} cannot be read ({str(exc).splitlines()[0]}); "
                                  "the index is damaged, rebuild it") from None
            counts[f"{FAISS_FILE} vectors"] = int(index._faiss.ntotal)
        if len(set(counts.values())) != 1:
            raise GalleryIndexError(f"gallery index {d} is inconsistent: "
                              + ", ".join(f"{k} = {v}" for k, v in counts.items())
                              + "; the parts disagree in count (an interrupted copy or a damaged file), rebuild it")
        bad_ids = [it.id for i, it in enumerate(items) if it.id != i]
        if bad_ids:
            raise GalleryIndexError(f"{d / ITEMS}: item ids must be 0..{len(items) - 1} in order, found {bad_ids[:5]}; "
                              "the index is damaged, rebuild it")
        index.vectors = vectors
        index.items = items
        index._trained_count = int(meta.get("trained_count") or len(items))
        index._codes = np.array([it.modality.code for it in items], dtype=np.int8)
        if extractor is not None:
            index.check_model(extractor)
        elif fingerprint is not None and fingerprint != index.fingerprint:
            raise GalleryIndexError(f"gallery index {d} was built by model {index.fingerprint[:12]} but "
                              f"{fingerprint[:12]} was expected; rebuild the index with the model you search with")
        return index

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
        return full


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The checked meta.json of the index at `directory` (format and version); GalleryIndexError naming the fix."""
    d = Path(directory).expanduser()
    if not d.is_dir():
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
    return meta


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


def _read_items(path: Path) -> list[IndexItem]:
    if not path.is_file():
        raise GalleryIndexError(f"{path} is missing; the index is incomplete, rebuild it with `vireid index build`")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT id, path, modality, camera, pid, timestamp, tags FROM items ORDER BY id"
            ).fetchall()
        finally:
            con.close()
        return [IndexItem(path=r[1], modality=Modality.parse(r[2]), camera=r[3], pid=r[4], timestamp=r[5],
                          tags=json.loads(r[6] or "{}"), id=int(r[0])) for r in rows]
    except (sqlite3.Error, ValueError) as exc:
        raise GalleryIndexError(
            f"{path} cannot be read as the item table ({exc}); the index is damaged, rebuild it"
        ) from None
