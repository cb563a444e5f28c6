"""RegDB evaluation (docs/reference/protocols.md#sec-4): one split per trained model, both directions.

Query: every test image of one modality; gallery: every test image of the other (no sampling).
Rule "none", image-level CMC. The 10 splits are 10 models: run one per split and merge the
results (vireid.engine.evaluator.merge_results) to get the 10-split mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..core import EvalTrial, Modality, Sample
from ..registry import register_protocol
from .common import Protocol, check_options, choose, of_modality, positive_int

DIRECTIONS = {"visible_to_thermal": "v2t", "thermal_to_visible": "t2v"}


@dataclass
class RegDBProtocolOptions:
    """Options of the RegDB protocol (config section `eval.options`)."""

    trial: int = 1  # the split 1..10; also the split the regdb reader loads
    direction: str = "visible_to_thermal"  # visible_to_thermal | thermal_to_visible


OPTIONS = tuple(f.name for f in fields(RegDBProtocolOptions))


def regdb_trials(test_samples: Sequence[Sample], direction: str = "visible_to_thermal", trial: int = 1
                 ) -> list[EvalTrial]:
    """The single EvalTrial of RegDB split `trial` (1..10) in `direction`."""
    choose("regdb", "direction", direction, tuple(DIRECTIONS))
    trial = positive_int("regdb", "trial", trial, upper=10)
    q_mod, g_mod = ((Modality.VISIBLE, Modality.INFRARED) if direction == "visible_to_thermal"
                    else (Modality.INFRARED, Modality.VISIBLE))
    key = regdb_key(direction)
    info = {"protocol": key, "dataset": "regdb", "trial": trial, "split": trial, "direction": direction,
            "sampled_side": "none", "gallery_sampler": "none (all test images)",
            "options": {"trial": trial, "direction": direction}}
    return [EvalTrial(f"{key}/trial{trial}", of_modality(test_samples, q_mod), of_modality(test_samples, g_mod),
                      "none", "image", info)]


def regdb_key(direction: str) -> str:
    """Protocol name, e.g. regdb/v2t."""
    return f"regdb/{DIRECTIONS[direction]}"


def regdb_protocol(test_samples: Sequence[Sample], root: str | Path | None = None, **options: Any) -> Protocol:
    """Protocol over one RegDB split's test samples; options trial (1..10), direction."""
    check_options("regdb", options, OPTIONS)
    direction = choose("regdb", "direction", options.get("direction", "visible_to_thermal"), tuple(DIRECTIONS))
    trial = positive_int("regdb", "trial", options.get("trial", 1), upper=10)
    samples = list(test_samples)
    return Protocol(
        dataset="regdb", name=regdb_key(direction), options={"trial": trial, "direction": direction},
        direction=direction, gallery_sampler="none (all test images)", rule="none", cmc_kind="image",
        build=lambda: regdb_trials(samples, direction, trial),
        notes=f"split {trial}: evaluate the model trained on split {trial} only (docs/reference/protocols.md#p10)",
    )


@register_protocol("regdb")
class RegDBProtocol:
    """RegDB, one split per model, visible->thermal or thermal->visible, over the regdb reader's test set."""

    Options = RegDBProtocolOptions
    dataset = "regdb"
    reader_options: tuple[str, ...] = ("trial",)  # the protocol's split is the split the reader must load
    build = staticmethod(regdb_protocol)
