"""Rasterise a SynthVI person into one camera frame with vectorised numpy.

An image is made in two steps. `sample_scene` draws the geometry of a shot (viewpoint, walking
phase, box jitter, truncation, occluder, background offset); `render` paints it in one modality
(material colours or infrared intensities, camera illumination, blur, sensor noise). A visible and
an infrared frame of one instant (RegDB) share the scene and differ only in `render`.

Body coordinates: v runs from 0 at the top of the head to 1 at the soles, u across the body, both
in units of body height (so the figure is never distorted); the frame maps to (u, v) by the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...core import Modality
from .cameras import CameraParams, CameraSpec
from .identity import (
    BACKPACK,
    BAG,
    BG,
    CAP,
    GLASSES,
    HAIR,
    LOWER,
    LOWER2,
    OCCLUDER,
    SHOES,
    SKIN,
    UPPER,
    UPPER2,
    Identity,
)

STREAM_NOISE = 61


@dataclass(frozen=True)
class Occluder:
    """Something between the camera and the person: a pole, an object at the bottom, a passer-by."""

    kind: str  # "pole" | "bottom" | "side"
    a: float  # kind-specific geometry, fractions of the frame
    b: float
    rgb: tuple[float, float, float]
    ir: float


@dataclass(frozen=True)
class Scene:
    """The geometry of one shot, shared by every modality that sees it at the same instant."""

    view: str  # "front" | "back" | "left" | "right"
    phase: float  # walking phase in radians
    top: float  # y of the head top, pixels
    cx: float  # x of the body axis, pixels
    ph: float  # body height, pixels
    bg_y: int  # offset of the frame in the background plate
    bg_x: int
    occluder: Occluder | None


def sample_scene(ident: Identity, spec: CameraSpec, size: tuple[int, int], difficulty: float,
                 rng: np.random.Generator, plate_shape: tuple[int, int], view: str | None = None) -> Scene:
    """Draw viewpoint (unless given), pose, box jitter (shift/scale, sometimes truncation), occluder."""
    h, w = size
    d = float(difficulty)
    drawn = spec.views[int(rng.integers(len(spec.views)))]
    view = view or drawn
    phase = float(rng.uniform(0.0, 2.0 * np.pi))
    ph = h * ident.height * float(np.exp(rng.normal(0.0, 0.02 + 0.05 * d)))
    top = (h - ph) / 2.0 + rng.normal(0.0, (0.01 + 0.025 * d) * h)
    cx = w / 2.0 + rng.normal(0.0, (0.015 + 0.04 * d) * w)
    if rng.random() < 0.03 + 0.15 * d:  # a detector box that cuts part of the person off
        side = int(rng.integers(3))
        cut = rng.uniform(0.08, 0.2)
        if side == 0:
            top -= cut * ph
        elif side == 1:
            top += cut * ph
        else:
            cx += (1 if rng.random() < 0.5 else -1) * cut * 1.5 * w
    occ = None
    if rng.random() < 0.04 + 0.22 * d:
        kind = ("pole", "bottom", "side")[int(rng.integers(3))]
        if kind == "pole":
            a, b = rng.uniform(0.05, 0.95), rng.uniform(0.06, 0.14)  # centre x, half width
        elif kind == "bottom":
            a, b = rng.uniform(0.62, 0.82), 0.0  # top edge y
        else:
            a, b = (0.0 if rng.random() < 0.5 else 1.0), rng.uniform(0.18, 0.32)  # edge, radius x
        rgb_draw = rng.uniform(0.1, 0.85, 3)
        rgb = (float(rgb_draw[0]), float(rgb_draw[1]), float(rgb_draw[2]))
        occ = Occluder(kind, float(a), float(b), rgb, float(rng.uniform(0.1, 0.8)))
    bg_y = int(rng.integers(plate_shape[0] - h + 1))
    bg_x = int(rng.integers(plate_shape[1] - w + 1))
    return Scene(view, phase, float(top), float(cx), float(ph), bg_y, bg_x, occ)


def _window(vec: np.ndarray, lo: float, hi: float) -> slice:
    """Index range of an evenly spaced increasing vector that covers the values in [lo, hi]."""
    v0, v1 = vec.item(0), vec.item(1)
    step = v1 - v0
    return slice(max(0, math.ceil((lo - v0) / step)), min(vec.shape[0], math.floor((hi - v0) / step) + 1))


Window = tuple[slice, slice]


def _segment(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float],
             r: float) -> tuple[Window, np.ndarray, np.ndarray]:
    """Points within r of segment a-b, and their position t in [0, 1] along it, in the bounding window.

    Returns (window, mask, t) where mask and t have the window's shape (u is a row, v a column vector).
    """
    rows = _window(v, min(a[1], b[1]) - r, max(a[1], b[1]) + r)
    cols = _window(u.T, min(a[0], b[0]) - r, max(a[0], b[0]) + r)
    uu, vv = u[:, cols] - a[0], v[rows] - a[1]
    du, dv = b[0] - a[0], b[1] - a[1]
    t = np.clip((uu * du + vv * dv) * (1.0 / (du * du + dv * dv + 1e-9)), 0.0, 1.0)
    uu = uu - t * du
    vv = vv - t * dv
    return (rows, cols), uu * uu + vv * vv <= r * r, t


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Full-frame mask of the ellipse, computed in its bounding window only."""
    mask = np.zeros((v.shape[0], u.shape[1]), bool)
    rows, cols = _window(v, cv - rv, cv + rv), _window(u.T, cu - ru, cu + ru)
    mask[rows, cols] = ((u[:, cols] - cu) * (1.0 / ru)) ** 2 + ((v[rows] - cv) * (1.0 / rv)) ** 2 <= 1.0
    return mask


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def label_map(ident: Identity, scene: Scene, size: tuple[int, int]) -> np.ndarray:
    """The (H, W) map of material slots (intp, ready for indexing): painter's order, back to front."""
    h, w = size
    v = ((np.arange(h, dtype=np.float32) + 0.5 - scene.top) / scene.ph)[:, None]
    u = ((np.arange(w, dtype=np.float32) + 0.5 - scene.cx) / scene.ph)[None, :]
    lab = np.zeros((h, w), np.int8)
    b, view = ident.build, scene.view
    side = view in ("left", "right")
    f = 1.0 if view == "right" else -1.0  # facing direction in side views
    mirror = -1.0 if view == "front" else 1.0  # the person's left is on the image's right from the front
    sw = np.sin(scene.phase)
    rv, ru = 0.062 * ident.head, 0.047 * ident.head
    vc, v_sh, v_hip = rv, 2 * rv + 0.025, 0.52
    hw_sh, hw_hip = (0.072 * b, 0.066 * b) if side else (0.112 * b, 0.094 * b)

    def paint(mask: np.ndarray, slot: int) -> None:
        lab[mask] = slot

    # Legs (lower garment down to its hem, skin below) and shoes.
    hem = {"trousers": 0.95, "shorts": 0.69, "skirt": 0.70}[ident.lower_kind]
    for k in (-1.0, 1.0):
        if side:
            foot_u, hip_u = f * k * 0.12 * sw, 0.0
        else:
            foot_u, hip_u = k * (0.05 * b + 0.012 * sw), k * 0.045 * b
        foot_v = 0.965 - 0.02 * max(0.0, k * sw)
        win, leg, _ = _segment(u, v, (hip_u, v_hip), (foot_u, foot_v), 0.037 * b)
        sub = lab[win]  # a view: painting it paints the frame
        sub[leg] = SKIN
        sub[leg & (v[win[0]] <= hem)] = LOWER
        shoe_du = 0.025 * f if side else 0.0
        paint(_ellipse(u, v, foot_u + shoe_du, foot_v + 0.012, 0.05 * b if side else 0.038 * b, 0.024), SHOES)
    if ident.lower_kind == "skirt":
        flare = 0.11 * b if side else 0.15 * b
        frac = np.clip((v - (v_hip - 0.03)) / (0.70 - v_hip + 0.03), 0.0, 1.0)
        paint((np.abs(u) <= hw_hip + (flare - hw_hip) * frac) & (v >= v_hip - 0.03) & (v <= 0.70), LOWER)
    lower = lab == LOWER
    if ident.lower_pattern == "hstripes":
        paint(lower & (np.floor(v / ident.stripe_period) % 2 == 1), LOWER2)
    elif ident.lower_pattern == "checks":
        cell = ident.stripe_period * 1.2
        paint(lower & ((np.floor(v / cell) + np.floor(u / cell)) % 2 == 1), LOWER2)

    # Arms: in side views they swing fore and aft; the far arm is hidden behind the torso.
    def arm(k: float) -> None:
        if side:
            a, hand = (0.0, v_sh + 0.02), (f * k * 0.1 * sw, 0.49)
        else:
            a, hand = (k * (hw_sh - 0.012), v_sh + 0.02), (k * (hw_sh + 0.02 + 0.008 * sw), 0.49)
        win, m, t = _segment(u, v, a, hand, 0.027 * b)
        sub = lab[win]
        sub[m] = SKIN
        sub[m & (t <= (0.85 if ident.long_sleeves else 0.35))] = UPPER

    if side:
        arm(-1.0)
    if ident.bag and side and ident.bag_side != int(f):  # bag on the far hip
        paint(_box(u, v, -0.06, 0.06, 0.43, 0.56), BAG)
    if ident.backpack and side:
        back = -f * hw_sh
        paint(_box(u, v, min(back, back - f * 0.075), max(back, back - f * 0.075), 0.19, 0.44), BACKPACK)
    if ident.hair_length == 2 and view != "back":  # long hair falls behind the shoulders
        paint(_box(u, v, -ru * 1.1, ru * 1.1, vc, v_sh + 0.07) & ~(side & (u * f > 0)), HAIR)

    # Torso (a trapezoid from shoulders to hips) with the upper garment's pattern.
    frac = np.clip((v - v_sh) / (v_hip - v_sh), 0.0, 1.0)
    torso = (np.abs(u) <= hw_sh + (hw_hip - hw_sh) * frac) & (v >= v_sh - 0.01) & (v <= v_hip + 0.01)
    paint(torso, UPPER)
    win, neck, _ = _segment(u, v, (0.0, v_sh - 0.03), (0.0, v_sh), 0.022 * b)
    lab[win][neck] = SKIN
    if not side:
        arm(-1.0)
    arm(1.0)
    upper = lab == UPPER
    p = ident.stripe_period
    if ident.upper_pattern == "hstripes":
        paint(upper & (np.floor((v - v_sh) / p) % 2 == 1), UPPER2)
    elif ident.upper_pattern == "vstripes":
        paint(upper & (np.floor(u / (p * 0.8) + 0.5) % 2 == 1), UPPER2)
    elif ident.upper_pattern == "checks":
        paint(upper & ((np.floor((v - v_sh) / p) + np.floor(u / p + 0.5)) % 2 == 1), UPPER2)
    elif ident.upper_pattern == "patch" and view == "front":
        paint(_box(u, v, -0.05 * b, 0.05 * b, v_sh + 0.06, v_sh + 0.17), UPPER2)

    # Accessories in front of the torso.
    if ident.backpack:
        if view == "back":
            paint(_box(u, v, -0.085 * b, 0.085 * b, 0.19, 0.44), BACKPACK)
        elif view == "front":  # only the straps show
            for k in (-1.0, 1.0):
                paint(_box(u, v, k * 0.06 * b - 0.011, k * 0.06 * b + 0.011, v_sh, v_sh + 0.2), BACKPACK)
    if ident.bag:
        if side:
            if ident.bag_side == int(f):
                paint(_box(u, v, -0.05, 0.05, 0.43, 0.56), BAG)
        else:
            s = ident.bag_side * mirror
            win, strap, _ = _segment(u, v, (-s * hw_sh * 0.8, v_sh), (s * hw_hip, 0.45), 0.009)
            lab[win][strap] = BAG
            c = s * (hw_hip + 0.025)
            paint(_box(u, v, c - 0.035, c + 0.035, 0.43, 0.56), BAG)

    # Head, hair, cap and glasses.
    head = _ellipse(u, v, 0.0, vc, ru, rv)
    paint(head, SKIN)
    big = _ellipse(u, v, 0.0, vc, ru * 1.1, rv * 1.08)
    if view == "back":
        reach = {0: vc + 0.3 * rv, 1: vc + 0.9 * rv, 2: v_sh + 0.1}[ident.hair_length]
        paint(big & (v <= reach), HAIR)
        if ident.hair_length == 2:
            paint(_box(u, v, -ru * 1.1, ru * 1.1, vc, reach), HAIR)
    elif side:
        paint(big & ((v <= vc - 0.35 * rv) | ((u * f < 0) & (v <= vc + 0.5 * rv))), HAIR)
    else:
        paint(big & (v <= vc - 0.4 * rv), HAIR)
        if ident.hair_length >= 1:
            paint(big & (np.abs(u) >= ru * 0.72) & (v <= vc + 0.6 * rv), HAIR)
    if ident.cap:
        paint(_ellipse(u, v, 0.0, vc - 0.45 * rv, ru * 1.12, rv * 0.6) & (v <= vc - 0.3 * rv), CAP)
        if view == "front":
            paint(_box(u, v, -ru * 1.15, ru * 1.15, vc - 0.42 * rv, vc - 0.28 * rv), CAP)
        elif side:
            brim = (0.0, f * ru * 1.5)
            paint(_box(u, v, min(brim), max(brim), vc - 0.42 * rv, vc - 0.28 * rv), CAP)
    if ident.glasses and view != "back":
        band = _box(u, v, -ru * 0.85, ru * 0.85, vc - 0.2 * rv, vc + 0.05 * rv)
        paint(band & (u * f > 0) if side else band, GLASSES)

    occ = scene.occluder
    if occ is not None:
        yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
        xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w
        if occ.kind == "pole":
            m = (np.abs(xx - occ.a) <= occ.b) & (yy >= 0.0)
        elif occ.kind == "bottom":
            m = (yy >= occ.a) & (xx >= 0.0)
        else:
            m = ((xx - occ.a) / occ.b) ** 2 + ((yy - 0.55) / 0.45) ** 2 <= 1.0
        paint(m, OCCLUDER)
    return lab.astype(np.intp)


def _blur(img: np.ndarray) -> np.ndarray:
    """One pass of the separable [1, 2, 1] / 4 filter over the last two axes, edges replicated."""
    out = img.copy()
    out[..., 1:-1, :] = 0.25 * img[..., :-2, :] + 0.5 * img[..., 1:-1, :] + 0.25 * img[..., 2:, :]
    tmp = out.copy()
    out[..., 1:-1] = 0.25 * tmp[..., :-2] + 0.5 * tmp[..., 1:-1] + 0.25 * tmp[..., 2:]
    return out


def _shading(scene: Scene, size: tuple[int, int]) -> np.ndarray:
    """Round-body shading: darker towards the silhouette's sides and a little towards the feet."""
    h, w = size
    v = ((np.arange(h, dtype=np.float32) + 0.5 - scene.top) / scene.ph)[:, None]
    u = ((np.arange(w, dtype=np.float32) + 0.5 - scene.cx) / scene.ph)[None, :]
    return 1.0 - 0.28 * np.minimum((u / 0.17) ** 2, 1.0) - 0.08 * np.clip(v, 0.0, 1.0)


@lru_cache(maxsize=4)
def noise_bank(seed: int) -> np.ndarray:
    """2**20 standard normal float32 values; an image's sensor noise is a slice at a random offset.

    Slicing a per-dataset bank costs nothing, where drawing fresh normals per image was the
    generator's single most expensive step; the offset comes from the image's own stream.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_NOISE]))
    bank = rng.standard_normal(1 << 20, dtype=np.float32)
    bank.setflags(write=False)
    return bank


def render(ident: Identity, scene: Scene, spec: CameraSpec, params: CameraParams, plate: np.ndarray,
           size: tuple[int, int], difficulty: float, rng: np.random.Generator, seed: int = 0) -> np.ndarray:
    """Paint a scene in the camera's modality: uint8 (H, W, 3) visible or (H, W) infrared.

    pixel = clip(contrast * (gain * light * material * shading) + 0.45 * (1 - contrast) + noise).
    """
    h, w = size
    d = float(difficulty)
    lab = label_map(ident, scene, size)
    shade = _shading(scene, size)
    bg = plate[..., scene.bg_y:scene.bg_y + h, scene.bg_x:scene.bg_x + w]
    is_bg = lab == BG
    light = float(np.exp(rng.normal(0.0, 0.04 + 0.08 * d)))  # clouds, lamps, auto-exposure
    occ = scene.occluder
    if spec.modality is Modality.VISIBLE:
        lut = ident.rgb.copy()
        if occ is not None:
            lut[OCCLUDER] = occ.rgb
        # Channel-first while painting: every pass then runs over long contiguous rows.
        img = np.take(np.ascontiguousarray(lut.T), lab, axis=1)
        img *= shade
        np.copyto(img, bg, where=is_bg)
        gain = (params.gains * np.float32(params.brightness * light * params.contrast))[:, None, None]
    else:
        lut = ident.ir + np.float32(rng.normal(0.0, 0.02 + 0.04 * d))  # body temperature, IR lamp
        if spec.style == "thermal":  # body heat dominates, clothing only modulates it
            lut = 0.5 + 0.45 * lut
            lut[SKIN] = 0.95
        elif spec.style == "nir":  # the camera's own lamp lights the person more than the scene
            lut = 0.12 + 0.88 * lut
        if occ is not None:
            lut[OCCLUDER] = occ.ir
        img = np.take(lut.astype(np.float32), lab)
        img *= 0.55 + 0.45 * shade
        np.copyto(img, bg, where=is_bg)
        gain = np.float32(params.brightness * light * params.contrast)
    img *= gain
    img += np.float32(0.45 * (1.0 - params.contrast))
    for _ in range(params.base_blur + int(rng.random() < params.blur)):
        img = _blur(img)
    bank = noise_bank(seed)
    start = int(rng.integers(bank.size - img.size))
    img += bank[start:start + img.size].reshape(img.shape) * np.float32(params.noise)
    img *= 255.0
    img += 0.5
    np.clip(img, 0.0, 255.0, out=img)
    out = img.astype(np.uint8)
    return np.ascontiguousarray(out.transpose(1, 2, 0)) if out.ndim == 3 else out
