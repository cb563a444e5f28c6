"""Building and growing a GalleryIndex from image folders (the `folder` layout, or a flat folder of one modality)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import GalleryIndexError, Modality
from ..data.datasets.folder import walk_layout
from ..data.images import is_image_file
from .index import GalleryIndex, IndexItem, index_lock, read_meta


def _inside(path: Path, root: Path) -> Path:
    """`path` resolved; GalleryIndexError when it (e.g. a symlink) leads outside `root`."""
    full = path.resolve()
    if full != root and root not in full.parents:
        raise GalleryIndexError(f"{path} resolves to {full}, outside the image folder {root}; "
                          "refusing to index files outside the folder given (remove the link or copy the file in)")
    return full


def scan_images(images: str | Path, modality: Modality | str | None = None) -> list[IndexItem]:
    """Items of an image folder: `<root>/<modality>/<camera>/<pid>/*.jpg`, or every image under a flat folder.

    With `modality` the folder is flat: every image below it (sorted, recursively) is of that modality and
    has no camera or identity. Without it the `folder` dataset layout is required.
    """
    root = Path(images).expanduser()
    if not root.is_dir():
        raise GalleryIndexError(f"image folder {root} does not exist or is not a folder")
    root = root.resolve()
    items: list[IndexItem] = []
    if modality is not None:
        mod = Modality.parse(modality)
        for p in sorted(root.rglob("*")):
            if p.is_file() and is_image_file(p.name):
                items.append(IndexItem(path=str(_inside(p, root)), modality=mod))
    else:
        def refuse(level: str, path: Path) -> None:
            raise GalleryIndexError({
                "modality": f"unexpected folder {path}: without --modality the images must be laid out as "
                            f"{root}/<visible|infrared>/<camN>/<pid>/*.jpg; for a flat folder of one modality "
                            "pass --modality visible or --modality infrared",
                "camera": f"unexpected folder {path}: camera folders are named camN or N",
                "person": f"unexpected folder {path}: person folders are integer ids (e.g. 0007)",
            }[level])

        for mod, cam, pid, pid_dir in walk_layout(root, refuse):
            for p in sorted(pid_dir.iterdir()):
                if p.is_file() and is_image_file(p.name):
                    items.append(IndexItem(path=str(_inside(p, root)), modality=mod, camera=cam, pid=pid))
    if not items:
        how = "any image below it" if modality is not None else "<visible|infrared>/<camN>/<pid>/*.jpg"
        raise GalleryIndexError(f"no images found in {root} (expected {how})")
    return items


def extractor_for_index(index_dir: str | Path, run: str | Path | None = None, *, feature: str | None = None,
                        device: str = "cpu", batch_size: int = 64, checkpoint: str = "auto", backend: str = "torch",
                        threads: int | None = None, onnx_cache: str | Path | None = None) -> Any:
    """The FeatureExtractor that serves an index: the model recorded in its meta.json (checkpoint, feature, flip),
    or `run` with `feature` (default: its reported one) when given; `GalleryIndex.open` then checks they match."""
    from ..inference import FeatureExtractor

    meta = read_meta(index_dir)
    model = meta.get("model") or {}
    source = run or model.get("checkpoint")
    if not source:
        raise GalleryIndexError(
            f"no --run given and the index at {index_dir} records no checkpoint; pass --run RUN_DIR"
        )
    how: dict[str, Any] = {"backend": backend, "threads": threads, "onnx_cache": onnx_cache}
    if run:
        return FeatureExtractor(run, device=device, feature=feature, batch_size=batch_size, checkpoint=checkpoint,
                                **how)
    return FeatureExtractor(source, device=device, feature=meta.get("feature") or None, batch_size=batch_size,
                            checkpoint=checkpoint, flip=model.get("flip"), **how)


def embed_in_chunks(extractor: Any, items: list[IndexItem], chunk: int = 512,
                progress: Callable[[int], None] | None = None) -> Any:
    """(N, D) features of `items`, in chunks so memory stays bounded; a bad image names its file."""
    import numpy as np

    parts = []
    for j in range(0, len(items), chunk):
        part = items[j:j + chunk]
        parts.append(extractor([it.path for it in part], [it.modality for it in part]))
        if progress is not None:
            progress(len(part))
    return np.concatenate(parts) if parts else np.zeros((0, extractor.dim), dtype=np.float32)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise GalleryIndexError(f"--out {out} is a file; an index is a folder: choose a folder path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise GalleryIndexError(
            f"{out} exists and is not empty; choose another --out, or pass --overwrite to replace it"
        )


def build_index(extractor: Any, images: str | Path, out: str | Path, *, modality: Modality | str | None = None,
                kind: str = "flat", params: dict | None = None, overwrite: bool = False,
                progress: Callable[[int], None] | None = None) -> GalleryIndex:
    """Embed every image of `images` and save a new index at `out` (atomically, under the index's writer lock)."""
    out = Path(out).expanduser()
    _check_out(out, overwrite)
    items = scan_images(images, modality)
    index = GalleryIndex.for_extractor(extractor, kind=kind, params=params,
                                       roots=[str(Path(images).expanduser().resolve())])
    index.add(embed_in_chunks(extractor, items, progress=progress), items)
    with index_lock(out):
        _check_out(out, overwrite)  # again: another writer may have created it while this one embedded
        index.save(out)
    return index


def add_to_index(extractor: Any, index_dir: str | Path, images: str | Path, *,
                 modality: Modality | str | None = None, skip_existing: bool = True,
                 progress: Callable[[int], None] | None = None) -> tuple[GalleryIndex, int]:
    """Embed the images of `images` not yet indexed and append them; returns (index, number added).

    The images are embedded without holding the lock; then, under the index's writer lock, the index is read
    again (other writers may have added meanwhile), paths indexed by then are skipped, and the rest appended.
    """
    index = GalleryIndex.open(index_dir, extractor=extractor)
    known = {it.path for it in index.items} if skip_existing else set()
    items = [it for it in scan_images(images, modality) if it.path not in known]
    vectors = embed_in_chunks(extractor, items, progress=progress)
    root = str(Path(images).expanduser().resolve())
    with index_lock(index_dir):
        index = GalleryIndex.open(index_dir, extractor=extractor)
        known = {it.path for it in index.items} if skip_existing else set()
        keep = [i for i, it in enumerate(items) if it.path not in known]
        if root not in index.roots:
            index.roots.append(root)
        index.append(vectors[keep], [items[i] for i in keep])
    return index, len(keep)
