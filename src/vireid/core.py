"""Core types shared by every part of vireid: modality, samples, batches, trials, errors."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is only needed by code that builds batches
    import torch


class Modality(enum.Enum):
    """The spectrum an image was taken in; thermal and near-infrared are both INFRARED."""

    VISIBLE = "visible"
    INFRARED = "infrared"

    @property
    def code(self) -> int:
        """Integer code used inside tensors: 0 = visible, 1 = infrared."""
        return 0 if self is Modality.VISIBLE else 1

    @classmethod
    def from_code(cls, code: int) -> Modality:
        """Inverse of :attr:`code`."""
        if int(code) == 0:
            return cls.VISIBLE
        if int(code) == 1:
            return cls.INFRARED
        raise ValueError(f"modality code must be 0 (visible) or 1 (infrared), got {code!r}")

    @classmethod
    def parse(cls, value: Modality | str) -> Modality:
        """Accept a Modality or one of its names/aliases (visible, rgb, vis, infrared, ir, thermal, nir)."""
        if isinstance(value, Modality):
            return value
        key = str(value).strip().lower()
        aliases = {
            "visible": cls.VISIBLE, "rgb": cls.VISIBLE, "vis": cls.VISIBLE, "color": cls.VISIBLE,
            "infrared": cls.INFRARED, "ir": cls.INFRARED, "thermal": cls.INFRARED, "nir": cls.INFRARED,
        }
        if key not in aliases:
            raise ModalityError(
                f"unknown modality {value!r}: expected one of 'visible' or 'infrared' "
                "(aliases: rgb, vis, ir, thermal, nir)"
            )
        return aliases[key]

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, order=True)
class Sample:
    """One image on disk: its path, the dataset's original identity, camera and modality."""

    path: str
    pid: int
    camid: int
    modality: Modality = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view of the sample."""
        return {"path": self.path, "pid": self.pid, "camid": self.camid, "modality": self.modality.value}


@dataclass
class Batch:
    """What the loader yields: images of both modalities with labels and a modality mask."""

    images: torch.Tensor  # (B, C, H, W) float
    labels: torch.Tensor  # (B,) int64 training labels
    modalities: torch.Tensor  # (B,) int8, Modality.code per image
    camids: torch.Tensor  # (B,) int64
    indices: torch.Tensor  # (B,) int64 positions in the dataset

    def to(self, device: Any, non_blocking: bool = False) -> Batch:
        """Move every tensor to `device`."""
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in
                       (self.images, self.labels, self.modalities, self.camids, self.indices)))

    def pin_memory(self) -> Batch:
        """Page-locked copies, so DataLoader(pin_memory=True) speeds up host-to-GPU copies of a Batch."""
        return Batch(*(t.pin_memory() for t in
                       (self.images, self.labels, self.modalities, self.camids, self.indices)))

    @property
    def visible_mask(self) -> torch.Tensor:
        """Boolean mask of visible images."""
        return self.modalities == Modality.VISIBLE.code

    @property
    def infrared_mask(self) -> torch.Tensor:
        """Boolean mask of infrared images."""
        return self.modalities == Modality.INFRARED.code

    def __len__(self) -> int:
        return int(self.labels.shape[0])


RULES = ("sysu_location", "same_pid_same_cam", "none")
#: Rule "sysu_location": SYSU-MM01's infrared camera 3 shares a room with visible camera 2, so a camera-3
#: query ignores every camera-2 gallery image (query camera, ignored gallery camera).
SYSU_SHARED_ROOM: tuple[int, int] = (3, 2)
CMC_KINDS = ("identity", "image")


@dataclass(frozen=True)
class EvalTrial:
    """One evaluation trial: a query list against a gallery list under a filter rule."""

    name: str
    query: Sequence[Sample]
    gallery: Sequence[Sample]
    rule: str
    cmc_kind: str
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.cmc_kind not in CMC_KINDS:
            raise ValueError(f"cmc_kind must be one of {CMC_KINDS}, got {self.cmc_kind!r}")


class VireidError(Exception):
    """Base class of every error vireid raises on purpose; the message names the fix.

    The whole family, defined here: DatasetError (LayoutError), ConfigError, CheckpointError,
    ModalityError, EvaluationError, TrainingError (NonFiniteLossError), StorageError, GalleryIndexError,
    ExportError.
    The CLI prints any of them as one line and exits with code 2.
    """


class DatasetError(VireidError):
    """A dataset is missing, malformed or inconsistent."""


class LayoutError(DatasetError):
    """A dataset layout has one or more problems; `problems` holds one line per problem."""

    #: How many problems the message spells out; `.problems` always holds all of them.
    MAX_LISTED = 20

    def __init__(self, layout: str, root: str | Path, problems: list[str]) -> None:
        self.layout = layout
        self.root = str(root)
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            listed = "\n  ".join(self.problems[:self.MAX_LISTED])
            more = len(self.problems) - self.MAX_LISTED
            tail = f"\n  ... and {more} more" if more > 0 else ""
            message = f"{len(self.problems)} problems in the {layout} layout at {self.root}:\n  {listed}{tail}"
        super().__init__(message)


class ConfigError(VireidError):
    """A configuration file or override is invalid."""


class CheckpointError(VireidError):
    """A checkpoint is missing, damaged or does not match the model."""


class ModalityError(VireidError):
    """A modality is unknown, or a set that needs both modalities lacks one."""


class EvaluationError(VireidError):
    """Inputs to evaluation are inconsistent (shapes, NaN, no valid query, empty gallery)."""


class TrainingError(VireidError):
    """Training cannot go on (non-finite loss, impossible batch)."""


class NonFiniteLossError(TrainingError):
    """A loss became NaN or inf; the message says where and which part."""


class StorageError(VireidError):
    """A file cannot be written (the disk is full, or permission is denied); nothing half-written is left."""


class GalleryIndexError(VireidError):
    """A gallery index is damaged or was built by another model."""


class ExportError(VireidError):
    """A model cannot be exported, or the exported graph disagrees with PyTorch."""


def as_path(p: str | Path) -> Path:
    """Expand ~ and return a Path."""
    return Path(p).expanduser()
