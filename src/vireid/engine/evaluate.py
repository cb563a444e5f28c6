"""Evaluate: a trained method under a protocol (dataset read once, embed once, score, save), or a feature file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, options_dict
from ..core import EvalTrial, EvaluationError, Modality, Sample, VireidError
from ..data.datasets import ReIDDataset
from ..inference import make_extractor
from ..methods import Method
from ..protocols import check_dataset_matches, load_protocol_dataset, protocol_from_samples
from ..utils.distributed import DistInfo
from .evaluator import Evaluator
from .results import EvalResults, mean_std


def validation_trial(val: Sequence[Sample]) -> EvalTrial:
    """Held-out identities: every infrared image queries every visible image (SYSU location rule)."""
    query = sorted(s for s in val if s.modality is Modality.INFRARED)
    gallery = sorted(s for s in val if s.modality is Modality.VISIBLE)
    return EvalTrial("val", query, gallery, rule="sysu_location", cmc_kind="identity")


def run_trials(method: Method, cfg: Config, trials: list[EvalTrial], device: torch.device, dist: DistInfo,
               *, features: Sequence[str] = ("bn",), progress: bool = False) -> dict[str, dict[str, float]]:
    """Rank-1/mAP/mINP of each feature kind, averaged over `trials`.

    Validation during training; the Evaluator scores.
    """
    extract = make_extractor(method, cfg.data.height, cfg.data.width, device, flip=cfg.eval.flip,
                             batch_size=cfg.eval.batch_size, dist=dist, progress=progress, kinds=features)
    results = Evaluator(trials, features=features, distance=cfg.eval.distance).run(extract)
    out: dict[str, dict[str, float]] = {}
    for kind in features:
        rows = [t.values for entry in results.protocols.values() for t in entry.features[kind].trials]
        mean = mean_std(rows)[0]
        out[kind] = {"rank1": float(mean["rank1"]), "mAP": float(mean["mAP"]), "mINP": float(mean["mINP"])}
    return out


def evaluate_method(method: Method, cfg: Config, *, protocol: str | None = None, options: dict | None = None,
                    root: str | Path | None = None, dataset: ReIDDataset | None = None,
                    out_dir: str | Path | None = None, device: str | torch.device = "cpu",
                    dist: DistInfo | None = None, progress: bool = True, flip: bool | None = None,
                    rerank: bool | None = None, features: Sequence[str] | None = None,
                    meta: dict | None = None) -> EvalResults:
    """Evaluate `method` under a protocol (default: cfg.eval) and return the Evaluator's results.

    Args:
        protocol, options: a registered protocol and its options (default: cfg.eval.protocol and .options).
        root: the dataset root (default: cfg.data.root); ignored when `dataset` is given.
        dataset: an already loaded dataset (its test samples are used; nothing is read again).
        out_dir: where results.json and the audited trial lists go (None: nowhere).
        flip, rerank, features: default to cfg.eval's.

    Examples::

        results = evaluate_method(method, cfg, protocol="sysu", options={"mode": "indoor"})
        print(results.format_table())
    """
    name = protocol or cfg.eval.protocol
    opts = options_dict(cfg.eval.options if options is None and name == cfg.eval.protocol else options)
    flip = cfg.eval.flip if flip is None else flip
    rerank = cfg.eval.rerank if rerank is None else rerank
    kinds = tuple(features or cfg.eval.features)
    if dataset is None:
        dataset = load_protocol_dataset(name, root or cfg.data.root, **opts)
    else:
        check_dataset_matches(name, dataset, opts)
    trials = list(protocol_from_samples(name, dataset.test, root=dataset.root, **opts).trials())
    extract = make_extractor(method, cfg.data.height, cfg.data.width, torch.device(device), flip=flip,
                             batch_size=cfg.eval.batch_size, dist=dist, progress=progress, kinds=kinds)
    evaluator = Evaluator(trials, features=kinds, distance=cfg.eval.distance, rerank=rerank,
                          meta={"dataset": cfg.data.name, "protocol": name, "options": opts, "flip": flip,
                                "method": cfg.method.name, **(meta or {})})
    return evaluator.run(extract, out_dir=out_dir)


# ---------------------------------------------------------------------- saved feature files

NPZ_KEYS = ("pids", "camids", "modalities", "paths")


def evaluate_npz(npz_path: str | Path, protocol: str, options: dict | None = None,
                 out_dir: str | Path | None = None, **evaluator_kwargs: Any) -> EvalResults:
    """Evaluate a saved feature file under `protocol` ("sysu", "regdb", "llcm") with its options.

    The .npz holds `features` (N, D) or `features_<kind>` per kind, and `pids`, `camids`,
    `modalities` (0 visible / 1 infrared, or names such as "visible", "ir"), `paths` (unique), one
    entry per row: the test set. The protocol builds its trials from these samples (SYSU official
    galleries need options rand_perm_path=... or root=<dataset root>); features are looked up by
    path. `evaluator_kwargs` go to Evaluator (features, distance, rerank, rerank_params, max_rank,
    meta); by default every kind in the file is scored. With `out_dir`, writes results.json and the
    gallery lists there.
    """
    path = Path(npz_path).expanduser()
    samples, kinds = read_feature_file(path)
    opts = dict(options or {})
    root = opts.pop("root", None)
    proto = protocol_from_samples(protocol, samples, root=root, **opts)
    trials = list(proto.trials())
    row = {s: i for i, s in enumerate(samples)}

    def extract(batch: list[Sample]) -> dict[str, np.ndarray]:
        idx = np.array([row[s] for s in batch], dtype=np.int64)
        return {k: v[idx] for k, v in kinds.items()}

    kwargs = dict(evaluator_kwargs)
    kwargs.setdefault("features", tuple(kinds))
    meta = {**proto.describe(), "features_file": str(path), **dict(kwargs.pop("meta", None) or {})}
    return Evaluator(trials, meta=meta, **kwargs).run(extract, out_dir=out_dir)


def read_feature_file(path: str | Path) -> tuple[list[Sample], dict[str, np.ndarray]]:
    """(samples, {kind: (N, D) array}) of a feature file in `vireid eval`'s .npz format: `features` or
    `features_<kind>`, and `pids`, `camids`, `modalities`, `paths` (unique), one entry per row. Every problem is
    an EvaluationError naming the file and the array."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvaluationError(f"feature file {path} does not exist; pass a .npz written like `vireid eval` reads")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as exc:
        raise EvaluationError(f"{path}: cannot read ({exc}); save strings as unicode arrays (np.array(list_of_str)) "
                              "rather than object arrays") from None
    except Exception as exc:
        raise EvaluationError(f"{path}: not a readable .npz file ({exc})") from None
    for key in NPZ_KEYS:
        if key not in arrays:
            raise EvaluationError(f"{path}: missing array {key!r} (has: {', '.join(sorted(arrays))}); a feature file "
                                  f"needs features (or features_<kind>), {', '.join(NPZ_KEYS)}")
    kinds = {k[len("features_"):]: v for k, v in arrays.items() if k.startswith("features_")}
    if "features" in arrays:
        kinds.setdefault("features", arrays["features"])
    if not kinds:
        raise EvaluationError(f"{path}: missing array 'features' (or 'features_<kind>', e.g. features_bn); "
                              f"has: {', '.join(sorted(arrays))}")
    samples = _npz_samples(path, arrays)
    n = len(samples)
    for kind, arr in kinds.items():
        if arr.ndim != 2 or arr.shape[0] != n:
            raise EvaluationError(f"{path}: features {kind!r} has shape {arr.shape}, expected ({n}, D) to match "
                                  f"the {n} paths")
    return samples, kinds


def _npz_samples(path: Path, arrays: dict[str, np.ndarray]) -> list[Sample]:
    pids, cams, mods, paths = (arrays[k] for k in NPZ_KEYS)
    n = len(paths)
    for key, arr in (("pids", pids), ("camids", cams), ("modalities", mods)):
        if arr.ndim != 1 or len(arr) != n:
            raise EvaluationError(f"{path}: {key!r} has shape {arr.shape}, expected ({n},) like 'paths'")
    if len(set(map(str, paths))) != n:
        raise EvaluationError(f"{path}: 'paths' must be unique (features are looked up by path)")
    out = []
    for p, pid, cam, mod in zip(paths, pids, cams, mods, strict=True):
        try:
            if np.issubdtype(np.asarray(mod).dtype, np.number) or str(mod).strip() in ("0", "1"):
                modality = Modality.from_code(int(mod))
            else:
                modality = Modality.parse(str(mod))
        except (ValueError, VireidError) as exc:
            raise EvaluationError(f"{path}: bad entry in 'modalities' for {p}: {exc}") from None
        out.append(Sample(str(p), int(pid), int(cam), modality))
    return out
