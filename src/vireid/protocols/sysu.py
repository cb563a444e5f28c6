"""SYSU-MM01 evaluation: all/indoor search, single/multi-shot, AGW or official galleries.

Protocol facts: docs/reference/protocols.md#sec-2-5 (official) and #sec-2-6 (AGW).

Query: every infrared test image (cam3 then cam6 per identity, sorted file names), the same for
both modes. Gallery of trial t (t = 0..9), one per (identity, visible camera) folder:

- "agw": a private random.Random(t); identities sorted; cameras 1, 2, 4, 5 (all) or 1, 2 (indoor);
  one rng.choice(sorted files) per existing folder, reproducing the reference draws exactly.
  Multi-shot (no reference code has it): rng.sample(sorted files, min(10, n)) per folder.
- "official": row t of the authors' rand_perm_cam.mat (1-based image numbers), its first entry
  (single-shot) or first 10 (multi-shot); number i is the file cam{c}/{id:04d}/{i:04d}.jpg.

Rule "sysu_location" (cam3 queries skip every cam2 gallery image), identity-level CMC.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core import SYSU_SHARED_ROOM, DatasetError, EvalTrial, Modality, Sample
from ..registry import register_protocol
from ..utils.seed import python_rng
from .common import Protocol, check_options, choose, group_by_pid_cam, of_modality, positive_int, sample_per_pid_cam

MODES = ("all", "indoor")
SAMPLERS = ("agw", "official")
SHOTS = (1, 10)
QUERY_CAMS = (3, 6)
GALLERY_CAMS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}


@dataclass
class SYSUProtocolOptions:
    """Options of the SYSU-MM01 protocol (config section `eval.options`)."""

    mode: str = "all"  # all | indoor
    shots: int = 1  # 1 (single-shot) | 10 (multi-shot)
    gallery_sampler: str = "agw"  # agw (seeded draws of the AGW code) | official (rand_perm_cam.mat)
    trials: int = 10
    rand_perm_path: str | None = None  # default: <root>/exp/rand_perm_cam.mat


OPTIONS = tuple(f.name for f in fields(SYSUProtocolOptions))
RAND_PERM_NAME = "rand_perm_cam.mat"
RAND_PERM_HELP = (
    "rand_perm_cam.mat is not in every copy of SYSU-MM01: get it from the dataset authors' official "
    "evaluation code (https://github.com/wuancong/SYSU-MM01, folder data_split/) and put it in "
    "<root>/exp/rand_perm_cam.mat, or pass rand_perm_path=/path/to/rand_perm_cam.mat; "
    "or use gallery_sampler='agw'")

RandPerm = list  # rand_perm[cam - 1][pid - 1] -> int64 array (10, n_images), empty (0, 0) where absent


def sysu_query(test_samples: Sequence[Sample]) -> list[Sample]:
    """All infrared test images, sorted by identity, camera (3 then 6), file name."""
    return of_modality(test_samples, Modality.INFRARED, QUERY_CAMS)


def sysu_gallery_agw(test_samples: Sequence[Sample], mode: str, trial: int, shots: int = 1) -> list[Sample]:
    """AGW gallery of `trial` (its seed): one draw per existing (identity, camera) folder."""
    visible = [s for s in test_samples if s.modality is Modality.VISIBLE]
    groups = group_by_pid_cam(visible)
    pids = sorted({s.pid for s in test_samples})
    return sample_per_pid_cam(groups, pids, GALLERY_CAMS[mode], python_rng(trial), shots)


def sysu_gallery_official(test_samples: Sequence[Sample], mode: str, trial: int, shots: int,
                          rand_perm: RandPerm, source: str = RAND_PERM_NAME) -> list[Sample]:
    """Official gallery: the first `shots` image numbers of row `trial` (0-based) of rand_perm_cam."""
    by_number: dict[tuple[int, int, int], Sample] = {}
    for s in test_samples:
        stem = Path(s.path).stem
        if s.modality is Modality.VISIBLE and stem.isdigit():
            by_number[(s.camid, s.pid, int(stem))] = s
    present = {(s.pid, s.camid) for s in test_samples if s.modality is Modality.VISIBLE}
    out: list[Sample] = []
    for pid in sorted({s.pid for s in test_samples}):
        for cam in GALLERY_CAMS[mode]:
            entry = _entry(rand_perm, cam, pid)
            if entry.size == 0:
                if (pid, cam) in present:
                    raise DatasetError(
                        f"{source} has no images for person {pid} in cam{cam}, but the test set does "
                        f"(cam{cam}/{pid:04d}/): the dataset copy does not match the official split; use the "
                        "unmodified SYSU-MM01 or gallery_sampler='agw'")
                continue
            if trial >= entry.shape[0]:
                raise DatasetError(f"{source}: person {pid} cam{cam} has {entry.shape[0]} rows, trial {trial + 1} "
                                   "needs one more (the official file has 10)")
            for number in entry[trial, :shots]:
                sample = by_number.get((cam, pid, int(number)))
                if sample is None:
                    raise DatasetError(
                        f"{source} (row {trial + 1}) picks cam{cam}/{pid:04d}/{int(number):04d}.jpg but the test "
                        "set has no such image; the dataset copy does not match the official split "
                        "(docs/reference/protocols.md#p27); "
                        "restore the original files or use gallery_sampler='agw'")
                out.append(sample)
    return out


def load_rand_perm(path: str | Path) -> RandPerm:
    """Read rand_perm_cam.mat (6x1 cell of per-identity 10 x n uint8 arrays) into int64 arrays."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for damaged files
        raise DatasetError(f"{path}: cannot read as a MATLAB file ({exc}); {RAND_PERM_HELP}") from None
    cell = mat.get("rand_perm_cam")
    if cell is None or getattr(cell, "shape", None) != (6, 1):
        found = f"shape {getattr(cell, 'shape', None)}" if cell is not None else "no variable 'rand_perm_cam'"
        raise DatasetError(f"{path}: expected a variable 'rand_perm_cam' holding a 6x1 cell (one per camera), "
                           f"found {found}")
    out: RandPerm = []
    for cam in range(6):
        per_id = cell[cam, 0]
        out.append([np.asarray(per_id[i, 0], dtype=np.int64) for i in range(per_id.shape[0])])
    return out


def find_rand_perm(root: str | Path | None, rand_perm_path: str | Path | None = None) -> Path:
    """The rand_perm_cam.mat to use: the explicit path, else <root>/exp/; DatasetError naming both."""
    looked = []
    if rand_perm_path is not None:
        p = Path(rand_perm_path).expanduser()
        if p.is_file():
            return p
        looked.append(str(p))
    elif root is not None:
        p = Path(root).expanduser() / "exp" / RAND_PERM_NAME
        if p.is_file():
            return p
        looked.append(str(p))
    where = ", ".join(looked) if looked else "nowhere (no dataset root and no rand_perm_path given)"
    raise DatasetError(f"the official SYSU gallery sampler needs {RAND_PERM_NAME}; looked for it at {where}. "
                       f"{RAND_PERM_HELP}")


def sysu_trials(test_samples: Sequence[Sample], mode: str = "all", shots: int = 1, gallery_sampler: str = "agw",
                trials: int = 10, rand_perm: RandPerm | None = None, source: str = RAND_PERM_NAME
                ) -> list[EvalTrial]:
    """The `trials` EvalTrials of one SYSU setting over the test samples (no disk access)."""
    choose("sysu", "mode", mode, MODES)
    choose("sysu", "shots", shots, SHOTS)
    choose("sysu", "gallery_sampler", gallery_sampler, SAMPLERS)
    trials = positive_int("sysu", "trials", trials, upper=10 if gallery_sampler == "official" else None)
    if gallery_sampler == "official" and rand_perm is None:
        raise DatasetError(f"the official SYSU gallery sampler needs the content of {RAND_PERM_NAME} "
                           f"(rand_perm=load_rand_perm(path)). {RAND_PERM_HELP}")
    key = sysu_key(mode, shots, gallery_sampler)
    query = sysu_query(test_samples)
    out = []
    for t in range(trials):
        if gallery_sampler == "agw":
            gallery = sysu_gallery_agw(test_samples, mode, t, shots)
            draw = {"seed": t}
        else:
            assert rand_perm is not None  # checked above for the official sampler
            gallery = sysu_gallery_official(test_samples, mode, t, shots, rand_perm, source)
            draw = {"rand_perm_row": t + 1}
        info = {"protocol": key, "dataset": "sysu", "trial": t, "mode": mode, "shots": shots,
                "gallery_sampler": gallery_sampler, "direction": "infrared_to_visible",
                "sampled_side": "gallery", **draw,
                "options": {"mode": mode, "shots": shots, "gallery_sampler": gallery_sampler, "trials": trials}}
        out.append(EvalTrial(f"{key}/trial{t}", query, gallery, "sysu_location", "identity", info))
    return out


def sysu_key(mode: str, shots: int, gallery_sampler: str) -> str:
    """Protocol name, e.g. sysu/all/single/agw."""
    return f"sysu/{mode}/{'single' if shots == 1 else 'multi'}/{gallery_sampler}"


def sysu_protocol(test_samples: Sequence[Sample], root: str | Path | None = None, **options: Any) -> Protocol:
    """Protocol over SYSU test samples; options mode, shots, gallery_sampler, trials, rand_perm_path."""
    check_options("sysu", options, OPTIONS)
    mode = choose("sysu", "mode", options.get("mode", "all"), MODES)
    shots = positive_int("sysu", "shots", options.get("shots", 1))
    choose("sysu", "shots", shots, SHOTS)
    sampler = choose("sysu", "gallery_sampler", options.get("gallery_sampler", "agw"), SAMPLERS)
    trials = positive_int("sysu", "trials", options.get("trials", 10), upper=10 if sampler == "official" else None)
    rand_perm, source = None, RAND_PERM_NAME
    if sampler == "official":
        path = find_rand_perm(root, options.get("rand_perm_path"))
        rand_perm, source = load_rand_perm(path), str(path)
    resolved = {"mode": mode, "shots": shots, "gallery_sampler": sampler, "trials": trials}
    if sampler == "official":
        resolved["rand_perm_path"] = source
    samples = list(test_samples)
    return Protocol(
        dataset="sysu", name=sysu_key(mode, shots, sampler), options=resolved, direction="infrared_to_visible",
        gallery_sampler=sampler, rule="sysu_location", cmc_kind="identity",
        build=lambda: sysu_trials(samples, mode, shots, sampler, trials, rand_perm, source),
        notes=("AGW gallery draws (random.Random(trial), trials 0..9)" if sampler == "agw"
               else f"official gallery from {source}") + ("; multi-shot agw uses rng.sample(files, 10)"
                                                            if sampler == "agw" and shots == 10 else ""),
    )


def _entry(rand_perm: RandPerm, cam: int, pid: int) -> np.ndarray:
    per_id = rand_perm[cam - 1]
    if pid - 1 >= len(per_id):
        return np.zeros((0, 0), dtype=np.int64)
    return per_id[pid - 1]


def expected_sizes(test: Iterable[Sample], shots: int = 10) -> dict[str, int]:
    """Query, gallery and valid-query counts of the SYSU-MM01 protocols, derived from the test images."""
    n: dict[tuple[int, int], int] = defaultdict(int)
    for s in test:
        n[(s.pid, s.camid)] += 1
    cams_of: dict[int, set[int]] = defaultdict(set)
    for pid, cam in n:
        cams_of[pid].add(cam)
    out: dict[str, int] = {}
    for cam in QUERY_CAMS:
        out[f"query_cam{cam}"] = sum(c for (_, c_cam), c in n.items() if c_cam == cam)
    out = {"query": sum(out.values()), **out}
    pairs = {mode: [k for k in n if k[1] in cams] for mode, cams in GALLERY_CAMS.items()}
    out.update({f"gallery_single_{mode}": len(p) for mode, p in pairs.items()})
    out.update({f"gallery_multi_{mode}": sum(min(shots, n[k]) for k in p) for mode, p in pairs.items()})
    for mode, cams in GALLERY_CAMS.items():
        valid = 0
        for (pid, cam), count in n.items():
            if cam not in QUERY_CAMS:
                continue
            # the location rule: a camera-3 query cannot match camera 2, whoever is in it
            reachable = set(cams) - ({SYSU_SHARED_ROOM[1]} if cam == SYSU_SHARED_ROOM[0] else set())
            valid += count if cams_of[pid] & reachable else 0
        out[f"valid_queries_{mode}"] = valid
    return out


@register_protocol("sysu")
class SYSUProtocol:
    """SYSU-MM01 all/indoor search, single/multi-shot, AGW or official galleries, over the sysu reader's test set."""

    Options = SYSUProtocolOptions
    dataset = "sysu"
    reader_options: tuple[str, ...] = ()
    build = staticmethod(sysu_protocol)
