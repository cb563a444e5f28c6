"""Builders of tiny fake dataset layouts (SYSU-MM01, RegDB, LLCM, folder) used by the dataset tests."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from PIL import Image

SYSU_CAMS = (1, 2, 3, 4, 5, 6)


@cache
def image_bytes(fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A 16x8 (H x W) image encoded once; every fake file is a copy of it."""
    img = Image.new(mode, (8, 16), color=(90, 140, 200) if mode == "RGB" else 128)
    for x in range(8):
        for y in range(16):
            img.putpixel((x, y), (x * 30, y * 15, 100) if mode == "RGB" else x * 30)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, fmt: str = "JPEG", mode: str = "RGB") -> Path:
    """Write a small valid image at `path`, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, mode))
    return path


def make_sysu(
    root: Path,
    train: Iterable[int] = (1, 2),
    val: Iterable[int] = (3,),
    test: Iterable[int] = (4, 5),
    n: int = 2,
    cams: Mapping[int, Iterable[int]] | None = None,
) -> Path:
    """SYSU-MM01 layout: cam1..cam6/<pid:04d>/<nnnn>.jpg and exp/*_id.txt; `cams` overrides a pid's cameras."""
    cams = dict(cams or {})
    for cam in SYSU_CAMS:
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    ids = {"train": list(train), "val": list(val), "test": list(test)}
    for pid in sorted(set().union(*map(set, ids.values()))):
        for cam in cams.get(pid, SYSU_CAMS):
            for i in range(1, n + 1):
                write_image(root / f"cam{cam}" / f"{pid:04d}" / f"{i:04d}.jpg")
    (root / "exp").mkdir(parents=True, exist_ok=True)
    for split, pids in ids.items():
        (root / "exp" / f"{split}_id.txt").write_text(",".join(map(str, pids)) + "\n")
    (root / "exp" / "available_id.txt").write_text(",".join(map(str, sorted(set().union(*map(set, ids.values()))))))
    (root / "exp" / "train_id.mat").write_bytes(b"MATLAB 5.0 MAT-file, not parsed")
    return root


def make_regdb(root: Path, train: Iterable[int] = (1, 2, 3), test: Iterable[int] = (4, 5), n: int = 2,
               trial: int = 1) -> Path:
    """RegDB layout: Visible|Thermal/<pid>/..._v|t_<serial>_<pid>.bmp and idx/*_<trial>.txt with re-indexed labels."""
    serial = 0
    for split, pids in (("train", list(train)), ("test", list(test))):
        lines = {"visible": [], "thermal": []}
        for label, pid in enumerate(pids):
            for _ in range(n):
                serial += 1
                for key, folder, letter in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
                    rel = f"{folder}/{pid}/male_front_{letter}_{serial:05d}_{pid}.bmp"
                    write_image(root / rel, fmt="BMP", mode="RGB" if key == "visible" else "L")
                    lines[key].append(f"{rel} {label}")
        (root / "idx").mkdir(parents=True, exist_ok=True)
        for key, rows in lines.items():
            (root / "idx" / f"{split}_{key}_{trial}.txt").write_text("\n".join(rows) + "\n")
    return root


def make_llcm(root: Path, train: Iterable[int] = (1, 2, 3), test: Iterable[int] = (4, 5), n: int = 2,
              vis_cams: Iterable[int] = (1, 2, 3), nir_cams: Iterable[int] = (1, 2, 4)) -> Path:
    """LLCM layout: idx/train_{vis,nir}.txt (images under {vis,nir}/<pid>/), idx/test_id.txt,
    test_{vis,nir}/camK/<pid>/."""
    (root / "idx").mkdir(parents=True, exist_ok=True)
    lines = {"vis": [], "nir": []}
    for label, pid in enumerate(train):
        for key, cams in (("vis", vis_cams), ("nir", nir_cams)):
            for cam in cams:
                for i in range(n):
                    rel = f"{key}/{pid:04d}/{pid:04d}_c{cam:02d}_s{100 + i}_f{i}_{key}.jpg"
                    write_image(root / rel)
                    lines[key].append(f"{rel} {label}")
    for key, rows in lines.items():
        (root / "idx" / f"train_{key}.txt").write_text("\n".join(rows) + "\n")
    test = list(test)
    (root / "idx" / "test_id.txt").write_text(",".join(map(str, test)))
    for pid in test:
        for key, cams in (("vis", vis_cams), ("nir", nir_cams)):
            for cam in cams:
                for i in range(n):
                    write_image(root / f"test_{key}" / f"cam{cam}" / f"{pid:04d}" /
                                f"{pid:04d}_c{cam:02d}_s{200 + i}_f{i}_{key}.jpg")
    return root


def make_folder(root: Path, ids: Iterable[int] = (1, 2, 3), n: int = 2,
                layout: Mapping[str, Iterable[str]] | None = None) -> Path:
    """Folder layout: <modality>/<camera>/<pid>/*.jpg; default visible/cam1, visible/cam2 and infrared/3."""
    layout = layout or {"visible": ("cam1", "cam2"), "infrared": ("3",)}
    for pid in ids:
        for modality, cams in layout.items():
            for cam in cams:
                for i in range(n):
                    write_image(root / modality / cam / str(pid) / f"{i:03d}.png", fmt="PNG")
    return root
