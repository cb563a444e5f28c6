"""Feature extraction for evaluation: batches by modality, optional flip fusion, sharded across ranks."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..core import Modality, Sample
from ..metrics.flip import fuse_flip
from ..methods import Method
from .distributed import DistInfo


@torch.no_grad()
def embed_images(method: Method, images: torch.Tensor, modality: Modality, *, flip: bool) -> dict[str, torch.Tensor]:
    """`method.embed`, with CAJ flip fusion of the (L2-normalised) features when `flip`."""
    out = method.embed(images, modality)
    if flip:
        mirrored = method.embed(torch.flip(images, dims=[3]), modality)
        out = {k: fuse_flip(v, mirrored[k], "caj") for k, v in out.items()}
    return out


def make_extractor(method: Method, height: int, width: int, device: torch.device, *, flip: bool = False,
                   batch_size: int = 128, dist: DistInfo | None = None, progress: bool = False,
                   kinds: Sequence[str] | None = None) -> Callable[[list[Sample]], dict[str, torch.Tensor]]:
    """A function samples -> {feature kind: (N, D) CPU tensor}, rows in the order of `samples`."""
    from ..data.loading import load_eval_batch

    dist = dist or DistInfo()

    def extract(samples: list[Sample]) -> dict[str, torch.Tensor]:
        method.eval()
        # the same global chunks as a single process, dealt to ranks whole: features are bitwise identical
        chunks = []
        for mod in (Modality.VISIBLE, Modality.INFRARED):
            idx = [i for i in range(len(samples)) if samples[i].modality is mod]
            chunks += [(mod, idx[j:j + batch_size]) for j in range(0, len(idx), batch_size)]
        chunks = chunks[dist.rank::dist.world_size]
        mine = [i for _, idx in chunks for i in idx]
        rows: dict[str, list[torch.Tensor]] = {}
        order: list[int] = []
        bar = None
        if progress and dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=len(mine), desc="extracting features", leave=False, dynamic_ncols=True)
        for mod, idx in chunks:
            images = load_eval_batch([samples[i] for i in idx], height, width).to(device)
            out = embed_images(method, images, mod, flip=flip)
            for k, v in out.items():
                if kinds is None or k in kinds:
                    rows.setdefault(k, []).append(v.float().cpu())
            order += idx
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        local = {k: torch.cat(v) if v else torch.empty(0) for k, v in rows.items()}
        if dist.initialized:
            import torch.distributed as tdist

            gathered: list = [None] * dist.world_size
            tdist.all_gather_object(gathered, (order, local))
            order = [i for o, _ in gathered for i in o]
            local = {k: torch.cat([part[k] for _, part in gathered if part[k].numel()]) for k in local}
        perm = torch.empty(len(order), dtype=torch.long)
        perm[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return {k: v[perm] for k, v in local.items()}

    return extract
