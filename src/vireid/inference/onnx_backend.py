"""The ONNX Runtime backend of FeatureExtractor: the graph `vireid export` writes, cached beside the run.

The graph is exported on first use (uint8 input, the run's flip fusion, the parity check of
`onnx_export`, which `vireid export` runs too, against the PyTorch path) and written atomically to
``<run>/onnx/<method>-<feature>-<fingerprint[:16]>.onnx`` (a checkpoint file outside a run's
``checkpoints/``: ``onnx/`` beside it). The
file name carries the extractor's fingerprint (weights, method, feature, flip, input size), and the graph
records the full fingerprint in its metadata, so a new checkpoint exports a new graph and a graph is never
used for weights other than those it was exported and verified from.

Index fingerprints do not depend on the backend: both backends of one checkpoint report the checkpoint's
fingerprint, because a graph is only ever written after ONNX Runtime matched PyTorch within the parity
tolerance (`PARITY_TOLERANCE`, max abs difference per feature) on the parity batch. An index built with
one backend is searched with the other; scores may differ by up to about that tolerance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import ExportError, Modality

PARITY_TOLERANCE = 1e-4  # max abs feature difference ORT vs PyTorch for the graph to be written (export's default)
FINGERPRINT_KEY = "vireid_fingerprint"  # metadata key of the exported graph


def default_threads() -> int:
    """Intra-op threads to use: the CPU cores this process may run on, capped by $OMP_NUM_THREADS when set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        cores = min(cores, int(env))  # the user (or a launcher) already divided the machine: respect it
    return max(1, cores)


def require_onnxruntime() -> Any:
    """The onnxruntime module (and onnx, which the export needs); ExportError naming the extra when missing."""
    import importlib

    for name in ("onnx", "onnxruntime"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            raise ExportError(f"the onnx backend needs the {name!r} package, which is not installed; run "
                              "`pip install vireid[export]`, or use --backend torch") from None
    return mod


def cache_dir_for(source: Path, checkpoint: Path) -> Path:
    """Where a run's exported graphs are cached: <run>/onnx (also for a checkpoint inside <run>/checkpoints/,
    as an index records it), else onnx/ beside a checkpoint file."""
    if source.is_dir():
        return source / "onnx"
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "onnx"
    return checkpoint.parent / "onnx"


class OnnxRunner:
    """ONNX Runtime sessions over the cached graphs of a FeatureExtractor (exported and verified on first use).

    A method whose `embed` depends on the modality (`inference_spec().modality_specific`) gets one graph per
    modality (`...-visible.onnx`, `...-infrared.onnx`), so each image runs its own branch only, as in the
    PyTorch path; the one graph `vireid export` writes runs both branches on every image. Other methods get
    that one graph."""

    def __init__(self, extractor: Any, *, threads: int | None = None, cache_dir: str | Path | None = None) -> None:
        self.ort = require_onnxruntime()
        self.extractor = extractor
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads) if threads else default_threads()
        base = Path(cache_dir).expanduser() if cache_dir is not None else cache_dir_for(extractor.source,
                                                                                         extractor.checkpoint_path)
        fx = extractor
        stem = f"{fx.method_name}-{fx.feature}-{fx.fingerprint[:16]}"
        branches: tuple[Modality | None, ...] = (None,)
        if fx.method.inference_spec().modality_specific:
            branches = (Modality.VISIBLE, Modality.INFRARED)
        self.paths = {m: base / (f"{stem}-{m.value}.onnx" if m is not None else f"{stem}.onnx") for m in branches}
        self.exported = False  # whether this runner exported a graph (False: all reused from the cache)
        self.sessions = {m: self._load(p, m) for m, p in self.paths.items()}
        self.inputs = {m: {i.name for i in sess.get_inputs()} for m, sess in self.sessions.items()}

    @property
    def path(self) -> Path:
        """The first cached graph (the only one unless the method is modality-specific)."""
        return next(iter(self.paths.values()))

    def _providers(self) -> list[str]:
        device = str(self.extractor.device)
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in self.ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        raise ExportError(f"the onnx backend cannot run on device {device!r}: this onnxruntime offers "
                          f"{', '.join(self.ort.get_available_providers())}; use --device cpu or --backend torch")

    def _session(self, path: Path) -> Any:
        opts = self.ort.SessionOptions()
        # intra-op threads set on purpose: ORT's default (every core) oversubscribes a machine shared with
        # other processes, which the serving benchmarks measured as up to 60x slower forwards
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return self.ort.InferenceSession(str(path), sess_options=opts, providers=self._providers())

    def _matches(self, session: Any, modality: Modality | None) -> bool:
        meta = session.get_modelmeta().custom_metadata_map
        return (meta.get(FINGERPRINT_KEY) == self.extractor.fingerprint and meta.get("vireid_input") == "uint8"
                and meta.get("vireid_modality") == ("both" if modality is None else modality.value))

    def _load(self, path: Path, modality: Modality | None) -> Any:
        if path.is_file():
            try:
                session = self._session(path)
                if self._matches(session, modality):
                    return session
            except Exception:  # noqa: BLE001 - an unreadable cache file is exported again below, not fatal
                pass
        self._export(path, modality)
        session = self._session(path)
        if not self._matches(session, modality):
            raise ExportError(f"{path}: the exported graph does not record fingerprint "
                              f"{self.extractor.fingerprint[:12]}; delete the file and retry")
        return session

    def _export(self, path: Path, modality: Modality | None) -> None:
        from .onnx_export import export_extractor

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create the ONNX cache folder {path.parent} ({exc.strerror or exc}); "
                              "pass a writable one (onnx_cache=DIR, --onnx-cache DIR)") from None
        try:
            export_extractor(self.extractor, path, input_kind="uint8", tolerance=PARITY_TOLERANCE, modality=modality)
        except OSError as exc:
            raise ExportError(f"cannot write the ONNX cache {path} ({exc.strerror or exc}); pass a writable "
                              "folder (onnx_cache=DIR, --onnx-cache DIR)") from None
        self.exported = True

    def features(self, items: Sequence[Any], modalities: Sequence[Modality], batch_size: int) -> np.ndarray:
        """(N, D) float32 features of `items`, in input order, `batch_size` images per session run."""
        from ..data.transforms import eval_image

        fx = self.extractor
        out = np.zeros((len(items), fx.dim), dtype=np.float32)
        groups: dict[Modality | None, list[int]] = {}
        for i, m in enumerate(modalities):
            groups.setdefault(m if None not in self.sessions else None, []).append(i)
        for branch, idx in groups.items():
            session, names = self.sessions[branch], self.inputs[branch]
            for j in range(0, len(idx), batch_size):
                rows = idx[j:j + batch_size]
                # the same decode and LANCZOS resize as the PyTorch path; the normalisation is inside the graph
                pixels = np.stack([eval_image(items[i], fx.height, fx.width) for i in rows])
                feed = {"images": np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)),
                        "modality": np.array([modalities[i].code for i in rows], dtype=np.int64)}
                out[rows] = session.run(["features"], {k: v for k, v in feed.items() if k in names})[0]
        return out
