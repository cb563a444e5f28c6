"""Training data pipeline: Samples -> (cache) -> augmented views -> ``vireid.core.Batch``.

Public API (import from ``vireid.data.loading``):

- ``ReIDTrainSet(samples, labels, height, width, augment=None, cache=None, seed=0)``: a torch
  ``Dataset``. ``dataset[item]`` takes a ``TrainItem(index, epoch, position)`` from the sampler (a
  plain int means ``TrainItem(i, 0, i)``) and returns a list of ``TrainView``: one view per image,
  or, in CAJ mode (``augment.channel_aug``), two for a visible image (slot 0: view A = geometry +
  channel random erasing; slot 1: view B = the same then channel exchange) and one for an infrared
  image (channel random erasing + adaptive gray). Augmentation draws come from
  ``sample_rng(seed, epoch, position)``, so batches do not depend on the worker count.
- ``ReIDEvalSet(samples, height, width, cache=None)``: evaluation images (no augmentation), items
  ``(tensor, index)``; the same pixels as ``load_eval_batch``.
- ``collate_views(list of view lists) -> Batch``: images float32 (B, 3, H, W), labels int64,
  modalities int8 (``Modality.code``), camids int64, indices int64. Order: without CAJ, exactly the
  sampler's order; with CAJ, [visible view A block, visible view B block, infrared block], each in
  the sampler's order, so an AGW batch has labels (vis, vis, ir) and modality codes (0, 0, 1).
- ``build_train_loader(dataset, data, sampler, augment, *, cache_dir, seed, rank=0, world_size=1,
  progress=True) -> (DataLoader, CrossModalSampler)``: the wiring, from the config's ``data``,
  ``sampler`` and ``augment`` sections. Call ``sampler.set_epoch(e)`` before iterating epoch e. The
  sampler is seeded with ``seed + sampler.seed_offset``, augmentation with ``seed``.
- Re-exported: ``CrossModalSampler``, ``TrainItem``, ``ImageCache``, ``IMAGENET_MEAN``,
  ``IMAGENET_STD``, ``load_eval_batch``, ``to_normalized_tensor``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core import Batch, ConfigError, DatasetError, Modality, Sample, VireidError
from .cache import ImageCache, decode_resized
from .images import check_image_sizes
from .sampler import CrossModalSampler, TrainItem
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_eval_batch,
    sample_rng,
    to_normalized_tensor,
    train_view,
)

if TYPE_CHECKING:
    from ..config import AugmentConfig, DataConfig, SamplerConfig
    from .datasets import ReIDDataset

__all__ = [
    "ReIDTrainSet", "ReIDEvalSet", "TrainView", "TrainItem", "collate_views", "build_train_loader",
    "CrossModalSampler", "ImageCache", "IMAGENET_MEAN", "IMAGENET_STD", "load_eval_batch",
    "to_normalized_tensor",
]


class TrainView(NamedTuple):
    """One augmented image as the dataset returns it; slot 1 marks CAJ's second visible view."""

    image: torch.Tensor
    label: int
    modality: int
    camid: int
    index: int  # type: ignore[assignment]  # a field named like tuple.index, kept: public API
    slot: int


class _ImageSource:
    """Pixels of sample i at (height, width): from the cache when given, else decoded on the fly."""

    def __init__(self, samples: Sequence[Sample], height: int, width: int, cache: ImageCache | None) -> None:
        self.samples, self.height, self.width = list(samples), int(height), int(width)
        self.cache = cache
        self._cache_pos: np.ndarray | None = None
        if cache is not None:
            if (cache.height, cache.width) != (self.height, self.width):
                raise DatasetError(
                    f"image cache {cache.path} holds {cache.height}x{cache.width} images but the loader needs "
                    f"{self.height}x{self.width}; build the cache with the configured data.height/data.width"
                )
            pos = [cache.index_of(s) for s in self.samples]
            absent = [s.path for s, p in zip(self.samples, pos, strict=True) if p is None]
            if absent:
                raise DatasetError(
                    f"image cache {cache.path} lacks {len(absent)} of the {len(self.samples)} samples "
                    f"(first: {absent[0]}); build it from this sample list with ImageCache.build"
                )
            self._cache_pos = np.asarray(pos, dtype=np.int64)

    def __call__(self, i: int) -> np.ndarray:
        if self._cache_pos is not None:
            return self.cache[int(self._cache_pos[i])]  # type: ignore[index]
        return decode_resized(self.samples[i].path, self.height, self.width)


class ReIDTrainSet(Dataset):
    """Augmented training images over Samples; items are sampler TrainItems, values lists of TrainView."""

    def __init__(
        self,
        samples: Sequence[Sample],
        labels: Sequence[int],
        height: int,
        width: int,
        augment: AugmentConfig | None = None,
        cache: ImageCache | None = None,
        seed: int = 0,
    ) -> None:
        if len(samples) != len(labels):
            raise DatasetError(f"ReIDTrainSet: {len(samples)} samples but {len(labels)} labels; they must match")
        self.samples = list(samples)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.modalities = np.array([s.modality.code for s in self.samples], dtype=np.int8)
        self.camids = np.array([s.camid for s in self.samples], dtype=np.int64)
        self.height, self.width, self.seed = int(height), int(width), int(seed)
        self.augment = augment
        self.channel_aug = bool(augment is not None and augment.channel_aug)
        self._source = _ImageSource(self.samples, height, width, cache)

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> np.ndarray:
        """The un-augmented (H, W, 3) uint8 pixels of sample `index`."""
        return self._source(index)

    def __getitem__(self, item: TrainItem | int) -> list[TrainView]:
        if not isinstance(item, TrainItem):
            item = TrainItem(int(item), 0, int(item))
        i = item.index
        rng = sample_rng(self.seed, item.epoch, item.position)
        img = self._source(i)
        mod = int(self.modalities[i])
        meta = (int(self.labels[i]), mod, int(self.camids[i]), i)
        if not self.channel_aug:
            return [TrainView(train_view(img, rng, self.augment, "plain"), *meta, 0)]
        if mod == Modality.VISIBLE.code:
            a = train_view(img, rng, self.augment, "visible_a")
            b = train_view(img, rng, self.augment, "visible_b")
            return [TrainView(a, *meta, 0), TrainView(b, *meta, 1)]
        return [TrainView(train_view(img, rng, self.augment, "infrared"), *meta, 0)]


class ReIDEvalSet(Dataset):
    """Evaluation images (RGB, LANCZOS resize, normalise; no augmentation); items (tensor, index)."""

    def __init__(self, samples: Sequence[Sample], height: int, width: int, cache: ImageCache | None = None) -> None:
        self.samples = list(samples)
        self.height, self.width = int(height), int(width)
        self._cache = cache if cache is not None and (cache.height, cache.width) == (self.height, self.width) else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return load_eval_batch(self.samples[i], self.height, self.width, self._cache)[0], int(i)


def collate_views(items: Sequence[Sequence[TrainView]]) -> Batch:
    """Stack dataset outputs into a Batch; CAJ batches are ordered [vis slot 0, vis slot 1, infrared]."""
    views = [v for group in items for v in group]
    if any(v.slot for v in views):
        vis = Modality.VISIBLE.code
        views = ([v for v in views if v.modality == vis and v.slot == 0]
                 + [v for v in views if v.modality == vis and v.slot == 1]
                 + [v for v in views if v.modality != vis])
    return Batch(
        images=torch.stack([v.image for v in views]),
        labels=torch.tensor([v.label for v in views], dtype=torch.int64),
        modalities=torch.tensor([v.modality for v in views], dtype=torch.int8),
        camids=torch.tensor([v.camid for v in views], dtype=torch.int64),
        indices=torch.tensor([v.index for v in views], dtype=torch.int64),
    )


def unwrap_worker_error(exc: VireidError) -> VireidError:
    """The original one-line error of a VireidError a DataLoader worker raised, without torch's wrapping.

    torch re-raises a worker's exception as the same class with the message "Caught X in DataLoader
    worker process N.\nOriginal Traceback ...\n<module>.X: <message>"; the CLI prints errors as one
    line, so this recovers <message>. Any other error is returned unchanged.
    """
    text = str(exc)
    cls = type(exc)
    if not text.startswith(f"Caught {cls.__name__} in DataLoader worker"):
        return exc
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(marker)]
    if not starts:
        return exc
    message = "\n".join(lines[starts[-1]:])[len(marker):].rstrip()
    try:
        return cls(message)
    except Exception:  # a subclass with another constructor (LayoutError): keep the family, drop the class
        return DatasetError(message)


class _WorkerErrorsUnwrapped:
    """Iterator over a DataLoader's batches that re-raises worker VireidErrors as their one-line original."""

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it

    def __iter__(self) -> _WorkerErrorsUnwrapped:
        return self

    def __len__(self) -> int:
        return len(self._it)  # type: ignore[arg-type]  # torch's loader iterators have a length

    def __next__(self) -> Any:
        try:
            return next(self._it)
        except VireidError as exc:
            plain = unwrap_worker_error(exc)
            if plain is exc:
                raise
            raise plain from exc


class TrainLoader(DataLoader):
    """The training DataLoader; an error in a worker (an empty or broken image) surfaces as its one line."""

    def __iter__(self) -> Any:
        return _WorkerErrorsUnwrapped(super().__iter__())

    def seed_workers_privately(self, seed: int) -> None:
        """Draw the persistent workers' base seed from a generator of the loader's own, not torch's global RNG.

        A process draws that seed once, when its first epoch starts: an uninterrupted run drew it at epoch 0, before
        any checkpointed RNG state, so a resumed run drawing it again would shift every later draw of the global
        RNG (D2RL's latent noise) and no longer match. The workers' seeds feed no augmentation (seeded per sample).
        """
        if self.persistent_workers and self._iterator is None:
            self.generator = torch.Generator().manual_seed(seed)


def build_train_loader(
    dataset: ReIDDataset,
    data: DataConfig,
    sampler: SamplerConfig,
    augment: AugmentConfig | None,
    *,
    cache_dir: str | Path | None,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> tuple[TrainLoader, CrossModalSampler]:
    """DataLoader of Batches over dataset.train (the config's data/sampler/augment sections) and its sampler."""
    samples: list[Sample] = list(dataset.train)
    if not samples:
        raise DatasetError(f"dataset {dataset.name!r} has no training samples; check the split")
    labels = dataset.train_labels()
    height, width = int(data.height), int(data.width)
    cache = None
    if data.cache:
        where = cache_dir or data.cache_dir
        if not where:
            raise ConfigError("data.cache is on but no cache directory was given; pass cache_dir or set data.cache_dir")
        cache = ImageCache.build(samples, height, width, where, progress=progress and rank == 0)
    else:  # decoded on the fly: find empty or vanished files now (one stat each), not in the middle of an epoch
        check_image_sizes(s.path for s in samples)
    train_set = ReIDTrainSet(samples, labels, height, width, augment=augment, cache=cache, seed=seed)
    batch_sampler = CrossModalSampler(
        labels, [s.modality for s in samples],
        num_ids=int(sampler.num_ids), num_pos=int(sampler.num_pos), kind=str(sampler.kind),
        seed=int(seed) + int(sampler.seed_offset), rank=rank, world_size=world_size,
    )
    workers = int(data.num_workers)
    loader = TrainLoader(
        train_set,
        batch_sampler=batch_sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_views,
    )
    return loader, batch_sampler
