"""The Evaluator: embed every unique sample of a set of trials once, score each trial, aggregate.

Per trial and feature kind: distance (cosine on L2-normalised features, dist = -q.g; or
Euclidean), then `evaluate_ranking` under the trial's rule and CMC kind. Optional k-reciprocal
re-ranking is reported under its own "<kind>+rerank" label, never in place of the plain numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import ConfigError, EvalTrial, EvaluationError, Sample
from ..metrics.ranking import rank_queries, require_valid_query, summarize
from ..metrics.rerank import RERANK_VARIANTS, k_reciprocal_rerank
from ..runs.run_dir import RunDir
from .results import RERANK_SUFFIX, EvalResults, FeatureResult, ProtocolResult, TrialResult

DISTANCES = ("cosine", "euclidean")
Extract = Callable[[list[Sample]], Mapping[str, "torch.Tensor | np.ndarray"]]

# Largest query-by-gallery distance block materialised at once (bytes, float32).
_DIST_BLOCK_BYTES = 256 * 2**20


class Evaluator:
    """Scores `trials` with features from one `extract` call; see `run`."""

    def __init__(self, trials: Sequence[EvalTrial], *, features: Sequence[str] = ("bn", "pool"),
                 distance: str = "cosine", rerank: bool = False,
                 rerank_params: tuple[int, int, float] = (20, 6, 0.3), rerank_variant: str = "reference",
                 max_rank: int = 20,
                 meta: dict | None = None) -> None:
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
        if rerank_variant not in RERANK_VARIANTS:
            raise ConfigError(f"Evaluator: rerank_variant must be one of {', '.join(RERANK_VARIANTS)}, "
                              f"got {rerank_variant!r}")
        self.rerank_variant = rerank_variant
        self.max_rank = int(max_rank)
        self.meta = dict(meta or {})
        self.samples = unique_samples(self.trials)
        self._pos = {s: i for i, s in enumerate(self.samples)}

    def run(self, extract: Extract, out_dir: str | Path | None = None) -> EvalResults:
        """Call `extract(unique samples)` once, score every trial; with `out_dir`, also write the
        trials' gallery lists (out_dir/galleries/, queries/) and results.json as one unit, after every
        trial is scored (`RunDir.write_trial_lists`): a failed evaluation leaves the previous ones intact."""
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
            RunDir(out_dir).write_trial_lists(self.trials, results=results.to_json_text())
        return results

    # ------------------------------------------------------------------ internals

    def _features(self, extract: Extract) -> dict[str, torch.Tensor]:
        """Validated (N, D) float tensors per kind, L2-normalised for the cosine distance."""
        raw = extract(list(self.samples))
        if not isinstance(raw, Mapping):
            raise EvaluationError(
                f"extract must return a dict {{feature kind: (N, D) array}}, got {type(raw).__name__}"
            )
        out = {}
        n = len(self.samples)
        for kind in self.features:
            if kind not in raw:
                raise EvaluationError(f"extract returned no feature {kind!r} "
                                      f"(it returned: {', '.join(map(str, raw))}); "
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
        ap, inp, hit = (np.concatenate(x) for x in zip(*parts, strict=True))
        return self._summarize(ap, inp, hit, trial, ids)

    def _score_reranked(self, q: torch.Tensor, g: torch.Tensor, ids: dict, trial: EvalTrial):
        k1, k2, lam = self.rerank_params
        d = k_reciprocal_rerank(_sq_dist(q, g), _sq_dist(q, q), _sq_dist(g, g), k1, k2, lam,
                                variant=self.rerank_variant)
        ap, inp, hit = rank_queries(d, ids["qp"], ids["gp"], ids["qc"], ids["gc"], rule=trial.rule, cmc=trial.cmc_kind)
        return self._summarize(ap, inp, hit, trial, ids)

    def _summarize(self, ap, inp, hit, trial: EvalTrial, ids: dict):
        require_valid_query(hit, ids["qp"], ids["gp"], trial.rule, where=f"trial {trial.name!r}")
        return summarize(ap, inp, hit, max_rank=self.max_rank, num_gallery=len(ids["gp"]))

    def _distance(self, q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.distance == "cosine":
            return -(q @ g.T)
        return torch.cdist(q, g)

    def _run_meta(self) -> dict[str, Any]:
        k1, k2, lam = self.rerank_params
        return {**self.meta, "features": list(self.features), "distance": self.distance, "rerank": self.rerank,
                "rerank_params": ({"k1": k1, "k2": k2, "lambda": lam, "variant": self.rerank_variant}
                              if self.rerank else None),
                "max_rank": self.max_rank, "num_trials": len(self.trials), "num_unique_samples": len(self.samples)}

    def _protocol_info(self, trial: EvalTrial) -> dict[str, Any]:
        info = trial.info
        k1, k2, lam = self.rerank_params
        default_options: Mapping[str, Any] = self.meta.get("options", {})
        out = {
            "dataset": info.get("dataset", self.meta.get("dataset")),
            "options": dict(info.get("options", default_options)),
            "direction": info.get("direction"),
            "gallery_sampler": info.get("gallery_sampler"),
            "rule": trial.rule, "cmc": trial.cmc_kind,
            "flip": self.meta.get("flip"),
            "distance": self.distance, "rerank": self.rerank,
            "rerank_params": ({"k1": k1, "k2": k2, "lambda": lam, "variant": self.rerank_variant}
                              if self.rerank else None),
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
