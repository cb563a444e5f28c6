"""What a report is drawn from: the protocol's trials over the test samples, one feature matrix per kind (a trained
method's, extracted once through the inference path, or a saved `.npz`), and the Evaluator's results over them.

The figures rank exactly what the Evaluator scored: the same samples, the same normalised features, the same
distance, the same stable sort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import EvalTrial, EvaluationError, Sample
from ..engine.evaluator import DISTANCES, Evaluator, unique_samples
from ..engine.results import EvalResults, TrialResult


@dataclass
class ReportInputs:
    """Samples (unique, in the trials' first-seen order), their features per kind as the Evaluator scored them
    (L2-normalised for the cosine distance), the trials, the Evaluator's results and the reported feature kind."""

    samples: list[Sample]
    features: dict[str, np.ndarray] = field(repr=False)
    trials: list[EvalTrial] = field(repr=False)
    results: EvalResults = field(repr=False)
    feature: str = "bn"
    distance: str = "cosine"

    def rows(self, samples: Sequence[Sample]) -> np.ndarray:
        """Row indices of `samples` in the feature matrices."""
        pos = {s: i for i, s in enumerate(self.samples)}
        return np.asarray([pos[s] for s in samples], dtype=np.int64)

    def distances(self, trial: EvalTrial, kind: str | None = None) -> np.ndarray:
        """The trial's (query x gallery) distance matrix of feature `kind`, computed as the Evaluator does."""
        f = torch.from_numpy(self.features[kind or self.feature])
        q, g = f[torch.from_numpy(self.rows(trial.query))], f[torch.from_numpy(self.rows(trial.gallery))]
        d = -(q @ g.T) if self.distance == "cosine" else torch.cdist(q, g)
        return d.numpy()

    def trial_result(self, trial: EvalTrial, kind: str | None = None) -> TrialResult:
        """The Evaluator's result of `trial` for feature `kind` (per-query AP and first hits in `.metrics`)."""
        label = kind or self.feature
        for entry in self.results.protocols.values():
            fr = entry.features.get(label)
            for t in fr.trials if fr is not None else []:
                if t.name == trial.name:
                    return t
        raise EvaluationError(f"no result for trial {trial.name!r} and feature {label!r}")


def evaluate_features(samples: Sequence[Sample], features: dict[str, np.ndarray], trials: Sequence[EvalTrial], *,
                      feature: str, distance: str = "cosine", rerank: bool = False,
                      meta: dict | None = None) -> ReportInputs:
    """Score `trials` with `features` (rows in `samples` order) through the Evaluator; ReportInputs of the result."""
    if distance not in DISTANCES:
        raise EvaluationError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    if feature not in features:
        raise EvaluationError(f"feature {feature!r} is not among the extracted ones ({', '.join(features)}); pass "
                              "one of those")
    samples = list(samples)
    pos = {s: i for i, s in enumerate(samples)}
    missing = [s.path for s in unique_samples(trials) if s not in pos]
    if missing:
        raise EvaluationError(f"{len(missing)} trial images have no feature row (first: {missing[0]}); extract "
                              "features of every test sample")

    def extract(batch: list[Sample]) -> dict[str, np.ndarray]:
        idx = np.asarray([pos[s] for s in batch], dtype=np.int64)
        return {k: v[idx] for k, v in features.items()}

    kinds = tuple(features)
    results = Evaluator(list(trials), features=kinds, distance=distance, rerank=rerank, meta=meta).run(extract)
    scored = unique_samples(trials)
    idx = np.asarray([pos[s] for s in scored], dtype=np.int64)
    normed = {}
    for k, v in features.items():
        t = torch.from_numpy(np.ascontiguousarray(v[idx], dtype=np.float32))
        normed[k] = (torch.nn.functional.normalize(t, p=2, dim=1) if distance == "cosine" else t).numpy()
    return ReportInputs(scored, normed, list(trials), results, feature, distance)


def extract_features(method: Any, samples: Sequence[Sample], height: int, width: int, *, kinds: Sequence[str],
                     device: str | torch.device = "cpu", flip: bool = False, batch_size: int = 128,
                     progress: bool = True) -> dict[str, np.ndarray]:
    """{kind: (N, D) float32} of `samples` through the inference path (a progress bar when `progress`)."""
    from ..inference import make_extractor

    extract = make_extractor(method, height, width, torch.device(device), flip=flip, batch_size=batch_size,
                             progress=progress, kinds=tuple(kinds))
    return {k: v.numpy() for k, v in extract(list(samples)).items()}


def load_npz_features(path: str | Path) -> tuple[list[Sample], dict[str, np.ndarray]]:
    """(samples, {kind: float32 features}) of a feature file in `vireid eval`'s .npz format (engine.evaluate's
    read_feature_file, the one reader of the format)."""
    from ..engine.evaluate import read_feature_file

    samples, kinds = read_feature_file(path)
    return samples, {k: np.asarray(v, dtype=np.float32) for k, v in kinds.items()}
