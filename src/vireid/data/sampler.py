"""CrossModalSampler: identity-balanced batches holding both modalities (docs/reference/protocols.md#sec-6,
docs/reference/methods.md#common-1-5).

``CrossModalSampler(labels, modalities, num_ids, num_pos, kind="agw", seed=0, rank=0, world_size=1)``
is a *batch* sampler: each iteration yields one batch as a list of ``TrainItem(index, epoch,
position)``, where ``index`` is a position in the sample list, ``epoch`` the sampler's epoch and
``position`` the item's place in the epoch's global (all-rank) flat batch list. Carrying the epoch
in the item keeps the dataset stateless, so persistent DataLoader workers see a new epoch without
being told; ``position`` seeds the item's augmentation (``transforms.sample_rng``).

Kinds (P = num_ids, K = num_pos per modality):

- ``"agw"`` (AGW/CAJ/LbA ``IdentitySampler``): N = max(#visible, #infrared); ``N // (P*K) + 1``
  batches per epoch (696 on SYSU, 65 on RegDB). Per batch, P distinct identities uniformly without
  replacement; for each, K visible and K infrared indices uniformly *with* replacement. Batch order:
  the visible blocks of id1..idP, then the infrared blocks in the same identity order, so the two
  halves' label sequences are equal element-wise.
- ``"mpanet"`` (MPANet ``RandomIdentitySampler``): per identity, the larger modality is subsampled
  without replacement to the smaller one's size (both are first drawn up to K with replacement when
  both have fewer than K, as the reference does); both are shuffled and interleaved IR, RGB, IR, ...
  and cut into chunks of 2K (leftovers dropped). Each batch draws P identities without replacement
  among those with chunks left and takes one chunk from each (identity-contiguous). The epoch is
  one full pass and ends when fewer than P identities have chunks left. Identities with no chunk at
  all are never drawn (the reference would crash on them).

Randomness: epoch e's batches come only from ``numpy_rng(seed, e)``. DDP: every rank generates the
same global list; rank r takes batches ``r::world_size`` after truncating the list to a multiple of
world_size, so every rank runs the same number of steps. ``len(sampler)`` is exact for the current
epoch (for mpanet it is computed by generating that epoch's batches, memoised).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Sampler

from ..core import ConfigError, Modality, ModalityError
from ..utils.seed import numpy_rng
from ..utils.tensors import modality_codes

SAMPLER_KINDS = ("agw", "mpanet")


class TrainItem(NamedTuple):
    """One sampled image: dataset position, epoch, and place in the epoch's global batch list."""

    index: int  # type: ignore[assignment]  # a field named like tuple.index, kept: public API
    epoch: int
    position: int


class CrossModalSampler(Sampler):
    """Batch sampler of P identities x (K visible + K infrared); see the module docstring."""

    def __init__(
        self,
        labels: Sequence[int],
        modalities: Sequence[Modality | int],
        num_ids: int,
        num_pos: int,
        kind: str = "agw",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if kind not in SAMPLER_KINDS:
            raise ConfigError(f"sampler.kind must be one of {SAMPLER_KINDS}, got {kind!r}")
        if num_ids < 1 or num_pos < 1:
            raise ConfigError(f"sampler needs num_ids >= 1 and num_pos >= 1, got num_ids={num_ids} num_pos={num_pos}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
        labels_arr = np.asarray(labels, dtype=np.int64)
        codes = modality_codes(list(modalities), len(modalities), "cpu", dtype=torch.int8).numpy()
        if labels_arr.ndim != 1 or len(labels_arr) != len(codes):
            raise ConfigError(
                f"labels and modalities must be 1-D of equal length, got {labels_arr.shape} and {len(codes)}"
            )
        self.kind, self.num_ids, self.num_pos = kind, int(num_ids), int(num_pos)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self.ids = np.unique(labels_arr)  # sorted identity labels
        vis, ir = codes == Modality.VISIBLE.code, codes == Modality.INFRARED.code
        self.num_visible, self.num_infrared = int(vis.sum()), int(ir.sum())
        # Per identity, its sample positions of each modality (ascending: the order of the sample list).
        self._vis = self._group(labels_arr, vis)
        self._ir = self._group(labels_arr, ir)
        self._validate()
        self._memo: tuple[int, list[np.ndarray]] | None = None

    def _group(self, labels: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        pos = np.flatnonzero(mask)
        lab = labels[pos]
        order = np.argsort(lab, kind="stable")
        pos, lab = pos[order], lab[order]
        bounds = np.searchsorted(lab, np.concatenate([self.ids, [np.iinfo(np.int64).max]]))
        return [pos[bounds[i]:bounds[i + 1]] for i in range(len(self.ids))]

    def _validate(self) -> None:
        missing = [(int(self.ids[i]), "visible" if len(v) == 0 else "infrared")
                   for i, (v, r) in enumerate(zip(self._vis, self._ir, strict=True)) if len(v) == 0 or len(r) == 0]
        if missing:
            detail = ", ".join(f"label {lab} has no {mod} image" for lab, mod in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise ModalityError(
                f"CrossModalSampler: {len(missing)} of {len(self.ids)} identities lack a modality: {detail}{more}. "
                "Every training identity needs visible and infrared images; fix the training split."
            )
        if len(self.ids) < self.num_ids:
            raise ConfigError(
                f"CrossModalSampler: a batch needs sampler.num_ids={self.num_ids} distinct identities but the "
                f"training set has only {len(self.ids)}; lower sampler.num_ids to at most {len(self.ids)}"
            )
        if self.kind == "mpanet":
            usable = sum(1 for v, r in zip(self._vis, self._ir, strict=True)
                         if self._mpanet_chunk_count(len(v), len(r)) > 0)
            if usable < self.num_ids:
                raise ConfigError(
                    f"CrossModalSampler(kind='mpanet'): only {usable} of {len(self.ids)} identities have at least "
                    f"num_pos={self.num_pos} images of each modality (one chunk), fewer than num_ids={self.num_ids}; "
                    "lower sampler.num_ids or sampler.num_pos"
                )

    def _mpanet_chunk_count(self, n_vis: int, n_ir: int) -> int:
        k = self.num_pos
        n = k if (n_vis < k and n_ir < k) else min(n_vis, n_ir)
        return n // k

    # -- epochs -------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (call before each epoch)."""
        self.epoch = int(epoch)

    @property
    def batch_size(self) -> int:
        """Images per batch before view duplication: 2 * num_ids * num_pos."""
        return 2 * self.num_ids * self.num_pos

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every batch of `epoch` (default: the current one) for all ranks, as arrays of sample positions."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._memo is not None and self._memo[0] == epoch:
            return self._memo[1]
        rng = numpy_rng(self.seed, epoch)
        batches = self._agw_batches(rng) if self.kind == "agw" else self._mpanet_batches(rng)
        self._memo = (epoch, batches)
        return batches

    def num_batches_global(self, epoch: int | None = None) -> int:
        """Length of the global batch list of `epoch` (agw: max(#vis, #ir) // (P*K) + 1)."""
        if self.kind == "agw":
            return max(self.num_visible, self.num_infrared) // (self.num_ids * self.num_pos) + 1
        return len(self.global_batches(epoch))

    def __len__(self) -> int:
        return self.num_batches_global() // self.world_size

    def __iter__(self) -> Iterator[list[TrainItem]]:
        epoch = self.epoch
        batches = self.global_batches(epoch)
        steps = len(batches) // self.world_size
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in batches])])
        for b in range(self.rank, steps * self.world_size, self.world_size):
            start = int(offsets[b])
            yield [TrainItem(int(idx), epoch, start + j) for j, idx in enumerate(batches[b])]

    # -- kinds --------------------------------------------------------------------------------

    def _agw_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        p, k = self.num_ids, self.num_pos
        n_batches = self.num_batches_global()
        vis_counts = np.array([len(v) for v in self._vis])
        ir_counts = np.array([len(r) for r in self._ir])
        vis_flat, ir_flat = np.concatenate(self._vis), np.concatenate(self._ir)
        vis_start = np.concatenate([[0], np.cumsum(vis_counts)[:-1]])
        ir_start = np.concatenate([[0], np.cumsum(ir_counts)[:-1]])
        batches = []
        for _ in range(n_batches):
            chosen = rng.choice(len(self.ids), size=p, replace=False)
            # K draws with replacement per identity: integers in [0, count) added to its block start.
            v = vis_start[chosen, None] + rng.integers(0, vis_counts[chosen, None], size=(p, k))
            r = ir_start[chosen, None] + rng.integers(0, ir_counts[chosen, None], size=(p, k))
            batches.append(np.concatenate([vis_flat[v.ravel()], ir_flat[r.ravel()]]))
        return batches

    def _mpanet_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        k = self.num_pos
        chunks: dict[int, list[np.ndarray]] = {}
        for i in range(len(self.ids)):
            ir, vis = self._ir[i], self._vis[i]
            if len(ir) < k and len(vis) < k:
                ir = rng.choice(ir, size=k, replace=True)
                vis = rng.choice(vis, size=k, replace=True)
            if len(ir) > len(vis):
                ir = rng.choice(ir, size=len(vis), replace=False)
            elif len(vis) > len(ir):
                vis = rng.choice(vis, size=len(ir), replace=False)
            ir, vis = rng.permutation(ir), rng.permutation(vis)
            n_chunks = len(ir) // k
            if n_chunks == 0:
                continue
            inter = np.empty(2 * n_chunks * k, dtype=np.int64)
            inter[0::2], inter[1::2] = ir[:n_chunks * k], vis[:n_chunks * k]
            chunks[i] = list(inter.reshape(n_chunks, 2 * k))
        available = sorted(chunks)
        batches = []
        while len(available) >= self.num_ids:
            picked = rng.choice(np.asarray(available), size=self.num_ids, replace=False)
            parts = []
            for i in picked.tolist():
                parts.append(chunks[i].pop(0))
                if not chunks[i]:
                    available.remove(i)
            batches.append(np.concatenate(parts))
        return batches
