"""A generative method's translated images as a picture: one row per image pair, one column per kind of image.

Takes what `Method.image_translations` returns ({name: (n, 3, h, w) in [0, 1]}) and draws it with the rank-list
renderer, so reports lay translations out the same way for every method that makes them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..core import Modality, Sample
from .ranklist import RankRow, Tile, render_ranklist

# short captions for the names JSIA-ReID's (and the next generative methods') image_translations use
CAPTIONS = {
    "real_visible": "visible", "real_infrared": "infrared",
    "fake_infrared": "vis->IR", "fake_visible": "IR->vis",
    "reconstructed_visible": "rec. vis", "reconstructed_infrared": "rec. IR",
    "cycle_visible": "cycle vis", "cycle_infrared": "cycle IR",
}
ORDER = ("real_visible", "fake_infrared", "real_infrared", "fake_visible", "reconstructed_visible",
         "reconstructed_infrared", "cycle_visible", "cycle_infrared")


def _pil(image: torch.Tensor):  # -> PIL.Image.Image
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def translation_rows(images: Mapping[str, torch.Tensor]) -> list[RankRow]:
    """Rows of tiles, one per pair: the known kinds in `ORDER` (each captioned), then any others by name."""
    if not images:
        raise ValueError("no translated images to draw: the method's image_translations returned none")
    names = [n for n in ORDER if n in images] + [n for n in images if n not in ORDER]
    counts = {n: images[n].shape[0] for n in names}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every kind of translated image needs the same number of images, got {counts}")
    rows = []
    for i in range(counts[names[0]]):
        tiles = [Tile(_pil(images[n][i]), [CAPTIONS.get(n, n)]) for n in names]
        rows.append(RankRow(query=tiles[0], hits=tiles[1:]))
    return rows


def render_translations(images: Mapping[str, torch.Tensor], out: str | Path,
                        tile: tuple[int, int] = (128, 64)) -> Path:
    """Draw `images` (as `Method.image_translations` returns them) into a PNG at `out` (atomic write)."""
    return render_ranklist(translation_rows(images), out, tile=tile, gap=0)


def same_identity_pairs(samples: Sequence[Sample], n: int, seed: int = 0) -> list[tuple[Sample, Sample]]:
    """Up to `n` (visible, infrared) pairs, each of one identity (n identities drawn with `seed`, sorted by pid)."""
    by_pid: dict[int, dict[Modality, list[Sample]]] = {}
    for s in samples:
        by_pid.setdefault(s.pid, {Modality.VISIBLE: [], Modality.INFRARED: []})[s.modality].append(s)
    both = sorted(pid for pid, mods in by_pid.items() if all(mods.values()))
    if not both:
        raise ValueError("no identity has images in both modalities: nothing to pair for translations")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(both, min(n, len(both))))
    return [(rng.choice(by_pid[p][Modality.VISIBLE]), rng.choice(by_pid[p][Modality.INFRARED])) for p in chosen]


def translate_samples(method: Any, pairs: Sequence[tuple[Sample, Sample]], height: int, width: int,
                      device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """`method.image_translations` of (visible, infrared) sample pairs, read through the inference path's
    preprocessing at height x width: {name: (len(pairs), 3, h, w) in [0, 1]} ({} for a non-generative method)."""
    from ..inference.embed import preprocess

    items = [v for v, _ in pairs] + [i for _, i in pairs]
    images = preprocess(items, height, width, method.inference_spec()).to(device)
    codes = torch.tensor([Modality.VISIBLE.code] * len(pairs) + [Modality.INFRARED.code] * len(pairs),
                         dtype=torch.int8, device=device)
    return dict(method.image_translations(images, codes))
