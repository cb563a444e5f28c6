"""Translated-image grids: row and column layout, captions, the same-identity pairs they are drawn from, and the
demo's translations picture for a generative method (none for a discriminative one)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vireid.core import Modality, Sample
from vireid.methods import build_method
from vireid.viz import render_translations, translation_rows
from vireid.viz.translations import CAPTIONS, ORDER, same_identity_pairs, translate_samples

from .helpers import tiny_config


def _images(n: int = 2, names: tuple[str, ...] = ORDER) -> dict[str, torch.Tensor]:
    return {name: torch.full((n, 3, 8, 4), k / len(names)) for k, name in enumerate(names)}


def test_rows_follow_the_known_order_then_the_others_by_name():
    names = ("extra", "fake_visible", "real_visible", "real_infrared")
    rows = translation_rows(_images(3, names))
    assert len(rows) == 3
    captions = [t.caption for t in (rows[0].query, *rows[0].hits)]
    assert captions == [[CAPTIONS["real_visible"]], [CAPTIONS["real_infrared"]], [CAPTIONS["fake_visible"]],
                        ["extra"]]


def test_tiles_carry_the_pixels_of_their_image():
    images = _images(2, ("real_visible", "fake_infrared"))
    images["fake_infrared"][1] = torch.tensor([1.0, 0.0, 0.5]).view(3, 1, 1)
    rows = translation_rows(images)
    assert rows[1].hits[0].image.getpixel((0, 0)) == (255, 0, 128)
    assert rows[0].query.image.size == (4, 8)


def test_mismatched_counts_and_empty_input_are_refused():
    images = _images(2, ("real_visible", "fake_infrared"))
    images["fake_infrared"] = images["fake_infrared"][:1]
    with pytest.raises(ValueError, match="same number of images"):
        translation_rows(images)
    with pytest.raises(ValueError, match="returned none"):
        translation_rows({})


def test_render_writes_one_row_per_pair_and_one_column_per_kind(tmp_path):
    out = render_translations(_images(3), tmp_path / "grid.png", tile=(32, 16))
    with Image.open(out) as img:
        width, height = img.size
    # each cell is the tile plus 4 px padding on both sides, plus one caption line (12 px + 4)
    assert (width, height) == (len(ORDER) * (16 + 8), 3 * (32 + 8 + 16))


def _samples(tmp_path, pids_vis: list[int], pids_ir: list[int]) -> list[Sample]:
    samples = []
    for modality, pids in ((Modality.VISIBLE, pids_vis), (Modality.INFRARED, pids_ir)):
        for k, pid in enumerate(pids):
            path = tmp_path / f"{modality.value}-{pid}-{k}.png"
            Image.new("RGB", (16, 32), (40 * pid % 255, 90, 10 * k)).save(path)
            samples.append(Sample(str(path), pid, 1 if modality is Modality.VISIBLE else 3, modality))
    return samples


def test_pairs_are_one_identity_in_both_modalities_and_seeded(tmp_path):
    samples = _samples(tmp_path, [1, 1, 2, 3, 4], [1, 2, 2, 4, 5])
    pairs = same_identity_pairs(samples, 10, seed=3)
    assert [v.pid for v, _ in pairs] == [1, 2, 4]  # 3 and 5 lack a modality
    assert all(v.pid == i.pid and v.modality is Modality.VISIBLE and i.modality is Modality.INFRARED
               for v, i in pairs)
    assert same_identity_pairs(samples, 10, seed=3) == pairs
    assert len(same_identity_pairs(samples, 2, seed=0)) == 2
    with pytest.raises(ValueError, match="both modalities"):
        same_identity_pairs(_samples(tmp_path, [1], [2]), 2)


def test_translate_samples_and_the_demo_picture(tmp_path):
    from vireid.demo import draw_translations

    cfg = tiny_config("jsia")
    torch.manual_seed(0)
    method = build_method(cfg, 6)
    samples = _samples(tmp_path, [1, 2, 3], [1, 2, 3])
    pairs = same_identity_pairs(samples, 3)
    images = translate_samples(method.eval(), pairs, cfg.data.height, cfg.data.width)
    assert set(images) == set(ORDER)
    assert all(img.shape == (3, 3, *method.gan_size) for img in images.values())

    class Data:
        test = samples

    out = draw_translations(method, cfg, Data, tmp_path / "translations.png", pairs=2)
    assert out is not None and out.stat().st_size > 500
    baseline_cfg = tiny_config("baseline")
    baseline = build_method(baseline_cfg, 6)
    assert draw_translations(baseline, baseline_cfg, Data, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
