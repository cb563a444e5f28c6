"""SYSU-MM01 reader: cam1..cam6/<pid>/<nnnn>.jpg plus exp/{train,val,test}_id.txt.

Dataset facts: docs/reference/protocols.md#sec-2.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core import ConfigError, Modality, Sample
from ...registry import register_dataset
from ._common import (
    Problems,
    check_both_modalities,
    check_options,
    entry_kind,
    is_synthetic,
    list_images,
    read_id_list,
    read_manifest,
    require_root,
    sort_samples,
)
from .base import ReIDDataset, build_label_map

RGB_CAMS: tuple[int, ...] = (1, 2, 4, 5)
IR_CAMS: tuple[int, ...] = (3, 6)
CAMERAS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
INDOOR_CAMS: tuple[int, ...] = (1, 2, 3)
OUTDOOR_CAMS: tuple[int, ...] = (4, 5, 6)
TRAIN_SPLITS: tuple[str, ...] = ("train+val", "train")
TRAIN_SCENES: dict[str, tuple[int, ...]] = {"all": CAMERAS, "indoor": INDOOR_CAMS, "outdoor": OUTDOOR_CAMS}
LAYOUT = "SYSU-MM01"
_EXPECTED = "a SYSU-MM01 folder holding cam1..cam6/<pid>/<nnnn>.jpg and exp/{train,val,test}_id.txt"


def camera_modality(cam: int) -> Modality:
    """SYSU-MM01 cameras 3 and 6 are infrared, the others visible."""
    return Modality.INFRARED if cam in IR_CAMS else Modality.VISIBLE


def scene_samples(samples: list[Sample], cameras: tuple[int, ...]) -> list[Sample]:
    """The samples of `cameras`, without the identities that are left with one modality only."""
    kept = [s for s in samples if s.camid in cameras]
    mods: dict[int, set[Modality]] = {}
    for s in kept:
        mods.setdefault(s.pid, set()).add(s.modality)
    return [s for s in kept if len(mods[s.pid]) == 2]


@dataclass
class SYSUOptions:
    """Reader options of SYSU-MM01 (config section `data.options`)."""

    train_split: str = "train+val"  # "train+val" (community practice) or "train" (the 99 val ids kept apart)
    # "all", or train on one scene's cameras only (D2RL trains indoor and outdoor apart): indoor = cams 1, 2, 3,
    # outdoor = cams 4, 5, 6; identities left without both modalities in the scene are dropped. Test is untouched.
    train_scene: str = "all"


@register_dataset("sysu")
class SYSUMM01:
    """Reads SYSU-MM01; option `train_split`: "train+val" (default, as AGW) or "train" (val kept apart)."""

    Options = SYSUOptions

    def __init__(self, root: Path, **options: Any) -> None:
        check_options("sysu", options, SYSUOptions)
        self.root = Path(root).expanduser()
        self.train_split = options.get("train_split", "train+val")
        if self.train_split not in TRAIN_SPLITS:
            raise ConfigError(f"sysu reader: train_split must be one of {', '.join(map(repr, TRAIN_SPLITS))}, "
                              f"got {self.train_split!r}")
        self.train_scene = options.get("train_scene", "all")
        if self.train_scene not in TRAIN_SCENES:
            raise ConfigError(f"sysu reader: train_scene must be one of {', '.join(map(repr, TRAIN_SCENES))}, "
                              f"got {self.train_scene!r}")

    def load(self) -> ReIDDataset:
        """Parse and validate the layout; LayoutError lists every problem found."""
        root = self.root
        require_root(LAYOUT, root, _EXPECTED)
        problems = Problems(LAYOUT, root)
        cam_dirs = self._camera_folders(problems)
        split_ids = self._split_ids(problems)

        wanted = sorted(set().union(*split_ids.values())) if split_ids else []
        by_pid: dict[int, list[Sample]] = {}
        for pid in wanted:
            samples: list[Sample] = []
            for cam in CAMERAS:
                folder = cam_dirs.get(cam, {}).get(pid)
                if folder is None:
                    continue
                modality = camera_modality(cam)
                samples.extend(Sample(str(p), pid, cam, modality) for p in list_images(folder, problems))
            by_pid[pid] = samples
        for split, ids in split_ids.items():
            for pid in ids:
                if not by_pid.get(pid):
                    problems.add(f"person {pid} is listed in {root / 'exp' / f'{split}_id.txt'} but has no images "
                                 f"in any camera (looked in {root}/cam1..cam6/{pid:04d}/); "
                                 "restore its folders or remove the id from the split file")

        train_ids = split_ids.get("train", []) + (split_ids.get("val", []) if self.train_split == "train+val" else [])
        train = sort_samples(s for pid in train_ids for s in by_pid.get(pid, []))
        if self.train_scene != "all":
            train = scene_samples(train, TRAIN_SCENES[self.train_scene])
        val = [] if self.train_split == "train+val" else sort_samples(
            s for pid in split_ids.get("val", []) for s in by_pid.get(pid, []))
        test = sort_samples(s for pid in split_ids.get("test", []) for s in by_pid.get(pid, []))
        check_both_modalities(f"SYSU-MM01 training split ({self.train_split}) at {root}", train, problems,
                              "visible cams 1,2,4,5; infrared cams 3,6")
        problems.raise_if_any()

        manifest = read_manifest(root)
        label_map = build_label_map(train, where=f"SYSU-MM01 training split ({self.train_split}) at {root}")
        info = {
            "layout": "sysu",
            "split_ids": {k: list(v) for k, v in split_ids.items()},
            "train_split": self.train_split,
            "train_scene": self.train_scene,
            "rgb_cams": list(RGB_CAMS),
            "ir_cams": list(IR_CAMS),
            "indoor_cams": list(INDOOR_CAMS),
            "synthetic": is_synthetic(manifest),
            "manifest": manifest,
            "checks": [
                "root and exp/ split files present and parseable",
                "camera folders are exactly cam1..cam6 (no cam7, cam8: docs/reference/protocols.md#p27)",
                "train, val and test ids are disjoint",
                "every split id has images in at least one camera",
                "every training id has visible and infrared images",
                "no symlink loops (links that lead back to themselves or to a folder above them)",
            ],
        }
        return ReIDDataset(name="sysu", root=root, train=train, test=test, val=val, label_map=label_map, info=info)

    def _camera_folders(self, problems: Problems) -> dict[int, dict[int, Path]]:
        """camera -> pid -> folder; records unexpected or missing camera folders and odd pid folders."""
        root = self.root
        cams: dict[int, dict[int, Path]] = {}
        broken: set[str] = set()  # camera links already reported (a loop), not "missing" as well
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            m = re.fullmatch(r"cam(\d+)", entry.name, flags=re.IGNORECASE)
            if not m:
                continue
            kind = entry_kind(entry, problems)
            if kind == "skip":
                broken.add(entry.name)
            if kind != "dir":
                continue
            cam = int(m.group(1))
            if cam not in CAMERAS or entry.name != f"cam{cam}":
                problems.add(f"unexpected camera folder {entry}: SYSU-MM01 has exactly cam1..cam6; "
                             "this looks like a modified copy, move the folder out of the dataset root")
                continue
            cams[cam] = self._pid_folders(entry, problems)
        for cam in CAMERAS:
            if cam not in cams and f"cam{cam}" not in broken and not (root / f"cam{cam}").is_dir():
                problems.add(f"camera folder {root / f'cam{cam}'} is missing: expected cam1..cam6 under {root}")
        return cams

    @staticmethod
    def _pid_folders(cam_dir: Path, problems: Problems) -> dict[int, Path]:
        """pid -> folder for the numeric sub-folders of one camera folder."""
        out: dict[int, Path] = {}
        for entry in sorted(cam_dir.iterdir(), key=lambda p: p.name):
            kind = entry_kind(entry, problems)
            if kind == "skip":
                continue
            if kind != "dir":
                warnings.warn(f"ignoring file {entry}: a SYSU-MM01 camera folder should hold only "
                              "person folders", stacklevel=3)
                continue
            if not entry.name.isdigit():
                problems.add(f"unexpected folder {entry}: expected person folders named by their id "
                             "(e.g. 0001) inside each camera folder")
                continue
            pid = int(entry.name)
            if pid in out:
                problems.add(f"person {pid} has two folders in {cam_dir}: {out[pid].name} and {entry.name}; "
                             "keep one")
                continue
            out[pid] = entry
        return out

    def _split_ids(self, problems: Problems) -> dict[str, list[int]]:
        """train/val/test ids from exp/*_id.txt; records missing files and overlapping splits."""
        exp = self.root / "exp"
        if exp.is_symlink() and entry_kind(exp, problems, image=False) == "skip":  # a loop; dangling: missing
            return {}
        if not exp.is_dir():
            problems.add(f"folder {exp} is missing: expected {exp}/train_id.txt, val_id.txt and test_id.txt "
                         "(one line of comma-separated ids each, from the SYSU-MM01 archive)")
            return {}
        ids = {split: read_id_list(exp / f"{split}_id.txt", problems) for split in ("train", "val", "test")}
        names = list(ids)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = sorted(set(ids[a]) & set(ids[b]))
                if shared:
                    problems.add(f"{exp / f'{a}_id.txt'} and {exp / f'{b}_id.txt'} share {len(shared)} ids "
                                 f"({', '.join(map(str, shared[:10]))}); the splits must be disjoint")
        return ids
