"""Paired comparisons between two methods on one protocol: per-seed differences and a bootstrap interval.

The seed is the unit: each seed trains both methods once, so the difference of their (trial-averaged) mAP at
one seed is one paired observation. The interval is the percentile bootstrap of the mean difference over seeds
(resampling seeds with replacement), drawn from a seeded generator, so the same cells give the same interval.
With few seeds the interval is coarse (2 seeds give at most 3 distinct resampled means): it says so by its width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Printed under every paired comparison: the interval's width alone does not tell a reader this.
FEW_SEEDS_NOTE = ("With few seeds a bootstrap interval is coarse: it resamples only the per-seed differences, so "
                  "over 2 seeds it spans exactly those two and over 3 it can take at most 10 values. It says how "
                  "consistent the seeds were, not that the difference would hold over more seeds.")


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Arithmetic mean and sample std (ddof=1; 0.0 for one value; None, None for none)."""
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def bootstrap_ci(diffs: Sequence[float], *, resamples: int, seed: int | Sequence[int],
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs` (resampled with replacement, seeded generator)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise ValueError("bootstrap_ci needs at least one difference")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    means = d[rng.integers(0, d.size, size=(int(resamples), d.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_comparison(a: Mapping[int, float], b: Mapping[int, float], *, resamples: int,
                      seed: int | Sequence[int], confidence: float = 0.95,
                      trials: Mapping[int, tuple[Sequence[float], Sequence[float]]] | None = None) -> dict[str, Any]:
    """Compare metric values of method A and B keyed by seed (only the seeds both have count).

    Returns per-seed differences A - B, their mean, the bootstrap interval of the mean (None under 2 seeds),
    how many seeds A wins, and (given `trials`: per seed the two methods' per-trial values, trial by trial)
    the per-trial differences."""
    seeds = sorted(set(a) & set(b))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    out: dict[str, Any] = {"seeds": seeds, "per_seed": diffs, "mean": mean_std(diffs)[0],
                           "std": mean_std(diffs)[1], "a_wins": sum(d > 0 for d in diffs),
                           "b_wins": sum(d < 0 for d in diffs), "ci": None, "confidence": confidence,
                           "resamples": int(resamples)}
    if len(seeds) >= 2:
        out["ci"] = list(bootstrap_ci(diffs, resamples=resamples, seed=seed, confidence=confidence))
    if trials is not None:
        out["per_trial"] = {str(s): [float(x) - float(y) for x, y in zip(*trials[s], strict=True)]
                            for s in seeds if s in trials and len(trials[s][0]) == len(trials[s][1])}
    return out
