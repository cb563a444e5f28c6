"""Folder reader for one's own data: <root>/<modality>/<camera>/<pid>/*.jpg, optional <root>/splits.json."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...core import Modality, ModalityError, Sample
from ...registry import register_dataset
from ._common import (
    Problems,
    check_both_modalities,
    check_options,
    entry_kind,
    is_synthetic,
    list_images,
    read_manifest,
    require_root,
    sort_samples,
    split_summary,
)
from .base import ReIDDataset, build_label_map

LAYOUT = "folder"
_CAM_RE = re.compile(r"(?:cam|c)?(\d+)", re.IGNORECASE)
_EXPECTED = "a folder holding visible/<camera>/<pid>/*.jpg and infrared/<camera>/<pid>/*.jpg"


def _plain_kind(path: Path) -> str:
    """"dir" or "file" by Path.is_dir (a broken symlink counts as a file)."""
    return "dir" if path.is_dir() else "file"


def walk_layout(root: Path, unexpected: Callable[[str, Path], None],
                stray_file: Callable[[str, Path], None] | None = None,
                kind: Callable[[Path], str] | None = None) -> Iterator[tuple[Modality, int, int, Path]]:
    """(modality, camera, pid, person folder) of every <root>/<modality>/<camN|N>/<pid>/ folder, in name order.

    A folder that breaks the layout goes to `unexpected(level, path)` (level "modality", "camera" or
    "person": what it should have been) and is skipped; so is a file where a camera or person folder
    belongs, after `stray_file(level, path)` when given. Files at the top level are not part of the tree.
    `kind(path)` says what an entry is: "dir", "file", or "skip" for one it has already reported (the
    folder reader passes `_common.entry_kind`, which reports symlink loops); default: Path.is_dir.
    """
    kind = kind or _plain_kind

    def entries(folder: Path) -> Iterator[tuple[Path, bool]]:
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            k = kind(path)
            if k != "skip":
                yield path, k == "dir"

    for mod_dir in (p for p, is_dir in entries(root) if is_dir):
        try:
            modality = Modality.parse(mod_dir.name)
        except ModalityError:
            unexpected("modality", mod_dir)
            continue
        for cam_dir, cam_is_dir in entries(mod_dir):
            if not cam_is_dir:
                if stray_file is not None:
                    stray_file("camera", cam_dir)
                continue
            m = _CAM_RE.fullmatch(cam_dir.name)
            if not m:
                unexpected("camera", cam_dir)
                continue
            for pid_dir, pid_is_dir in entries(cam_dir):
                if not pid_is_dir:
                    if stray_file is not None:
                        stray_file("person", pid_dir)
                    continue
                if not pid_dir.name.isdigit():
                    unexpected("person", pid_dir)
                    continue
                yield modality, int(m.group(1)), int(pid_dir.name), pid_dir


@register_dataset("folder")
class FolderDataset:
    """Reads <root>/<visible|infrared>/<cam>/<pid>/ images; every id is train and test unless splits.json says."""

    def __init__(self, root: Path, **options: Any) -> None:
        check_options("folder", options, [])
        self.root = Path(root).expanduser()

    def load(self) -> ReIDDataset:
        """Parse and validate the folders; LayoutError lists every problem found."""
        root = self.root
        require_root(LAYOUT, root, _EXPECTED)
        problems = Problems(LAYOUT, root)
        samples = self._scan(problems)
        all_ids = split_summary(samples)
        splits = self._splits(all_ids, problems)
        by_split = {name: sort_samples(s for s in samples if s.pid in set(ids)) for name, ids in splits.items()}
        train = by_split.get("train", [])
        where = f"folder dataset training split at {root}"
        if samples:
            check_both_modalities(where, train, problems, f"looked in {root}/visible and {root}/infrared")
        problems.raise_if_any()

        manifest = read_manifest(root)
        info = {
            "layout": "folder",
            "split_ids": {name: list(ids) for name, ids in splits.items()},
            "splits_file": str(root / "splits.json") if (root / "splits.json").is_file() else None,
            "rgb_cams": sorted({s.camid for s in samples if s.modality is Modality.VISIBLE}),
            "ir_cams": sorted({s.camid for s in samples if s.modality is Modality.INFRARED}),
            "synthetic": is_synthetic(manifest),
            "manifest": manifest,
            "checks": [
                "top-level folders are modalities (visible, infrared or an alias)",
                "camera folders are named camN or N; person folders are integers",
                "splits.json (if present) lists known ids, train and test disjoint",
                "every training id has visible and infrared images",
                "no symlink loops (links that lead back to themselves or to a folder above them)",
            ],
        }
        return ReIDDataset(name="folder", root=root, train=train, test=by_split.get("test", []),
                           val=by_split.get("val", []), label_map=build_label_map(train, where=where), info=info)

    def _scan(self, problems: Problems) -> list[Sample]:
        """Every image under <modality>/<camera>/<pid>/; records folders that do not fit the layout."""
        unexpected = {
            "modality": "top-level folders must be modalities ('visible' or 'infrared'; aliases rgb, vis, ir, "
                        "thermal, nir)",
            "camera": "camera folders must be named camN or N (e.g. cam1 or 1)",
            "person": "person folders must be integer ids (e.g. 0007)",
        }
        holder = {"camera": "a modality folder should hold only camera folders",
                  "person": "a camera folder should hold only person folders"}
        samples: list[Sample] = []
        for modality, cam, pid, pid_dir in walk_layout(
                self.root, lambda level, path: problems.add(f"unexpected folder {path}: {unexpected[level]}"),
                lambda level, path: warnings.warn(f"ignoring file {path}: {holder[level]}", stacklevel=4),
                lambda path: entry_kind(path, problems)):
            samples.extend(Sample(str(p), pid, cam, modality) for p in list_images(pid_dir, problems))
        if not samples and not problems:
            problems.add(f"no images found under {self.root}: expected {_EXPECTED}")
        return samples

    def _splits(self, all_ids: list[int], problems: Problems) -> dict[str, list[int]]:
        """train/test (and optional val) ids: from splits.json, else every id in both train and test."""
        path = self.root / "splits.json"
        if not path.is_file():
            return {"train": list(all_ids), "test": list(all_ids)}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.add(f"{path} is not valid JSON ({exc}): expected {{\"train\": [ids], \"test\": [ids]}}")
            return {}
        if not isinstance(data, dict) or "train" not in data or "test" not in data:
            problems.add(f"{path}: expected an object with 'train' and 'test' id lists (optional 'val'), "
                         f"found {type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else []}")
            return {}
        splits: dict[str, list[int]] = {}
        for key, ids in data.items():
            if key not in ("train", "val", "test"):
                problems.add(f"{path}: unknown key {key!r}; expected 'train', 'test' and optionally 'val'")
                continue
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                problems.add(f"{path}: {key!r} must be a list of integer ids, found {ids!r:.80}")
                continue
            known = set(all_ids)
            missing = sorted(set(ids) - known)
            if missing:
                problems.add(f"{path}: {key!r} lists ids with no images under {self.root}: "
                             f"{', '.join(map(str, missing[:10]))}")
            splits[key] = sorted(set(ids))
        for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
            shared = sorted(set(splits.get(a, [])) & set(splits.get(b, [])))
            if shared:
                problems.add(f"{path}: {a!r} and {b!r} share ids {', '.join(map(str, shared[:10]))}; "
                             "the splits must be disjoint")
        return splits
