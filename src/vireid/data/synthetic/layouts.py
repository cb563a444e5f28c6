"""What each layout contains: which person is seen by which camera, file names and split files.

A `Plan` lists every image to render (a `Shot`) and every text file to write; it is pure bookkeeping
drawn from (seed, layout), so it is identical for any number of workers. Layouts follow
`docs/reference/protocols.md` sections 2 (SYSU-MM01), 4 (RegDB) and 5 (LLCM).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...core import Modality
from .cameras import (
    LAYOUT_CODES,
    LLCM_NIR_CAMS,
    LLCM_VIS_CAMS,
    VIEWS_FRONT_BACK,
    CameraSpec,
    llcm_cameras,
    regdb_cameras,
    sysu_cameras,
)
from .identity import make_identity

STREAM_PLAN = 41

# Default (ids, images_per_camera) per layout: small enough to generate in seconds.
DEFAULTS: dict[str, tuple[int, int]] = {"sysu": (120, 5), "regdb": (40, 10), "llcm": (90, 4)}
MIN_IDS: dict[str, int] = {"sysu": 3, "regdb": 2, "llcm": 2}

# SYSU-MM01 proportions (docs/reference/protocols.md#sec-2-2, #sec-2-3): 296 train / 99 val / 96 test of 491 identities;
# 56 of 96 test identities are in cam1 and cam2 (the same ones), 93-96 in each of cams 3-6.
SYSU_SPLIT = (296, 99, 96)
SYSU_INDOOR_SHARE = 56 / 96
SYSU_TEST_ABSENT = {3: 0.03, 4: 0.02, 5: 0.01, 6: 0.0}
SYSU_TRAIN_PRESENCE = {1: 0.7, 2: 0.7, 3: 0.8, 4: 0.8, 5: 0.8, 6: 0.85}
LLCM_TRAIN_SHARE = 713 / 1064
REGDB_TRIALS = 10


@dataclass(frozen=True)
class Shot:
    """One image to render: where it goes, whose it is, which camera, and its random stream."""

    relpath: str
    pid: int
    camera: int  # index into Plan.cameras
    scene: int  # geometry stream: shots sharing (pid, scene, index) share pose and position
    index: int
    split: str
    view: str | None = None  # forced viewpoint (RegDB names carry it)


@dataclass
class Plan:
    """Everything a layout writes: cameras, images, text files, split membership and counts extras."""

    layout: str
    cameras: list[CameraSpec]
    shots: list[Shot] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    splits: dict[str, list[int]] = field(default_factory=dict)
    extra_counts: dict = field(default_factory=dict)


def camera_name(spec: CameraSpec) -> str:
    """The name a camera has in counts: sysu `cam3`, regdb `visible`/`thermal`, llcm `nir_cam4`."""
    if spec.layout == "sysu":
        return f"cam{spec.cam}"
    if spec.layout == "regdb":
        return "visible" if spec.modality is Modality.VISIBLE else "thermal"
    return f"{'vis' if spec.modality is Modality.VISIBLE else 'nir'}_cam{spec.cam}"


def _rng(seed: int, layout: str, *streams: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_PLAN, LAYOUT_CODES[layout], *streams]))


def _per_camera(rng: np.random.Generator, k: int) -> int:
    """Images of one person in one camera: k, varied by up to +-k//4 (at least 1)."""
    spread = k // 4
    return max(1, k + int(rng.integers(-spread, spread + 1))) if spread else k


def _id_line(ids: list[int]) -> str:
    return ",".join(str(i) for i in sorted(ids)) + "\n"


def _split_sizes(n: int, parts: tuple[int, ...]) -> list[int]:
    """Split n into len(parts) positive sizes proportional to parts (largest first absorbs rounding)."""
    total = sum(parts)
    sizes = [max(1, round(n * p / total)) for p in parts[1:]]
    return [n - sum(sizes)] + sizes


def plan_sysu(ids: int, k: int, seed: int) -> Plan:
    """SYSU-MM01: cam1..cam6/<pid:04d>/<nnnn>.jpg and exp/{train,val,test,available}_id.txt."""
    cams = sysu_cameras()
    plan = Plan("sysu", cams)
    pids = list(range(1, ids + 1))
    order = _rng(seed, "sysu", 0).permutation(pids).tolist()
    n_train, n_val, n_test = _split_sizes(ids, SYSU_SPLIT)
    plan.splits = {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train:n_train + n_val]),
        "test": sorted(order[n_train + n_val:]),
    }
    test = plan.splits["test"]
    n_indoor = int(round(len(test) * SYSU_INDOOR_SHARE))
    n_indoor = min(max(n_indoor, 1), max(len(test) - 1, 1))  # keep some invalid indoor queries
    indoor = set(_rng(seed, "sysu", 1).choice(test, size=n_indoor, replace=False).tolist())
    rgb, ir = (1, 2, 4, 5), (3, 6)
    for pid in pids:
        rng = _rng(seed, "sysu", 2, pid)
        if pid in test:  # the same subset in cam1 and cam2, as in the real test set
            seen = {c for c in (3, 4, 5, 6) if rng.random() >= SYSU_TEST_ABSENT[c]}
            seen |= {1, 2} if pid in indoor else set()
        else:
            seen = {c for c in rgb + ir if rng.random() < SYSU_TRAIN_PRESENCE[c]}
        if not seen & set(rgb):  # every person is seen in both modalities
            seen.add(int(rng.choice((4, 5))) if pid in test else int(rng.choice(rgb)))
        if not seen & set(ir):
            seen.add(int(rng.choice(ir)))
        split = next(s for s, members in plan.splits.items() if pid in members)
        for spec_i, spec in enumerate(cams):
            if spec.cam not in seen:
                continue
            for i in range(1, _per_camera(rng, k) + 1):
                plan.shots.append(Shot(f"cam{spec.cam}/{pid:04d}/{i:04d}.jpg", pid, spec_i, spec.cam, i, split))
    for name in ("train", "val", "test"):
        plan.texts[f"exp/{name}_id.txt"] = _id_line(plan.splits[name])
    plan.texts["exp/available_id.txt"] = _id_line(pids)
    plan.extra_counts = {"test_indoor_identities": len(indoor)}
    return plan


def plan_regdb(ids: int, k: int, seed: int) -> Plan:
    """RegDB: Visible|Thermal/<pid>/<gender>_<front|back>_<v|t>_<serial:05d>_<pid>.bmp and idx files."""
    cams = regdb_cameras()
    plan = Plan("regdb", cams)
    pids = list(range(1, ids + 1))
    plan.splits = {"all": pids}
    files: dict[int, tuple[list[str], list[str]]] = {}
    serial = 0
    for pid in pids:
        rng = _rng(seed, "regdb", 2, pid)
        gender = make_identity(seed, pid, 0.0).gender  # attribute draws do not depend on difficulty
        vis: list[str] = []
        th: list[str] = []
        for i in range(1, k + 1):
            serial += 1
            view = VIEWS_FRONT_BACK[int(rng.integers(2))]
            for spec_i, (folder, letter, names) in enumerate((("Visible", "v", vis), ("Thermal", "t", th))):
                rel = f"{folder}/{pid}/{gender}_{view}_{letter}_{serial:05d}_{pid}.bmp"
                names.append(rel)
                # Both modalities share scene 0 of the same index: same pose and position.
                plan.shots.append(Shot(rel, pid, spec_i, 0, i, "all", view))
        files[pid] = (vis, th)
    n_train = max(1, ids // 2)
    trials = {}
    for t in range(1, REGDB_TRIALS + 1):
        order = _rng(seed, "regdb", 100 + t).permutation(pids).tolist()
        parts = {"train": sorted(order[:n_train]), "test": sorted(order[n_train:])}
        for part, members in parts.items():
            for m, name in ((0, "visible"), (1, "thermal")):
                lines = [f"{rel} {label}" for label, pid in enumerate(members) for rel in files[pid][m]]
                plan.texts[f"idx/{part}_{name}_{t}.txt"] = "\n".join(lines) + "\n"
        trials[str(t)] = {"train_identities": len(parts["train"]), "test_identities": len(parts["test"])}
    plan.extra_counts = {"trials": trials}
    return plan


def _llcm_name(pid: int, cam: int, stamp: int, frame: int, mod: str) -> str:
    return f"{pid:04d}_c{cam:02d}_s{stamp:06d}_f{frame}_{mod}.jpg"


def plan_llcm(ids: int, k: int, seed: int) -> Plan:
    """LLCM: vis|nir/<pid>/..., test_vis/cam1..9/<pid>/..., test_nir/cam{1,2,4..9}/<pid>/..., idx files."""
    cams = llcm_cameras()
    plan = Plan("llcm", cams)
    pids = list(range(1, ids + 1))
    order = _rng(seed, "llcm", 0).permutation(pids).tolist()
    n_train = min(max(1, round(ids * LLCM_TRAIN_SHARE)), ids - 1)
    plan.splits = {"train": sorted(order[:n_train]), "test": sorted(order[n_train:])}
    train = set(plan.splits["train"])
    label = {pid: i for i, pid in enumerate(plan.splits["train"])}
    lists: dict[str, list[str]] = {"vis": [], "nir": []}
    index = {(s.cam, s.modality): i for i, s in enumerate(cams)}
    for pid in pids:
        rng = _rng(seed, "llcm", 2, pid)
        split = "train" if pid in train else "test"
        for mod, modality, pool, hours in (
            ("vis", Modality.VISIBLE, LLCM_VIS_CAMS, tuple(range(8, 17))),
            ("nir", Modality.INFRARED, LLCM_NIR_CAMS, (19, 20, 21, 22, 23, 0, 1, 2, 3, 4)),
        ):
            # At least two cameras per modality, so a same-camera filter never empties a gallery.
            chosen = sorted(rng.choice(pool, size=int(rng.integers(2, 5)), replace=False).tolist())
            for cam in chosen:
                stamp = int(rng.choice(hours)) * 10000 + int(rng.integers(60)) * 100 + int(rng.integers(60))
                frame0, step = int(rng.integers(100, 9000)), int(rng.integers(4, 40))
                for i in range(1, _per_camera(rng, k) + 1):
                    name = _llcm_name(pid, cam, stamp, frame0 + (i - 1) * step, mod)
                    rel = f"{mod}/{pid:04d}/{name}" if split == "train" else f"test_{mod}/cam{cam}/{pid:04d}/{name}"
                    spec_i = index[(cam, modality)]
                    plan.shots.append(Shot(rel, pid, spec_i, cams[spec_i].key, i, split))
                    if split == "train":
                        lists[mod].append(f"{rel} {label[pid]}")
    plan.texts["idx/train_vis.txt"] = "\n".join(lists["vis"]) + "\n"
    plan.texts["idx/train_nir.txt"] = "\n".join(lists["nir"]) + "\n"
    plan.texts["idx/test_id.txt"] = _id_line(plan.splits["test"])
    return plan


PLANNERS = {"sysu": plan_sysu, "regdb": plan_regdb, "llcm": plan_llcm}


def counts(plan: Plan) -> dict:
    """Identities and images per split, modality and camera, for the manifest and data checks."""

    def tally(shots: list[Shot]) -> dict:
        out: dict = {"identities": len({s.pid for s in shots}), "images": len(shots), "modalities": {}}
        for m in Modality:
            sel = [s for s in shots if plan.cameras[s.camera].modality is m]
            out["modalities"][m.value] = {"identities": len({s.pid for s in sel}), "images": len(sel)}
        return out

    total = tally(plan.shots)
    total["splits"] = {}
    for split in plan.splits:
        shots = [s for s in plan.shots if s.split == split]
        entry = tally(shots)
        entry["cameras"] = {}
        for ci, spec in enumerate(plan.cameras):
            sel = [s for s in shots if s.camera == ci]
            if sel:
                entry["cameras"][camera_name(spec)] = {
                    "modality": spec.modality.value, "identities": len({s.pid for s in sel}), "images": len(sel),
                }
        total["splits"][split] = entry
    total.update(plan.extra_counts)
    return total
