"""LLCM reader: idx/train_{vis,nir}.txt, idx/test_id.txt, test_{vis,nir}/cam<k>/<pid>/.

Dataset facts: docs/reference/protocols.md#sec-5.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from ...core import Modality, Sample
from ...registry import register_dataset
from ..images import is_image_file
from ._common import (
    Problems,
    check_both_modalities,
    check_label_consistency,
    check_options,
    entry_kind,
    is_synthetic,
    list_images,
    listed_image_problem,
    read_id_list,
    read_list_file,
    read_manifest,
    require_root,
    sort_samples,
    split_summary,
)
from .base import ReIDDataset, build_label_map

CAMERAS: tuple[int, ...] = tuple(range(1, 10))
LAYOUT = "LLCM"
_KEYS = {Modality.VISIBLE: "vis", Modality.INFRARED: "nir"}
_NAME_RE = re.compile(r"^(\d+)_c(\d+)(?:_|$)", re.IGNORECASE)  # 0003_c01_s185734_f3195_nir.jpg
_CAM_PART_RE = re.compile(r"(?:^|_)c(\d+)(?:_|$)", re.IGNORECASE)
_CAM_DIR_RE = re.compile(r"cam(\d+)", re.IGNORECASE)


def parse_llcm_path(parts: tuple[str, ...]) -> tuple[int | None, int | None, list[str]]:
    """(pid, camera, conflicts) from path components: id folder or `<pid>_c<cam>_` name; camN folder or `_cNN_`."""
    stem = os.path.splitext(parts[-1])[0]
    conflicts: list[str] = []
    pid_folder = int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else None
    m = _NAME_RE.match(stem)
    pid_name = int(m.group(1)) if m else None
    cam_match = _CAM_PART_RE.search(stem)
    cam_name = int(cam_match.group(1)) if cam_match else None
    cam_dirs = [int(d.group(1)) for p in parts[:-1] if (d := _CAM_DIR_RE.fullmatch(p))]
    cam_folder = cam_dirs[-1] if cam_dirs else None
    if pid_folder is not None and pid_name is not None and pid_folder != pid_name:
        conflicts.append(f"id folder says person {pid_folder} but the file name says {pid_name}")
    if cam_folder is not None and cam_name is not None and cam_folder != cam_name:
        conflicts.append(f"camera folder says cam{cam_folder} but the file name says c{cam_name:02d}")
    pid = pid_folder if pid_folder is not None else pid_name
    cam = cam_folder if cam_folder is not None else cam_name
    return pid, cam, conflicts


@register_dataset("llcm")
class LLCM:
    """Reads LLCM: training lists from idx/, test images of idx/test_id.txt from test_vis/ and test_nir/."""

    def __init__(self, root: Path, **options: Any) -> None:
        check_options("llcm", options, [])
        self.root = Path(root).expanduser()

    def load(self) -> ReIDDataset:
        """Parse and validate the layout; LayoutError lists every problem found."""
        root = self.root
        require_root(LAYOUT, root, "an LLCM folder holding idx/, test_vis/ and test_nir/")
        problems = Problems(LAYOUT, root)
        train = self._train(problems)
        test_ids = read_id_list(root / "idx" / "test_id.txt", problems)
        test, cams = self._test(test_ids, problems)

        shared = sorted(set(split_summary(train)) & set(test_ids))
        if shared:
            problems.add(f"{root / 'idx' / 'test_id.txt'} lists {len(shared)} persons that are also in the "
                         f"training lists ({', '.join(map(str, shared[:10]))}); the splits must be disjoint")
        where = f"LLCM training split at {root}"
        check_both_modalities(where, train, problems, "idx/train_vis.txt and idx/train_nir.txt")
        problems.raise_if_any()

        manifest = read_manifest(root)
        info = {
            "layout": "llcm",
            "split_ids": {"train": split_summary(train), "test": list(test_ids)},
            "rgb_cams": cams[Modality.VISIBLE],
            "ir_cams": cams[Modality.INFRARED],
            "synthetic": is_synthetic(manifest),
            "manifest": manifest,
            "checks": [
                "idx/train_vis.txt, idx/train_nir.txt and idx/test_id.txt present and parseable",
                "every listed training image exists; person and camera parsed from path components",
                "visible and near-infrared training lists agree on one label per person",
                "test camera folders are cam1..cam9 only",
                "every test id has images; train and test persons are disjoint",
                "every training person has visible and near-infrared images",
                "no symlink loops (links that lead back to themselves or to a folder above them)",
            ],
        }
        return ReIDDataset(name="llcm", root=root, train=train, test=test, val=[],
                           label_map=build_label_map(train, where=where), info=info)

    def _train(self, problems: Problems) -> list[Sample]:
        """Training samples of both lists; records missing files and unparseable paths."""
        samples: list[Sample] = []
        rows = []
        for modality, key in _KEYS.items():
            idx = self.root / "idx" / f"train_{key}.txt"
            for line, rel, label in read_list_file(idx, problems):
                loc = f"{idx}:{line}"
                parts = PurePosixPath(rel.replace("\\", "/")).parts
                pid, cam, conflicts = parse_llcm_path(parts)
                path = str(self.root.joinpath(*parts))
                for c in conflicts:
                    problems.add(f"{loc}: {path}: {c}")
                if pid is None or cam is None:
                    problems.add(f"{loc}: cannot tell the person and camera of {rel!r}: expected an id folder "
                                 "or a '<pid>_c<cam>_...' file name, and a camN folder or '_cNN_' in the name")
                    continue
                if cam not in CAMERAS:
                    problems.add(f"{loc}: {path} is from camera {cam}; LLCM has cameras 1..9")
                    continue
                if not is_image_file(path):
                    problems.add(f"{loc}: {path} is not an image file (expected .jpg, .jpeg, .png or .bmp)")
                    continue
                problem = listed_image_problem(loc, path)  # missing, a dangling symlink or a symlink loop
                if problem is not None:
                    problems.add(problem)
                    continue
                if not conflicts:
                    samples.append(Sample(path, pid, cam, modality))
                    rows.append((str(idx), line, pid, label))
        check_label_consistency("LLCM training", rows, problems)
        return sort_samples(samples)

    def _test(self, test_ids: list[int], problems: Problems) -> tuple[list[Sample], dict[Modality, list[int]]]:
        """Test samples of the listed ids from test_vis/ and test_nir/, and the cameras present."""
        wanted = set(test_ids)
        samples: list[Sample] = []
        cams: dict[Modality, list[int]] = {}
        for modality, key in _KEYS.items():
            top = self.root / f"test_{key}"
            cams[modality] = []
            if top.is_symlink() and entry_kind(top, problems, image=False) == "skip":  # a loop; dangling: missing
                continue
            if not top.is_dir():
                problems.add(f"folder {top} is missing: expected {top}/cam1..cam9/<pid>/ with the test images")
                continue
            for cam_dir in sorted(top.iterdir(), key=lambda p: p.name):
                m = _CAM_DIR_RE.fullmatch(cam_dir.name)
                kind = entry_kind(cam_dir, problems)
                if kind == "skip":
                    continue
                if kind != "dir" or not m:
                    warnings.warn(f"ignoring {cam_dir}: expected only camera folders cam1..cam9 in {top}",
                                  stacklevel=2)
                    continue
                cam = int(m.group(1))
                if cam not in CAMERAS:
                    problems.add(f"unexpected camera folder {cam_dir}: LLCM has cameras cam1..cam9; "
                                 "move the folder out of the dataset root")
                    continue
                found = False
                for pid_dir in sorted(cam_dir.iterdir(), key=lambda p: p.name):
                    kind = entry_kind(pid_dir, problems)
                    if kind == "skip":
                        continue
                    if kind != "dir":
                        warnings.warn(f"ignoring file {pid_dir}: a camera folder should hold only person folders",
                                      stacklevel=2)
                        continue
                    if not pid_dir.name.isdigit():
                        problems.add(f"unexpected entry {pid_dir}: expected person folders named by their id "
                                     f"inside {cam_dir}")
                        continue
                    pid = int(pid_dir.name)
                    if pid not in wanted:
                        continue
                    for path in list_images(pid_dir, problems):
                        samples.append(Sample(str(path), pid, cam, modality))
                        found = True
                if found:
                    cams[modality].append(cam)
        have = {s.pid for s in samples}
        for pid in test_ids:
            if pid not in have:
                problems.add(f"person {pid} is listed in {self.root / 'idx' / 'test_id.txt'} but has no images in "
                             f"{self.root}/test_vis/cam*/{pid:04d}/ or test_nir/cam*/{pid:04d}/; "
                             "restore its folders or remove the id from the split file")
        return sort_samples(samples), cams
