"""The value every dataset reader returns (ReIDDataset) and the contract a reader meets (Reader)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ...core import DatasetError, Modality, ModalityError, Sample


@dataclass
class ReIDDataset:
    """A parsed dataset: training, validation and test samples plus the training label map.

    `label_map` maps each training pid to a contiguous label 0..C-1, sorted by pid and shared by
    both modalities. `test` holds every test-identity image of both modalities; protocols pick
    queries and galleries from it. `info` carries layout-specific facts (split ids, cameras).
    """

    name: str
    root: Path
    train: list[Sample]
    test: list[Sample]
    val: list[Sample] = field(default_factory=list)
    label_map: dict[int, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of training identities."""
        return len(self.label_map)

    def train_labels(self) -> list[int]:
        """The training label of each training sample, in order."""
        return [self.label_map[s.pid] for s in self.train]


def build_label_map(samples: Iterable[Sample], where: str = "training split") -> dict[int, int]:
    """One sorted pid -> label map shared by both modalities; every pid must have both modalities."""
    by_mod: dict[Modality, set[int]] = {Modality.VISIBLE: set(), Modality.INFRARED: set()}
    for s in samples:
        by_mod[s.modality].add(s.pid)
    vis, ir = by_mod[Modality.VISIBLE], by_mod[Modality.INFRARED]
    if not vis or not ir:
        missing = "visible" if not vis else "infrared"
        raise ModalityError(f"{where}: no {missing} images; a cross-modality training set needs both modalities")
    only_one = sorted(vis ^ ir)
    if only_one:
        detail = ", ".join(f"{p} ({'visible' if p in vis else 'infrared'} only)" for p in only_one[:10])
        more = f" and {len(only_one) - 10} more" if len(only_one) > 10 else ""
        raise DatasetError(
            f"{where}: {len(only_one)} identities appear in only one modality: {detail}{more}. "
            "Every training identity needs visible and infrared images; remove them from the split file."
        )
    return {pid: i for i, pid in enumerate(sorted(vis))}


class Reader(Protocol):
    """A dataset reader, registered with `@register_dataset(name)`.

    `Options` is a dataclass of its options (the config section `data.options`); the constructor
    takes the root and those options as keywords and does no I/O; `load()` parses the layout and
    returns a ReIDDataset, raising a DatasetError (LayoutError) that names every problem found.
    """

    Options: ClassVar[type]

    def __init__(self, root: Path, **options: Any) -> None: ...

    def load(self) -> ReIDDataset: ...
