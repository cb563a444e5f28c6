"""A SynthVI person: fixed attributes drawn once per (seed, pid), and the colours of its materials."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .palette import HAIR_WEIGHTS, LOWER_WEIGHTS, N_PALETTE, UPPER_WEIGHTS, material_table

STREAM_IDENTITY = 21
STREAM_GARMENT_IR = 22  # infrared intensities drawn per garment (ir_consistency < 1); its own stream, so the
#                         identity's other draws are the same at every ir_consistency

# Material slots of the label map a person is rasterised into; slot 0 is the background.
BG, SKIN, HAIR, UPPER, UPPER2, LOWER, LOWER2, SHOES, BACKPACK, BAG, CAP, GLASSES, OCCLUDER = range(13)
N_SLOTS = 13

# The slots whose infrared intensity `ir_consistency` loosens: garments and accessories (skin and hair keep theirs).
GARMENT_SLOTS = (UPPER, UPPER2, LOWER, LOWER2, SHOES, BACKPACK, BAG, CAP)
IR_RANGE = (0.08, 0.92)  # the span of the palette's infrared ladder; drawn garment intensities use it too
MIN_PATTERN_IR_GAP = 0.2  # a pattern's two colours differ at least this much in infrared (its geometry survives)

UPPER_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "patch")
LOWER_KINDS = ("trousers", "shorts", "skirt")
LOWER_PATTERNS = ("solid", "hstripes", "checks")


@dataclass(frozen=True)
class Identity:
    """Everything that stays the same across a person's images, in both modalities."""

    pid: int
    gender: str  # "female" | "male" (RegDB file names)
    height: float  # fraction of the frame height the body fills when not jittered
    build: float  # width multiplier
    head: float  # head size multiplier
    hair_length: int  # 0 short, 1 medium, 2 long
    upper_pattern: str
    stripe_period: float  # in body heights
    long_sleeves: bool
    lower_kind: str
    lower_pattern: str
    backpack: bool
    bag: bool
    bag_side: int  # +1 / -1: which hip the shoulder bag hangs on
    cap: bool
    glasses: bool
    rgb: np.ndarray  # (N_SLOTS, 3) float32 visible colour of each slot
    ir: np.ndarray  # (N_SLOTS,) float32 infrared intensity of each slot

    def describe(self) -> dict:
        """The attributes as a JSON-friendly dict (used in docs and debugging)."""
        return {
            "pid": self.pid, "gender": self.gender, "height": round(self.height, 3),
            "build": round(self.build, 3), "head": round(self.head, 3), "hair_length": self.hair_length,
            "upper_pattern": self.upper_pattern, "long_sleeves": self.long_sleeves,
            "lower_kind": self.lower_kind, "lower_pattern": self.lower_pattern, "backpack": self.backpack,
            "bag": self.bag, "cap": self.cap, "glasses": self.glasses,
        }


def _pick(rng: np.random.Generator, weights: tuple[int, ...], exclude: int | None = None,
          ir: np.ndarray | None = None, min_ir_gap: float = 0.0) -> int:
    """A weighted palette draw; with `ir`, only colours whose IR intensity differs from `exclude`'s."""
    w = np.asarray(weights, dtype=np.float64)
    if exclude is not None:
        w[exclude] = 0.0
        if ir is not None:
            far = np.abs(ir - ir[exclude]) >= min_ir_gap
            if (w * far).sum() > 0:
                w = w * far
    return int(rng.choice(len(w), p=w / w.sum()))


def garment_ir(seed: int, pid: int, palette_ir: np.ndarray) -> np.ndarray:
    """(N_SLOTS,) infrared intensities of person `pid`'s garments drawn independently of their colours.

    `palette_ir` holds the slots' intensities under the fixed colour mapping: each pattern's second colour
    is drawn on the same side of the first as there, at least MIN_PATTERN_IR_GAP away, so any mix of the two
    keeps the pattern visible in infrared."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_GARMENT_IR, int(pid)]))
    lo, hi = IR_RANGE
    own = rng.uniform(lo, hi, size=N_SLOTS)
    for first, second in ((UPPER, UPPER2), (LOWER, LOWER2)):
        up = palette_ir[second] >= palette_ir[first]
        if up:
            a = rng.uniform(lo, hi - MIN_PATTERN_IR_GAP)
            b = rng.uniform(a + MIN_PATTERN_IR_GAP, hi)
        else:
            a = rng.uniform(lo + MIN_PATTERN_IR_GAP, hi)
            b = rng.uniform(lo, a - MIN_PATTERN_IR_GAP)
        own[first], own[second] = a, b
    return own.astype(np.float32)


@lru_cache(maxsize=4096)
def make_identity(seed: int, pid: int, difficulty: float, ir_consistency: float = 1.0) -> Identity:
    """Draw person `pid` of the dataset `seed`; independent of layout, camera and worker.

    `ir_consistency` c mixes each garment's infrared intensity: c * (its colour's dataset-wide intensity)
    + (1 - c) * (an intensity drawn for this person's garment); 1 (the default) draws nothing extra."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_IDENTITY, int(pid)]))
    mats = material_table(seed, difficulty)
    female = rng.random() < 0.45
    hair_length = int(rng.choice(3, p=(0.15, 0.25, 0.6) if female else (0.72, 0.2, 0.08)))
    lower_kind = str(rng.choice(LOWER_KINDS, p=(0.45, 0.2, 0.35) if female else (0.75, 0.25, 0.0)))
    upper = _pick(rng, UPPER_WEIGHTS)
    # A pattern's two colours also differ in infrared, so its geometry survives the modality change.
    upper2 = _pick(rng, UPPER_WEIGHTS, exclude=upper, ir=mats.palette_ir, min_ir_gap=0.2)
    lower = _pick(rng, LOWER_WEIGHTS)
    lower2 = _pick(rng, LOWER_WEIGHTS, exclude=lower, ir=mats.palette_ir, min_ir_gap=0.2)
    shoes = _pick(rng, (6, 2, 2, 5, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 1, 1, 0))
    backpack, bag = rng.random() < 0.3, rng.random() < 0.25
    cap, glasses = rng.random() < 0.18, rng.random() < 0.2
    acc = rng.choice(N_PALETTE, size=3)  # backpack, bag, cap colours
    skin, hair = int(rng.integers(len(mats.skin_rgb))), _pick(rng, HAIR_WEIGHTS)

    rgb = np.zeros((N_SLOTS, 3), np.float32)
    ir = np.zeros(N_SLOTS, np.float32)
    for slot, (col, cir) in {
        SKIN: (mats.skin_rgb[skin], mats.skin_ir[skin]),
        HAIR: (mats.hair_rgb[hair], mats.hair_ir[hair]),
        UPPER: (mats.palette_rgb[upper], mats.palette_ir[upper]),
        UPPER2: (mats.palette_rgb[upper2], mats.palette_ir[upper2]),
        LOWER: (mats.palette_rgb[lower], mats.palette_ir[lower]),
        LOWER2: (mats.palette_rgb[lower2], mats.palette_ir[lower2]),
        SHOES: (mats.palette_rgb[shoes], mats.palette_ir[shoes]),
        BACKPACK: (mats.palette_rgb[acc[0]], mats.palette_ir[acc[0]]),
        BAG: (mats.palette_rgb[acc[1]], mats.palette_ir[acc[1]]),
        CAP: (mats.palette_rgb[acc[2]], mats.palette_ir[acc[2]]),
        GLASSES: (np.full(3, 0.05, np.float32), np.float32(0.1)),
    }.items():
        rgb[slot], ir[slot] = col, cir
    c = float(ir_consistency)
    if c < 1.0:  # at 1 nothing is drawn: the sets of earlier versions stay byte-identical
        own = garment_ir(seed, pid, ir)
        for slot in GARMENT_SLOTS:
            ir[slot] = c * ir[slot] + (1.0 - c) * own[slot]
    # Fabric of the same dye still differs a little from person to person, more so in infrared.
    rgb[1:] *= rng.normal(1.0, 0.05, size=(N_SLOTS - 1, 1)).astype(np.float32)
    ir_jitter = 0.02 + 0.05 * float(difficulty)
    ir[1:] += rng.uniform(-ir_jitter, ir_jitter, size=N_SLOTS - 1).astype(np.float32)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    np.clip(ir, 0.0, 1.0, out=ir)
    rgb.setflags(write=False)
    ir.setflags(write=False)
    return Identity(
        pid=int(pid), gender="female" if female else "male",
        height=float(rng.uniform(0.84, 0.95)), build=float(rng.uniform(0.82, 1.2)),
        head=float(rng.uniform(0.88, 1.12)), hair_length=hair_length,
        upper_pattern=str(rng.choice(UPPER_PATTERNS, p=(0.38, 0.16, 0.14, 0.14, 0.18))),
        stripe_period=float(rng.uniform(0.045, 0.075)), long_sleeves=bool(rng.random() < 0.6),
        lower_kind=lower_kind, lower_pattern=str(rng.choice(LOWER_PATTERNS, p=(0.8, 0.07, 0.13))),
        backpack=bool(backpack), bag=bool(bag), bag_side=1 if rng.random() < 0.5 else -1,
        cap=bool(cap), glasses=bool(glasses), rgb=rgb, ir=ir,
    )
