"""Materials of SynthVI: visible colours and their dataset-specific infrared intensities.

A material is anything a person or a scene is made of (a garment dye, skin, hair). Its visible
colour is fixed; its infrared intensity is drawn once per dataset seed, only weakly correlated with
the visible luminance, so colour does not survive the modality change but intensity contrasts do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Random streams (first element after the seed) keep every kind of draw independent.
STREAM_MATERIAL = 11

# Garment / accessory dyes, sRGB in [0, 1]. Limited on purpose so several people share a colour.
PALETTE: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("black", (0.08, 0.08, 0.09)),
    ("charcoal", (0.26, 0.26, 0.28)),
    ("grey", (0.55, 0.55, 0.56)),
    ("white", (0.92, 0.92, 0.90)),
    ("navy", (0.10, 0.13, 0.36)),
    ("blue", (0.20, 0.36, 0.76)),
    ("lightblue", (0.56, 0.72, 0.92)),
    ("red", (0.78, 0.12, 0.12)),
    ("maroon", (0.45, 0.08, 0.13)),
    ("green", (0.15, 0.52, 0.22)),
    ("olive", (0.42, 0.43, 0.20)),
    ("yellow", (0.93, 0.82, 0.20)),
    ("orange", (0.92, 0.50, 0.14)),
    ("pink", (0.93, 0.60, 0.72)),
    ("purple", (0.46, 0.25, 0.62)),
    ("brown", (0.45, 0.30, 0.17)),
    ("beige", (0.84, 0.76, 0.60)),
    ("khaki", (0.63, 0.59, 0.42)),
    ("teal", (0.10, 0.50, 0.55)),
)
SKINS: tuple[tuple[float, float, float], ...] = (
    (0.96, 0.80, 0.69), (0.88, 0.68, 0.54), (0.76, 0.57, 0.42), (0.58, 0.40, 0.28), (0.38, 0.26, 0.18),
)
HAIRS: tuple[tuple[float, float, float], ...] = (
    (0.06, 0.05, 0.05), (0.25, 0.16, 0.10), (0.48, 0.33, 0.18), (0.80, 0.68, 0.42), (0.62, 0.62, 0.62),
)
# Relative frequencies: dark and neutral garments are the most common, as on real streets.
UPPER_WEIGHTS = (9, 5, 5, 7, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2)
LOWER_WEIGHTS = (12, 5, 4, 2, 6, 6, 2, 1, 1, 1, 2, 0, 0, 1, 0, 3, 3, 4, 0)
HAIR_WEIGHTS = (8, 5, 3, 2, 1)

N_PALETTE = len(PALETTE)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma: 0.299 R + 0.587 G + 0.114 B (last axis is RGB)."""
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def vi_correlation(difficulty: float) -> float:
    """Weight of visible luminance in the infrared intensity: 0.8 at difficulty 0, 0 at difficulty 1."""
    return 0.8 * (1.0 - float(difficulty))


@dataclass(frozen=True)
class MaterialTable:
    """Visible colours and infrared intensities of the palette, skins and hairs for one dataset."""

    palette_rgb: np.ndarray  # (P, 3) float32
    palette_ir: np.ndarray  # (P,)
    skin_rgb: np.ndarray
    skin_ir: np.ndarray
    hair_rgb: np.ndarray
    hair_ir: np.ndarray


def _ir_from(rgb: np.ndarray, rho: float, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """ir = rho * luma + (1 - rho) * U(lo, hi), clipped to [0.04, 0.96]."""
    own = rng.uniform(lo, hi, size=len(rgb))
    return np.clip(rho * luminance(rgb) + (1.0 - rho) * own, 0.04, 0.96).astype(np.float32)


@lru_cache(maxsize=16)
def material_table(seed: int, difficulty: float) -> MaterialTable:
    """The dataset's material table; each material's IR intensity comes from its own seeded draw."""
    rho = vi_correlation(difficulty)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_MATERIAL]))
    pal = np.array([c for _, c in PALETTE], dtype=np.float32)
    skin = np.array(SKINS, dtype=np.float32)
    hair = np.array(HAIRS, dtype=np.float32)
    # Spread the palette's IR intensities over the whole range (a shuffled ladder plus noise) so
    # infrared keeps enough distinct levels to tell garments apart, whatever the seed.
    ladder = (rng.permutation(N_PALETTE) + rng.uniform(0.15, 0.85, N_PALETTE)) / N_PALETTE
    pal_ir = np.clip(rho * luminance(pal) + (1.0 - rho) * (0.08 + 0.84 * ladder), 0.04, 0.96).astype(np.float32)
    # Skin reflects near-infrared strongly whatever its visible tone; hair varies.
    skin_ir = _ir_from(skin, 0.2, rng, 0.62, 0.82)
    hair_ir = _ir_from(hair, rho, rng, 0.08, 0.6)
    return MaterialTable(pal, pal_ir, skin, skin_ir, hair, hair_ir)
