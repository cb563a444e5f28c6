"""The Evaluator: embed every unique sample of a set of trials once, score each trial, aggregate.

Per trial and feature kind: distance (cosine on L2-normalised features, dist = -q.g; or
Euclidean), then `evaluate_ranking` under the trial's rule and CMC kind. Optional k-reciprocal
re-ranking is reported under its own "<kind>+rerank" label, never in place of the plain numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..core import ConfigError, EvalTrial, EvaluationError, Modality, Sample, VireidError
from ..metrics.ranking import rank_queries, summarize
from ..metrics.rerank import k_reciprocal_rerank
from .results import RERANK_SUFFIX, EvalResults, FeatureResult, ProtocolResult, TrialResult

DISTANCES = ("cosine", "euclidean")
Extract = Callable[[list[Sample]], Mapping[str, "torch.Tensor | np.ndarray"]]

# Largest query-by-gallery distance block materialised at once (bytes, float32).
_DIST_BLOCK_BYTES = 256 * 2**20


class Evaluator:
    """Scores `trials` with features from one `extract` call; see `run`."""

    def __init__(self, trials: Sequence[EvalTrial], *, features: Sequence[str] = ("bn", "pool"),
                 distance: str = "cosine", rerank: bool = False,
                 rerank_params: "tuple[int, int, float]" = (20, 6, 0.3), max_rank: int = 20,
                 meta: "dict | None" = None) -> None:
        self.trials = list(trials)
        if not self.trials:
            raise EvaluationError("Evaluator needs at least one trial; the protocol produced none")
        names = [t.name for t in self.trials]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise EvaluationError(f"trial names must be unique, repeated: {', '.join(dup)}")
        if isinstance(features, str):
            features = (features,)
        self.features = tuple(features)
        if not self.features:
            raise ConfigError("Evaluator: features must name at least one feature kind (e.g. 'bn')")
        if distance not in DISTANCES:
            raise ConfigError(f"Evaluator: distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        self.distance = distance
        self.rerank = bool(rerank)
        if len(tuple(rerank_params)) != 3:
            raise ConfigError(f"Evaluator: rerank_params must be (k1, k2, lambda), got {rerank_params!r}")
        k1, k2, lam = rerank_params
        self.rerank_params = (int(k1), int(k2), float(lam))
        self.max_rank = int(max_rank)
        self.meta = dict(meta or {})
        self.samples = unique_samples(self.trials)
        self._pos = {s: i for i, s in enumerate(self.samples)}

    def run(self, extract: Extract, out_dir: "str | Path | None" = None) -> EvalResults:
        """Call `extract(unique samples)` once, score every trial; with `out_dir`, also write the
        trials' gallery lists (out_dir/galleries/) and results.json (atomically)."""
        feats = self._features(extract)
        results = EvalResults(meta=self._run_meta())
        for trial in self.trials:
            key = protocol_key(trial)
            entry = results.protocols.get(key)
            if entry is None:
                entry = results.protocols[key] = ProtocolResult(key, self._protocol_info(trial))
            q_idx = torch.tensor([self._pos[s] for s in trial.query], dtype=torch.long)
            g_idx = torch.tensor([self._pos[s] for s in trial.gallery], dtype=torch.long)
            if len(g_idx) == 0:
                raise EvaluationError(f"trial {trial.name!r} has an empty gallery; check the protocol's test set")
            if len(q_idx) == 0:
                raise EvaluationError(f"trial {trial.name!r} has no query; check the protocol's test set")
            ids = _trial_ids(trial)
            for kind in self.features:
                f = feats[kind]
                q, g = f[q_idx.to(f.device)], f[g_idx.to(f.device)]
                metrics = self._score(q, g, ids, trial)
                _feature(entry, kind, False).trials.append(TrialResult.from_metrics(trial.name, metrics))
                if self.rerank:
                    metrics = self._score_reranked(q, g, ids, trial)
                    _feature(entry, kind, True).trials.append(TrialResult.from_metrics(trial.name, metrics))
        if out_dir is not None:
            from ..protocols.common import write_trial_lists

            write_trial_lists(self.trials, out_dir)
            results.save(Path(out_dir) / "results.json")
        return results

    # ------------------------------------------------------------------ internals

    def _features(self, extract: Extract) -> dict[str, torch.Tensor]:
        """Validated (N, D) float tensors per kind, L2-normalised for the cosine distance."""
        raw = extract(list(self.samples))
        if not isinstance(raw, Mapping):
            raise EvaluationError(f"extract must return a dict {{feature kind: (N, D) array}}, got {type(raw).__name__}")
        out = {}
        n = len(self.samples)
        for kind in self.features:
            if kind not in raw:
                raise EvaluationError(f"extract returned no feature {kind!r} (it returned: {', '.join(map(str, raw))}); "
                                      f"pass features=({', '.join(map(repr, raw))}) or fix the method's embed()")
            f = raw[kind]
            t = f.detach() if isinstance(f, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(f)))
            if t.dim() != 2 or int(t.shape[0]) != n:
                raise EvaluationError(f"feature {kind!r} has shape {tuple(t.shape)}; expected ({n}, D): one row per "
                                      "sample passed to extract, in the same order")
            t = t.float()
            bad = ~torch.isfinite(t).all(1)
            if bool(bad.any()):
                first = int(bad.nonzero()[0, 0])
                raise EvaluationError(f"feature {kind!r} has non-finite values in {int(bad.sum())} of {n} rows; the "
                                      f"first is row {first} ({self.samples[first].path}). The model produced NaN/inf")
            if self.distance == "cosine":
                t = torch.nn.functional.normalize(t, p=2, dim=1)
            out[kind] = t
        return out

    def _score(self, q: torch.Tensor, g: torch.Tensor, ids: dict, trial: EvalTrial):
        """Metrics of one trial, distances computed block by block so Q x G never lives whole."""
        rows = max(1, _DIST_BLOCK_BYTES // (4 * max(1, int(g.shape[0]))))
        parts = []
        for s in range(0, int(q.shape[0]), rows):
            d = self._distance(q[s:s + rows], g)
            parts.append(rank_queries(d, ids["qp"][s:s + rows], ids["gp"], ids["qc"][s:s + rows], ids["gc"],
                                      rule=trial.rule, cmc=trial.cmc_kind))
        ap, inp, hit = (np.concatenate(x) for x in zip(*parts))
        return self._summarize(ap, inp, hit, trial, ids)

    def _score_reranked(self, q: torch.Tensor, g: torch.Tensor, ids: dict, trial: EvalTrial):
        k1, k2, lam = self.rerank_params
        d = k_reciprocal_rerank(_sq_dist(q, g), _sq_dist(q, q), _sq_dist(g, g), k1, k2, lam)
        ap, inp, hit = rank_queries(d, ids["qp"], ids["gp"], ids["qc"], ids["gc"], rule=trial.rule, cmc=trial.cmc_kind)
        return self._summarize(ap, inp, hit, trial, ids)

    def _summarize(self, ap, inp, hit, trial: EvalTrial, ids: dict):
        if not (hit > 0).any():
            shared = len(set(ids["qp"].tolist()) & set(ids["gp"].tolist()))
            raise EvaluationError(
                f"trial {trial.name!r}: no valid query among {len(hit)} (gallery {len(ids['gp'])} images, "
                f"{shared} identities shared with the query) under rule {trial.rule!r}; every true match was "
                "filtered out or query and gallery share no identity")
        return summarize(ap, inp, hit, max_rank=self.max_rank, num_gallery=len(ids["gp"]))

    def _distance(self, q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.distance == "cosine":
            return -(q @ g.T)
        return torch.cdist(q, g)

    def _run_meta(self) -> dict[str, Any]:
        k1, k2, lam = self.rerank_params
        return {**self.meta, "features": list(self.features), "distance": self.distance, "rerank": self.rerank,
                "rerank_params": {"k1": k1, "k2": k2, "lambda": lam} if self.rerank else None,
                "max_rank": self.max_rank, "num_trials": len(self.trials), "num_unique_samples": len(self.samples)}

    def _protocol_info(self, trial: EvalTrial) -> dict[str, Any]:
        info = trial.info
        k1, k2, lam = self.rerank_params
        out = {
            "dataset": info.get("dataset", self.meta.get("dataset")),
            "options": dict(info.get("options", self.meta.get("options", {}))),
            "direction": info.get("direction"),
            "gallery_sampler": info.get("gallery_sampler"),
            "rule": trial.rule, "cmc": trial.cmc_kind,
            "flip": self.meta.get("flip"),
            "distance": self.distance, "rerank": self.rerank,
            "rerank_params": {"k1": k1, "k2": k2, "lambda": lam} if self.rerank else None,
            "max_rank": self.max_rank,
        }
        if "flip_style" in self.meta:
            out["flip_style"] = self.meta["flip_style"]
        if "label" in info:
            out["label"] = info["label"]
        return out


def unique_samples(trials: Sequence[EvalTrial]) -> list[Sample]:
    """Every sample of the trials' queries and galleries once, in first-seen order."""
    seen: dict[Sample, None] = {}
    for t in trials:
        for s in list(t.query) + list(t.gallery):
            seen.setdefault(s, None)
    return list(seen)


def protocol_key(trial: EvalTrial) -> str:
    """The results.json key of a trial: info['protocol'], else its name without the last part."""
    key = trial.info.get("protocol")
    if key:
        return str(key)
    return trial.name.rsplit("/", 1)[0] if "/" in trial.name else trial.name


def _feature(entry: ProtocolResult, kind: str, rerank: bool) -> FeatureResult:
    label = kind + (RERANK_SUFFIX if rerank else "")
    if label not in entry.features:
        entry.features[label] = FeatureResult(kind, rerank, [])
    return entry.features[label]


def _trial_ids(trial: EvalTrial) -> dict[str, np.ndarray]:
    return {"qp": np.array([s.pid for s in trial.query], dtype=np.int64),
            "gp": np.array([s.pid for s in trial.gallery], dtype=np.int64),
            "qc": np.array([s.camid for s in trial.query], dtype=np.int64),
            "gc": np.array([s.camid for s in trial.gallery], dtype=np.int64)}


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, clamped at 0 against rounding."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp(min=0)


# ---------------------------------------------------------------------- saved feature files

NPZ_KEYS = ("pids", "camids", "modalities", "paths")


def evaluate_npz(npz_path: "str | Path", protocol: str, options: "dict | None" = None,
                 out_dir: "str | Path | None" = None, **evaluator_kwargs: Any) -> EvalResults:
    """Evaluate a saved feature file under `protocol` ("sysu", "regdb", "llcm") with its options.

    The .npz holds `features` (N, D) or `features_<kind>` per kind, and `pids`, `camids`,
    `modalities` (0 visible / 1 infrared, or names such as "visible", "ir"), `paths` (unique), one
    entry per row: the test set. The protocol builds its trials from these samples (SYSU official
    galleries need options rand_perm_path=... or root=<dataset root>); features are looked up by
    path. `evaluator_kwargs` go to Evaluator (features, distance, rerank, rerank_params, max_rank,
    meta); by default every kind in the file is scored. With `out_dir`, writes results.json and the
    gallery lists there.
    """
    from ..protocols import protocol_from_samples

    path = Path(npz_path).expanduser()
    if not path.is_file():
        raise EvaluationError(f"feature file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
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


def _npz_samples(path: Path, arrays: dict[str, np.ndarray]) -> list[Sample]:
    pids, cams, mods, paths = (arrays[k] for k in NPZ_KEYS)
    n = len(paths)
    for key, arr in (("pids", pids), ("camids", cams), ("modalities", mods)):
        if arr.ndim != 1 or len(arr) != n:
            raise EvaluationError(f"{path}: {key!r} has shape {arr.shape}, expected ({n},) like 'paths'")
    if len(set(map(str, paths))) != n:
        raise EvaluationError(f"{path}: 'paths' must be unique (features are looked up by path)")
    out = []
    for p, pid, cam, mod in zip(paths, pids, cams, mods):
        try:
            if np.issubdtype(np.asarray(mod).dtype, np.number) or str(mod).strip() in ("0", "1"):
                modality = Modality.from_code(int(mod))
            else:
                modality = Modality.parse(str(mod))
        except (ValueError, VireidError) as exc:
            raise EvaluationError(f"{path}: bad entry in 'modalities' for {p}: {exc}") from None
        out.append(Sample(str(p), int(pid), int(cam), modality))
    return out
