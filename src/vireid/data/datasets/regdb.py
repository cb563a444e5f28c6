"""RegDB reader: Visible|Thermal/<pid>/*.bmp listed by idx/{train,test}_{visible,thermal}_<t>.txt.

Dataset facts: docs/reference/protocols.md#sec-4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ...core import ConfigError, Modality, Sample
from ...registry import register_dataset
from ..images import is_image_file
from ._common import (
    Problems,
    check_both_modalities,
    check_label_consistency,
    check_options,
    is_synthetic,
    listed_image_problem,
    read_list_file,
    read_manifest,
    require_root,
    sort_samples,
    split_summary,
)
from .base import ReIDDataset, build_label_map

VISIBLE_CAM = 1
THERMAL_CAM = 2
TRIALS = range(1, 11)
LAYOUT = "RegDB"
_FOLDERS = {Modality.VISIBLE: ("visible", "Visible"), Modality.INFRARED: ("thermal", "Thermal")}


def parse_trial(value: Any) -> int:
    """The trial number 1..10 from an int or a digit string; ConfigError otherwise."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise ConfigError(f"regdb reader: trial must be an integer 1..10, got {value!r}")
    trial = int(value)
    if trial not in TRIALS:
        raise ConfigError(f"regdb reader: trial must be 1..10 (one of the 10 official splits), got {trial}")
    return trial


@dataclass
class RegDBOptions:
    """Reader options of RegDB (config section `data.options`)."""

    trial: int = 1  # the official split 1..10 whose index files are read


@register_dataset("regdb")
class RegDB:
    """Reads one RegDB trial (option `trial`, 1..10, default 1): its train and test index files."""

    Options = RegDBOptions

    def __init__(self, root: Path, **options: Any) -> None:
        check_options("regdb", options, RegDBOptions)
        self.root = Path(root).expanduser()
        self.trial = parse_trial(options.get("trial", 1))

    def load(self) -> ReIDDataset:
        """Parse and validate the trial's index files; LayoutError lists every problem found."""
        root = self.root
        require_root(LAYOUT, root, "a RegDB folder holding Visible/, Thermal/ and idx/")
        problems = Problems(LAYOUT, root)
        splits: dict[str, list[Sample]] = {}
        labels: dict[str, dict[int, int]] = {}
        for split in ("train", "test"):
            samples, rows = [], []
            for modality, (key, _) in _FOLDERS.items():
                idx = root / "idx" / f"{split}_{key}_{self.trial}.txt"
                for line, rel, label in read_list_file(idx, problems):
                    sample = self._sample(idx, line, rel, modality, problems)
                    if sample is not None:
                        samples.append(sample)
                        rows.append((str(idx), line, sample.pid, label))
            labels[split] = check_label_consistency(f"RegDB trial {self.trial} {split}", rows, problems)
            splits[split] = sort_samples(samples)

        shared = sorted(set(split_summary(splits["train"])) & set(split_summary(splits["test"])))
        if shared:
            problems.add(f"{root / 'idx'}: trial {self.trial} train and test files share {len(shared)} persons "
                         f"({', '.join(map(str, shared[:10]))}); the splits must be disjoint")
        where = f"RegDB trial {self.trial} training split at {root}"
        check_both_modalities(where, splits["train"], problems,
                              f"idx/train_visible_{self.trial}.txt and idx/train_thermal_{self.trial}.txt")
        problems.raise_if_any()

        manifest = read_manifest(root)
        info = {
            "layout": "regdb",
            "trial": self.trial,
            "split_ids": {k: split_summary(v) for k, v in splits.items()},
            "idx_labels": labels,  # the per-split re-indexed labels of the idx files, for reference only
            "rgb_cams": [VISIBLE_CAM],
            "ir_cams": [THERMAL_CAM],
            "synthetic": is_synthetic(manifest),
            "manifest": manifest,
            "checks": [
                f"idx files of trial {self.trial} present and parseable",
                "every listed image exists, under Visible/<pid>/ or Thermal/<pid>/",
                "visible and thermal files of a split agree on one label per person",
                "train and test persons are disjoint",
                "every training person has visible and thermal images",
                "no symlink loops (links that lead back to themselves or to a folder above them)",
            ],
        }
        return ReIDDataset(name="regdb", root=root, train=splits["train"], test=splits["test"], val=[],
                           label_map=build_label_map(splits["train"], where=where), info=info)

    def _sample(self, idx: Path, line: int, rel: str, modality: Modality, problems: Problems) -> Sample | None:
        """The sample of one idx line, with pid from its folder; None (and a problem) when it is wrong."""
        parts = PurePosixPath(rel.replace("\\", "/")).parts
        folder = _FOLDERS[modality][1]
        loc = f"{idx}:{line}"
        if len(parts) < 3 or parts[0].lower() != folder.lower():
            problems.add(f"{loc}: expected a path '{folder}/<pid>/<file>', found {rel!r}")
            return None
        if not parts[-2].isdigit():
            problems.add(f"{loc}: expected the person folder of {rel!r} to be an integer id, found {parts[-2]!r}")
            return None
        path = root_join(self.root, parts)
        if not is_image_file(path):
            problems.add(f"{loc}: {path} is not an image file (expected .bmp, .jpg, .jpeg or .png)")
            return None
        problem = listed_image_problem(loc, path)  # missing, a dangling symlink or a symlink loop
        if problem is not None:
            problems.add(problem)
            return None
        cam = VISIBLE_CAM if modality is Modality.VISIBLE else THERMAL_CAM
        return Sample(path, int(parts[-2]), cam, modality)


def root_join(root: Path, parts: tuple[str, ...]) -> str:
    """The OS path of a relative index path under `root`."""
    return str(root.joinpath(*parts))
