"""`generate`: write a SynthVI set in one benchmark layout, deterministically, in parallel, atomically.

Every image's random stream is SeedSequence([seed, stream, layout, pid, scene, index, part]), so the
bytes never depend on the number of workers or the order they finish in. The set is built in a
hidden sibling directory and renamed into place once `manifest.json` (written last) is in it, so an
interrupted run never leaves a mixed set; leftovers of interrupted runs are removed by the next run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core import ConfigError, DatasetError
from .cameras import LAYOUT_CODES, CameraParams, CameraSpec, background, camera_params
from .identity import make_identity
from .layouts import DEFAULTS, MIN_IDS, PLANNERS, Plan, Shot, camera_name, counts
from .render import Scene, render, sample_scene

GENERATOR = "SynthVI"
VERSION = "1.0"
MANIFEST = "manifest.json"
STREAM_IMAGE = 51
LAYOUTS = tuple(PLANNERS)


@dataclass(frozen=True)
class SynthResult:
    """What a call did: where the set is, how many images it holds, and whether it was rebuilt."""

    path: Path
    images: int
    seconds: float
    up_to_date: bool  # True: an identical set was already there and was left as is


def resolve_arguments(layout: str, ids: int | None, images_per_camera: int | None, size: Any,
                      difficulty: float, seed: int, ir_consistency: float = 1.0) -> dict[str, Any]:
    """Validate the generation arguments and fill layout defaults; raises ConfigError naming the fix.

    `ir_consistency` enters the arguments (and so manifest.json) only when it is not 1, so a set made with
    the default has the manifest, and the bytes, of the versions before the option existed."""
    if layout not in PLANNERS:
        raise ConfigError(f"unknown synthetic layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    d_ids, d_k = DEFAULTS[layout]
    ids = d_ids if ids is None else int(ids)
    k = d_k if images_per_camera is None else int(images_per_camera)
    if ids < MIN_IDS[layout]:
        raise ConfigError(f"--ids must be at least {MIN_IDS[layout]} for layout {layout!r} (got {ids})")
    if ids > 9999:
        raise ConfigError(f"--ids must be at most 9999 (4-digit person folders), got {ids}")
    if k < 1:
        raise ConfigError(f"--images-per-camera must be at least 1, got {k}")
    try:
        h, w = (int(x) for x in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be a pair (height, width) of integers, got {size!r}") from None
    if not (16 <= h <= 1024 and 8 <= w <= 1024):
        raise ConfigError(f"size {h}x{w} is out of range: height must be 16..1024 and width 8..1024 pixels")
    difficulty = float(difficulty)
    if not 0.0 <= difficulty <= 1.0:
        raise ConfigError(f"--difficulty must be in [0, 1], got {difficulty}")
    if int(seed) < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed}")
    try:
        consistency = float(ir_consistency)
    except (TypeError, ValueError):
        raise ConfigError(f"--ir-consistency must be a number in [0, 1], got {ir_consistency!r}") from None
    if not 0.0 <= consistency <= 1.0:
        raise ConfigError(f"--ir-consistency must be in [0, 1] (1: a garment's infrared intensity fixed by its colour, "
                          f"0: drawn per garment), got {ir_consistency}")
    args = {"layout": layout, "ids": ids, "images_per_camera": k, "size": [h, w],
            "difficulty": difficulty, "seed": int(seed)}
    if consistency != 1.0:
        args["ir_consistency"] = consistency
    return args


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The SynthVI manifest of `root`, or None if `root` holds no (valid) SynthVI manifest."""
    path = Path(root) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == GENERATOR else None


# ---------------------------------------------------------------------------------------------
# Rendering (runs in worker processes; everything it needs is in _STATE, set once per process).

_STATE: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    _STATE.clear()
    _STATE.update(state)
    _STATE["params"] = {}


def _params(spec: CameraSpec) -> CameraParams:
    cache = _STATE["params"]
    if spec not in cache:
        cache[spec] = camera_params(spec, _STATE["seed"], _STATE["difficulty"])
    return cache[spec]


def _shot_streams(shot: Shot, spec: CameraSpec, seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(geometry, sensor) generators of a shot: geometry is shared by shots of one instant."""
    base = [int(seed), STREAM_IMAGE, LAYOUT_CODES[spec.layout], shot.pid, shot.scene, shot.index]
    geometry = np.random.default_rng(np.random.SeedSequence(base + [0]))
    sensor = np.random.default_rng(np.random.SeedSequence(base + [1 + spec.modality.code]))
    return geometry, sensor


def shot_scene(shot: Shot, cameras: list[CameraSpec], seed: int, difficulty: float,
               size: tuple[int, int], ir_consistency: float = 1.0) -> Scene:
    """The geometry (view, pose, box, occluder) of a planned image; equal for a RegDB pair."""
    spec = cameras[shot.camera]
    h, w = size
    plate = background(seed, spec, h + h // 4, w + w // 2)
    geometry, _ = _shot_streams(shot, spec, seed)
    return sample_scene(make_identity(seed, shot.pid, difficulty, ir_consistency), spec, size, difficulty, geometry,
                        plate.shape[-2:], view=shot.view)


def render_shot(shot: Shot, cameras: list[CameraSpec], seed: int, difficulty: float,
                size: tuple[int, int], ir_consistency: float = 1.0) -> np.ndarray:
    """The pixels of one planned image: uint8 (H, W, C) with C = the camera's channels on disk."""
    spec = cameras[shot.camera]
    h, w = size
    ident = make_identity(seed, shot.pid, difficulty, ir_consistency)
    plate = background(seed, spec, h + h // 4, w + w // 2)
    geometry, sensor = _shot_streams(shot, spec, seed)
    scene = sample_scene(ident, spec, size, difficulty, geometry, plate.shape[-2:], view=shot.view)
    params = _params(spec) if _STATE else camera_params(spec, seed, difficulty)
    img = render(ident, scene, spec, params, plate, size, difficulty, sensor, seed)
    if img.ndim == 2 and spec.channels == 3:  # infrared stored as 3 equal channels
        img = np.repeat(img[..., None], 3, axis=2)
    return img


def _save(img: np.ndarray, path: Path, spec: CameraSpec, quality: int) -> None:
    from PIL import Image

    pil = Image.fromarray(img)
    if spec.fmt == "jpg":
        pil.save(path, format="JPEG", quality=quality)  # fixed settings: no optimize/progressive
    else:
        pil.save(path, format="BMP")


def _render_chunk(shots: list[Shot]) -> int:
    """Render and write a list of shots into the staging directory; returns how many were written."""
    root, cams = Path(_STATE["root"]), _STATE["cameras"]
    for shot in shots:
        spec = cams[shot.camera]
        img = render_shot(shot, cams, _STATE["seed"], _STATE["difficulty"], _STATE["size"],
                          _STATE.get("ir_consistency", 1.0))
        _save(img, root / shot.relpath, spec, _params(spec).jpeg_quality)
    return len(shots)


def _chunks(plan: Plan) -> list[list[Shot]]:
    """One chunk per person: a person's images are rendered together (identity cache stays warm)."""
    by_pid: dict[int, list[Shot]] = {}
    for shot in plan.shots:
        by_pid.setdefault(shot.pid, []).append(shot)
    return [by_pid[p] for p in sorted(by_pid)]


def _run(plan: Plan, state: dict[str, Any], workers: int, progress: bool) -> None:
    from tqdm import tqdm

    chunks = _chunks(plan)
    bar = tqdm(total=len(plan.shots), unit="img", desc=f"SynthVI {plan.layout}", disable=not progress,
               dynamic_ncols=True)
    try:
        if workers <= 1 or len(chunks) <= 1:
            _init_worker(state)
            try:
                for chunk in chunks:
                    bar.update(_render_chunk(chunk))
            finally:
                _STATE.clear()
            return
        methods = multiprocessing.get_all_start_methods()
        # fork starts in milliseconds; the workers only use numpy and Pillow, no threads of ours.
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        per_task = max(1, len(chunks) // (workers * 8))
        with ctx.Pool(min(workers, len(chunks)), initializer=_init_worker, initargs=(state,)) as pool:
            for n in pool.imap_unordered(_render_chunk, chunks, chunksize=per_task):
                bar.update(n)
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# Output directory handling.


def _check_target(out: Path, force: bool) -> dict[str, Any] | None:
    """Refuse unsafe targets; return the existing SynthVI manifest if `out` is a previous set."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is an existing file, not a directory; choose another --out")
    home, cwd = Path.home().resolve(), Path.cwd().resolve()
    real = out.resolve()
    if real == real.parent or real == home or real in (cwd, *cwd.parents):
        raise DatasetError(
            f"refusing to generate into {out}: it is the filesystem root, your home or the current directory "
            "(or one of its parents), which SynthVI would replace; choose a dedicated --out directory"
        )
    if not out.exists():
        return None
    manifest = read_manifest(out)
    if manifest is None and any(out.iterdir()) and not force:
        raise DatasetError(
            f"refusing to write into {out}: the directory is not empty and is not a SynthVI set "
            f"(no {MANIFEST} with generator {GENERATOR!r}); choose an empty or new --out, "
            "or pass --force to replace the directory and everything in it"
        )
    return manifest


def _clean_leftovers(out: Path) -> None:
    """Remove staging/old directories of interrupted runs into the same `out`."""
    for stale in out.parent.glob(f".{out.name}.synthvi-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` with renames; `out` is never a mix of two sets."""
    if out.exists():
        old = out.parent / f".{out.name}.synthvi-old-{os.getpid()}"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def build_manifest(args: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The manifest: generator, version, layout, arguments, cameras, split identities and counts."""
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "layout": plan.layout,
        "arguments": args,
        "cameras": [
            {"name": camera_name(c), "cam": c.cam, "modality": c.modality.value, "location": c.location,
             "outdoor": c.outdoor, "sensor": c.style, "format": c.fmt, "channels": c.channels}
            for c in plan.cameras
        ],
        "splits": {name: ids for name, ids in plan.splits.items()},
        "counts": counts(plan),
    }


def synthesize(layout: str, out: str | Path, *, ids: int | None = None, images_per_camera: int | None = None,
               size: tuple[int, int] = (128, 64), difficulty: float = 0.5, seed: int = 0, force: bool = False,
               workers: int | None = None, progress: bool = True, ir_consistency: float = 1.0) -> SynthResult:
    """Like `generate`, but returns a SynthResult (path, image count, time, whether it was up to date)."""
    start = time.perf_counter()
    args = resolve_arguments(layout, ids, images_per_camera, size, difficulty, seed, ir_consistency)
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    out = Path(out).expanduser()
    previous = _check_target(out, force)
    if previous is not None and not force and previous.get("version") == VERSION \
            and previous.get("arguments") == args:
        n = int(previous.get("counts", {}).get("images", 0))
        return SynthResult(out, n, time.perf_counter() - start, True)

    plan = PLANNERS[layout](args["ids"], args["images_per_camera"], args["seed"])
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.synthvi-", suffix=".tmp", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the finished set is an ordinary directory
    try:
        for d in sorted({str(Path(s.relpath).parent) for s in plan.shots} | {str(Path(t).parent) for t in plan.texts}):
            (staging / d).mkdir(parents=True, exist_ok=True)
        state = {"root": str(staging), "cameras": plan.cameras, "seed": args["seed"],
                 "difficulty": args["difficulty"], "size": tuple(args["size"]),
                 "ir_consistency": args.get("ir_consistency", 1.0)}
        _run(plan, state, int(workers or os.cpu_count() or 1), progress)
        for rel, text in plan.texts.items():
            (staging / rel).write_text(text)
        manifest = build_manifest(args, plan)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks completion
        _swap_into_place(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return SynthResult(out, len(plan.shots), time.perf_counter() - start, False)


def generate(layout: str, out: str | Path, *, ids: int | None = None, images_per_camera: int | None = None,
             size: tuple[int, int] = (128, 64), difficulty: float = 0.5, seed: int = 0, force: bool = False,
             workers: int | None = None, progress: bool = True, ir_consistency: float = 1.0) -> Path:
    """Write a SynthVI set in `layout` (sysu, regdb, llcm) at `out` and return its path.

    `ids`/`images_per_camera` default per layout (sysu 120/5, regdb 40/10, llcm 90/4); `size` is
    (height, width). `ir_consistency` in [0, 1]: 1 (default) fixes a garment's infrared intensity by its
    colour, 0 draws it per person's garment (docs/synthetic.md). The same arguments give byte-identical
    files for any `workers`. An identical set already at `out` is left as is (pass force=True to rebuild it).
    """
    return synthesize(layout, out, ids=ids, images_per_camera=images_per_camera, size=size,
                      difficulty=difficulty, seed=seed, force=force, workers=workers, progress=progress,
                      ir_consistency=ir_consistency).path
