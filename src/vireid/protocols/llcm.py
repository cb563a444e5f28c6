"""LLCM evaluation (docs/reference/protocols.md#sec-5): 10 gallery samplings of one model, both directions.

Query: every test image of the query modality (sorted identity, camera, file). Gallery of trial t
(t = 0..9): a private random.Random(t), identities sorted, one rng.choice(sorted files) per
existing (identity, camera) folder of the gallery modality (VIS cameras 1..9, NIR 1, 2, 4..9).
Rule "same_pid_same_cam", identity-level CMC.

"visible_to_ir_transposed" reproduces the released DEEN test script (docs/reference/protocols.md#p12):
the sampled NIR set is the query and every VIS test image the gallery. It is labelled as such in
names and reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..core import EvalTrial, Modality, Sample
from ..registry import register_protocol
from ..utils.seed import python_rng
from .common import Protocol, check_options, choose, group_by_pid_cam, of_modality, positive_int, sample_per_pid_cam

DIRECTIONS = {"ir_to_visible": "ir2vis", "visible_to_ir": "vis2ir",
              "visible_to_ir_transposed": "vis2ir_transposed_deen"}
CAMS = {Modality.VISIBLE: (1, 2, 3, 4, 5, 6, 7, 8, 9), Modality.INFRARED: (1, 2, 4, 5, 6, 7, 8, 9)}


@dataclass
class LLCMProtocolOptions:
    """Options of the LLCM protocol (config section `eval.options`)."""

    direction: str = "ir_to_visible"  # ir_to_visible | visible_to_ir | visible_to_ir_transposed (DEEN's script)
    trials: int = 10


OPTIONS = tuple(f.name for f in fields(LLCMProtocolOptions))
TRANSPOSED_LABEL = "transposed (DEEN script)"


def llcm_sampled(test_samples: Sequence[Sample], modality: Modality, trial: int) -> list[Sample]:
    """One random image per (identity, camera) of `modality`, drawn with random.Random(trial)."""
    groups = group_by_pid_cam(s for s in test_samples if s.modality is modality)
    pids = sorted({s.pid for s in test_samples})
    return sample_per_pid_cam(groups, pids, CAMS[modality], python_rng(trial))


def llcm_trials(test_samples: Sequence[Sample], direction: str = "ir_to_visible", trials: int = 10
                ) -> list[EvalTrial]:
    """The `trials` EvalTrials of LLCM in `direction` over the test samples (no disk access)."""
    choose("llcm", "direction", direction, tuple(DIRECTIONS))
    trials = positive_int("llcm", "trials", trials)
    key = llcm_key(direction)
    opts = {"direction": direction, "trials": trials}
    out = []
    if direction == "visible_to_ir_transposed":
        gallery = of_modality(test_samples, Modality.VISIBLE, CAMS[Modality.VISIBLE])
        for t in range(trials):
            query = llcm_sampled(test_samples, Modality.INFRARED, t)
            info = {"protocol": key, "dataset": "llcm", "trial": t, "seed": t, "direction": direction,
                    "sampled_side": "query", "label": TRANSPOSED_LABEL, "options": opts,
                    "gallery_sampler": "all VIS test images (the sampled NIR set is the query)"}
            out.append(EvalTrial(f"{key}/trial{t}", query, gallery, "same_pid_same_cam", "identity", info))
        return out
    q_mod = Modality.INFRARED if direction == "ir_to_visible" else Modality.VISIBLE
    g_mod = Modality.VISIBLE if q_mod is Modality.INFRARED else Modality.INFRARED
    query = of_modality(test_samples, q_mod, CAMS[q_mod])
    for t in range(trials):
        info = {"protocol": key, "dataset": "llcm", "trial": t, "seed": t, "direction": direction,
                "sampled_side": "gallery", "options": opts,
                "gallery_sampler": "agw-style random (one per identity and camera)"}
        out.append(EvalTrial(f"{key}/trial{t}", query, llcm_sampled(test_samples, g_mod, t),
                             "same_pid_same_cam", "identity", info))
    return out


def llcm_key(direction: str) -> str:
    """Protocol name, e.g. llcm/ir2vis or llcm/vis2ir_transposed_deen."""
    return f"llcm/{DIRECTIONS[direction]}"


def llcm_protocol(test_samples: Sequence[Sample], root: str | Path | None = None, **options: Any) -> Protocol:
    """Protocol over LLCM test samples; options direction, trials."""
    check_options("llcm", options, OPTIONS)
    direction = choose("llcm", "direction", options.get("direction", "ir_to_visible"), tuple(DIRECTIONS))
    trials = positive_int("llcm", "trials", options.get("trials", 10))
    samples = list(test_samples)
    transposed = direction == "visible_to_ir_transposed"
    return Protocol(
        dataset="llcm", name=llcm_key(direction), options={"direction": direction, "trials": trials},
        direction=direction, gallery_sampler=("all VIS test images (the sampled NIR set is the query)" if transposed
                                              else "agw-style random (one per identity and camera)"),
        rule="same_pid_same_cam", cmc_kind="identity",
        build=lambda: llcm_trials(samples, direction, trials),
        notes=(f"{TRANSPOSED_LABEL}: sampled NIR queries against all VIS test images; not the VIS->IR protocol "
               "of the paper (docs/reference/protocols.md#p12)") if transposed else "",
    )


@register_protocol("llcm")
class LLCMProtocol:
    """LLCM, 10 gallery draws, infrared->visible, visible->infrared or DEEN's transposed variant."""

    Options = LLCMProtocolOptions
    dataset = "llcm"
    reader_options: tuple[str, ...] = ()
    build = staticmethod(llcm_protocol)
