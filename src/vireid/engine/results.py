"""Evaluation results: per-trial numbers, mean and std over trials, results.json and a console table.

Layout: EvalResults.protocols[protocol name] -> ProtocolResult (what was evaluated) whose
`features[label]` -> FeatureResult (one feature kind, plain or "+rerank") holding TrialResults.
Means are arithmetic over trials (docs/reference/protocols.md#tv-15); std is the SAMPLE standard
deviation (ddof = 1, the spread of the gallery-sampling estimate), 0.0 for a single trial.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import EvaluationError
from ..metrics.ranking import RankingMetrics
from ..utils.atomic import write_text

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
SCHEMA = "vireid.results/1"
STD_KIND = "sample (ddof=1); 0 for one trial"
RERANK_SUFFIX = "+rerank"


@dataclass
class TrialResult:
    """The numbers of one trial: metric values (fractions), its mean CMC curve and sizes."""

    name: str
    values: dict[str, float | None]
    num_query: int
    num_gallery: int
    num_valid_queries: int
    cmc: list[float] = field(default_factory=list)
    metrics: RankingMetrics | None = field(default=None, repr=False, compare=False)  # per-query arrays

    @classmethod
    def from_metrics(cls, name: str, m: RankingMetrics) -> TrialResult:
        """Wrap a RankingMetrics of one trial."""
        return cls(name, m.summary(), m.num_queries, m.num_gallery, m.num_valid_queries,
                   [float(v) for v in m.cmc], m)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.values, "num_query": self.num_query, "num_gallery": self.num_gallery,
                "num_valid_query": self.num_valid_queries, "cmc": self.cmc}

    @classmethod
    def from_json(cls, d: dict) -> TrialResult:
        return cls(d["name"], {k: d.get(k) for k in METRIC_KEYS}, int(d["num_query"]), int(d["num_gallery"]),
                   int(d["num_valid_query"]), list(d.get("cmc", [])))


def mean_std(rows: Sequence[dict[str, float | None]]) -> tuple[dict, dict]:
    """Arithmetic mean and sample std (ddof=1; 0 for one row) of each metric key; None if any is None."""
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for k in METRIC_KEYS:
        vals = [r.get(k) for r in rows]
        if not vals or any(v is None for v in vals):
            mean[k] = std[k] = None
            continue
        arr = np.asarray(vals, dtype=np.float64)
        mean[k] = float(arr.mean())
        std[k] = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return mean, std


@dataclass
class FeatureResult:
    """One feature kind (plain or re-ranked) of one protocol over its trials."""

    feature: str
    rerank: bool
    trials: list[TrialResult]

    @property
    def label(self) -> str:
        return self.feature + (RERANK_SUFFIX if self.rerank else "")

    def mean(self) -> dict:
        return mean_std([t.values for t in self.trials])[0]

    def std(self) -> dict:
        return mean_std([t.values for t in self.trials])[1]

    def mean_cmc(self) -> list[float]:
        """Element-wise mean of the trials' CMC curves (trimmed to the shortest)."""
        curves = [t.cmc for t in self.trials if t.cmc]
        if not curves:
            return []
        n = min(len(c) for c in curves)
        return [float(v) for v in np.mean([c[:n] for c in curves], axis=0)]

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "rerank": self.rerank, "num_trials": len(self.trials),
                "mean": self.mean(), "std": self.std(), "mean_cmc": self.mean_cmc(),
                "trials": [t.to_json() for t in self.trials]}

    @classmethod
    def from_json(cls, d: dict) -> FeatureResult:
        return cls(d["feature"], bool(d["rerank"]), [TrialResult.from_json(t) for t in d["trials"]])


@dataclass
class ProtocolResult:
    """What was evaluated (dataset, protocol, options, direction, sampler, settings) and its results."""

    name: str
    info: dict[str, Any]  # dataset, protocol, options, direction, gallery_sampler, rule, cmc, flip, distance, ...
    features: dict[str, FeatureResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.info, "protocol": self.name, "features": {k: v.to_json() for k, v in self.features.items()}}

    @classmethod
    def from_json(cls, name: str, d: dict) -> ProtocolResult:
        info = {k: v for k, v in d.items() if k not in ("features", "protocol")}
        return cls(name, info, {k: FeatureResult.from_json(v) for k, v in d["features"].items()})


@dataclass
class EvalResults:
    """All results of one evaluation (or a merge of several), keyed by protocol name."""

    protocols: dict[str, ProtocolResult] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> ProtocolResult:
        if key not in self.protocols:
            raise KeyError(f"no results for protocol {key!r}; have: {', '.join(self.protocols) or 'none'}")
        return self.protocols[key]

    def get(self, protocol: str, feature: str) -> FeatureResult:
        """The FeatureResult of `protocol` and feature label (e.g. "bn" or "bn+rerank")."""
        entry = self[protocol]
        if feature not in entry.features:
            raise KeyError(f"protocol {protocol!r} has no feature {feature!r}; have: {', '.join(entry.features)}")
        return entry.features[feature]

    def to_json(self) -> dict[str, Any]:
        """The results.json object (schema in docs/evaluation.md)."""
        return {"schema": SCHEMA, "metrics": list(METRIC_KEYS), "units": "fraction in [0, 1]",
                "std": STD_KIND, "meta": dict(self.meta),
                "protocols": {k: v.to_json() for k, v in self.protocols.items()}}

    @classmethod
    def from_json(cls, d: dict) -> EvalResults:
        if d.get("schema") != SCHEMA:
            raise EvaluationError(f"results object has schema {d.get('schema')!r}, expected {SCHEMA!r}")
        return cls({k: ProtocolResult.from_json(k, v) for k, v in d["protocols"].items()}, dict(d.get("meta", {})))

    def to_json_text(self) -> str:
        """The text of results.json (what `save` writes)."""
        return json.dumps(_jsonable(self.to_json()), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write results.json atomically (temporary file, then rename)."""
        write_text(path, self.to_json_text())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> EvalResults:
        return cls.from_json(json.loads(Path(path).read_text()))

    def format_table(self) -> str:
        """Console table: one row per protocol and feature, mean ± std in percent over the trials."""
        head = ["dataset", "protocol", "direction", "gallery sampler", "feature", "flip", "re-rank", "trials",
                "R1", "R5", "R10", "R20", "mAP", "mINP"]
        rows = []
        for name, entry in self.protocols.items():
            info = entry.info
            for fr in entry.features.values():
                mean, std = fr.mean(), fr.std()
                rerank = "no"
                if fr.rerank:
                    k1, k2, lam = (info.get("rerank_params") or {}).get("k1"), \
                        (info.get("rerank_params") or {}).get("k2"), (info.get("rerank_params") or {}).get("lambda")
                    rerank = f"yes (k1={k1}, k2={k2}, lambda={lam})"
                rows.append([str(info.get("dataset", "?")), name, str(info.get("direction", "?")),
                             str(info.get("gallery_sampler", "?")), fr.feature, _flip_text(info), rerank,
                             str(len(fr.trials))] + [_pct(mean[k], std[k]) for k in METRIC_KEYS])
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
        sep = "  ".join("-" * w for w in widths)
        extra = f"(mean ± std over trials, in %; std = {STD_KIND}; distance: {self.meta.get('distance', '?')})"
        return "\n".join([line(head), sep] + [line(r) for r in rows] + [extra])


def merge_results(runs: Iterable[EvalResults]) -> EvalResults:
    """Merge several evaluations into one results object.

    Different protocols are kept side by side. The same protocol name in several runs (e.g. the 10
    RegDB splits, one model each) has its trials concatenated and mean/std recomputed; options that
    differ between runs (the RegDB `trial`) become the list of their values. Mixing different
    settings (flip, distance, rule, features) or repeating a trial name raises EvaluationError.
    """
    runs = list(runs)
    by_name: dict[str, list[ProtocolResult]] = {}
    for run in runs:
        for name, entry in run.protocols.items():
            by_name.setdefault(name, []).append(entry)
    merged = EvalResults()
    for name, entries in by_name.items():
        first = entries[0]
        for other in entries[1:]:
            for key in _SETTING_KEYS:
                if first.info.get(key) != other.info.get(key):
                    raise EvaluationError(
                        f"cannot merge protocol {name!r}: setting {key!r} differs between runs "
                        f"({first.info.get(key)!r} vs {other.info.get(key)!r}); evaluate them under one setting")
            if set(other.features) != set(first.features):
                raise EvaluationError(f"cannot merge protocol {name!r}: feature sets differ between runs "
                                      f"({', '.join(first.features)} vs {', '.join(other.features)})")
        features = {}
        for label, fr in first.features.items():
            trials = [t for e in entries for t in e.features[label].trials]
            names = [t.name for t in trials]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise EvaluationError(f"cannot merge protocol {name!r}: trial(s) {', '.join(dup)} appear in two "
                                      "runs; each trial (e.g. each RegDB split) must come from one run")
            features[label] = FeatureResult(fr.feature, fr.rerank, trials)
        info = dict(first.info)
        options: dict[str, Any] = {}
        for e in entries:
            for k, v in e.info.get("options", {}).items():
                options.setdefault(k, [])
                if v not in options[k]:
                    options[k].append(v)
        info["options"] = {k: (v[0] if len(v) == 1 else v) for k, v in options.items()}
        merged.protocols[name] = ProtocolResult(name, info, features)
    common = dict(runs[0].meta) if runs else {}
    for run in runs[1:]:
        common = {k: v for k, v in common.items() if k in run.meta and run.meta[k] == v}
    merged.meta = {**common, "merged_runs": len(runs)}
    return merged


_SETTING_KEYS = ("dataset", "direction", "gallery_sampler", "rule", "cmc", "flip", "flip_style", "distance",
                 "rerank", "rerank_params", "max_rank")


def _flip_text(info: dict) -> str:
    flip = info.get("flip")
    if flip is None:
        return "?"
    if not flip:
        return "no"
    return f"yes ({info.get('flip_style', '?')})"


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN to None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
