"""The one path from images to features: preprocess as the method declares, batch by modality, embed, flip.

Evaluation (`make_extractor`), `FeatureExtractor`, ONNX export (`embed_images`) and the demo all
come through here. Items are grouped by modality (visible first), cut into `batch_size` chunks in
input order; under torchrun the chunks are dealt to ranks whole and gathered back, so features are
bitwise those of one process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core import ConfigError, Modality, Sample
from ..data.transforms import EvalItem, load_eval_batch
from ..methods.base import InferenceSpec, Method
from ..metrics.flip import fuse_flip
from ..utils.distributed import DistInfo


@torch.no_grad()
def embed_images(method: Method, images: torch.Tensor, modality: Modality | torch.Tensor, *,
                 flip: bool) -> dict[str, torch.Tensor]:
    """`method.embed`, with CAJ flip fusion of the (L2-normalised) features of the mirrored images when `flip`."""
    out = method.embed(images, modality)
    if flip:
        mirrored = method.embed(torch.flip(images, dims=[3]), modality)
        out = {k: fuse_flip(v, mirrored[k], "caj") for k, v in out.items()}
    return out


def preprocess(items: Sequence[EvalItem], height: int, width: int, spec: InferenceSpec,
               cache: Any = None) -> torch.Tensor:
    """Decode, LANCZOS-resize to height x width and normalise with the spec's mean/std: (B, channels, H, W)."""
    if spec.channels != 3:
        raise ConfigError(f"the method declares {spec.channels}-channel test input; vireid's inference path delivers "
                          "RGB images (3 channels): transform them inside the method's embed()")
    return load_eval_batch(list(items), height, width, cache, mean=spec.mean, std=spec.std)


def embed_items(method: Method, items: Sequence[EvalItem], modalities: Sequence[Modality], *, height: int,
                width: int, device: torch.device | str = "cpu", flip: bool = False, batch_size: int = 128,
                kinds: Sequence[str] | None = None, dist: DistInfo | None = None, progress: bool = False,
                cache: Any = None) -> dict[str, torch.Tensor]:
    """{feature kind: (N, D) float32 CPU tensor}, row i the feature of `items[i]` taken in `modalities[i]`."""
    if len(items) != len(modalities):
        raise ValueError(f"got {len(modalities)} modalities for {len(items)} images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dist = dist or DistInfo()
    device = torch.device(device)
    spec = method.inference_spec()
    method.eval()
    chunks: list[tuple[Modality, list[int]]] = []
    for mod in (Modality.VISIBLE, Modality.INFRARED):
        idx = [i for i, m in enumerate(modalities) if m is mod]
        chunks += [(mod, idx[j:j + batch_size]) for j in range(0, len(idx), batch_size)]
    chunks = chunks[dist.rank::dist.world_size]
    rows: dict[str, list[torch.Tensor]] = {}
    order: list[int] = []
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(idx) for _, idx in chunks), desc="extracting features", leave=False,
                   dynamic_ncols=True)
    for mod, idx in chunks:
        images = preprocess([items[i] for i in idx], height, width, spec, cache).to(device)
        out = embed_images(method, images, mod, flip=flip)
        for k, v in out.items():
            if kinds is None or k in kinds:
                rows.setdefault(k, []).append(v.float().cpu())
        order += idx
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    local = {k: torch.cat(v) for k, v in rows.items()}
    if dist.initialized:
        import torch.distributed as tdist

        gathered: list = [None] * dist.world_size
        tdist.all_gather_object(gathered, (order, local))
        order = [i for o, _ in gathered for i in o]
        local = {k: torch.cat([part[k] for _, part in gathered if k in part]) for k in set().union(
            *(part.keys() for _, part in gathered))}
    if not order:
        dims = method.feature_dims()
        return {k: torch.empty((0, dims[k])) for k in (kinds or dims)}
    perm = torch.empty(len(order), dtype=torch.long)
    perm[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return {k: v[perm] for k, v in local.items()}


def make_extractor(method: Method, height: int, width: int, device: torch.device | str, *, flip: bool = False,
                   batch_size: int = 128, dist: DistInfo | None = None, progress: bool = False,
                   kinds: Sequence[str] | None = None) -> Callable[[list[Sample]], dict[str, torch.Tensor]]:
    """The Evaluator's extract function: samples -> {feature kind: (N, D) CPU tensor}, rows in sample order."""

    def extract(samples: list[Sample]) -> dict[str, torch.Tensor]:
        return embed_items(method, samples, [s.modality for s in samples], height=height, width=width,
                           device=device, flip=flip, batch_size=batch_size, kinds=kinds, dist=dist,
                           progress=progress)

    return extract
