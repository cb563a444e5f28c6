"""SynthVI's ir_consistency axis: 1 (the default) keeps today's sets byte for byte; 0 draws each person's garment
infrared intensities independently of their colours, so no colour-to-infrared lookup table carries over."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_synthetic import SMALL_ARGS, TINY, tree_digest
from vireid.core import ConfigError
from vireid.data.synthetic import generate, read_manifest
from vireid.data.synthetic.identity import LOWER, LOWER2, UPPER, UPPER2, make_identity
from vireid.data.synthetic.palette import PALETTE


def test_the_default_is_the_old_mapping_byte_for_byte(tmp_path):
    plain = generate("sysu", tmp_path / "plain", seed=0, workers=1, **SMALL_ARGS["sysu"], **TINY)
    one = generate("sysu", tmp_path / "one", seed=0, workers=1, ir_consistency=1.0, **SMALL_ARGS["sysu"], **TINY)
    assert tree_digest(one) == tree_digest(plain)
    assert "ir_consistency" not in read_manifest(one)["arguments"]  # the manifest of sets made before the option


def test_low_consistency_changes_infrared_images_only_and_is_recorded(tmp_path):
    base = generate("sysu", tmp_path / "base", seed=0, workers=1, **SMALL_ARGS["sysu"], **TINY)
    low = generate("sysu", tmp_path / "low", seed=0, workers=2, ir_consistency=0.0, **SMALL_ARGS["sysu"], **TINY)
    a, b = tree_digest(base), tree_digest(low)
    visible = [k for k in a if k.startswith(("cam1/", "cam2/", "cam4/", "cam5/"))]
    infrared = [k for k in a if k.startswith(("cam3/", "cam6/"))]
    assert visible and all(a[k] == b[k] for k in visible)  # the same people, poses and colours
    assert sum(a[k] != b[k] for k in infrared) > 0.9 * len(infrared)
    assert json.loads((low / "manifest.json").read_text())["arguments"]["ir_consistency"] == 0.0
    again = generate("sysu", tmp_path / "again", seed=0, workers=1, ir_consistency=0.0, **SMALL_ARGS["sysu"], **TINY)
    assert tree_digest(again) == b  # deterministic, whatever the worker count


def _lookup_table_error(consistency: float) -> float:
    """Mean absolute error of a colour -> infrared table fitted on persons 1..200, applied to persons 201..400."""
    palette = np.array([c for _, c in PALETTE], dtype=np.float32)

    def garments(pids: range) -> list[tuple[int, float]]:
        out = []
        for pid in pids:
            ident = make_identity(0, pid, 0.5, consistency)
            for slot in (UPPER, LOWER):
                colour = int(np.argmin(np.abs(palette - ident.rgb[slot]).sum(1)))  # the dye, within fabric jitter
                out.append((colour, float(ident.ir[slot])))
        return out

    table: dict[int, list[float]] = {}
    for colour, ir in garments(range(1, 201)):
        table.setdefault(colour, []).append(ir)
    errors = [abs(np.mean(table[c]) - ir) for c, ir in garments(range(201, 401)) if c in table]
    return float(np.mean(errors))


def test_at_zero_no_colour_to_infrared_table_carries_over_to_new_people():
    fixed, drawn = _lookup_table_error(1.0), _lookup_table_error(0.0)
    assert fixed < 0.06, fixed  # one intensity per colour: a 19-entry table predicts every garment
    assert drawn > 0.15, drawn  # drawn per garment: the table is no better than a guess
    assert fixed < _lookup_table_error(0.5) < drawn  # between the two ends: a mix


def test_a_persons_garments_keep_their_intensities_and_patterns_stay_visible():
    for pid in range(1, 80):
        ident = make_identity(3, pid, 0.0, 0.0)
        assert make_identity(3, pid, 0.0, 0.0) is ident  # one draw per person: every image uses the same values
        assert abs(ident.ir[UPPER] - ident.ir[UPPER2]) >= 0.2 - 2 * 0.02  # minus the fabric jitter at difficulty 0
        assert abs(ident.ir[LOWER] - ident.ir[LOWER2]) >= 0.2 - 2 * 0.02
        one = make_identity(3, pid, 0.0, 1.0)
        assert one.describe() == ident.describe() and np.array_equal(one.rgb, ident.rgb)  # only infrared differs


@pytest.mark.parametrize("value", [-0.1, 1.5, "high"])
def test_bad_values_are_config_errors_naming_the_option(tmp_path, value):
    with pytest.raises(ConfigError, match="--ir-consistency"):
        generate("sysu", tmp_path / "x", ids=4, images_per_camera=1, ir_consistency=value, **TINY)
    assert not (tmp_path / "x").exists()


def test_cli_option(tmp_path):
    from vireid.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--layout", "regdb", "--out", str(out), "--ids", "2", "--size", "32x16", "--workers", "1",
                 "--ir-consistency", "0.25", "--no-progress"]) == 0
    assert read_manifest(out)["arguments"]["ir_consistency"] == 0.25
