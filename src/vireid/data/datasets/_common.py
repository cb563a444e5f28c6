"""Helpers shared by the layout readers: problem collection, option checks, split and list files."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...config import check_option_names
from ...core import LayoutError, Modality, Sample
from ..images import IMAGE_EXTENSIONS, is_image_file


class Problems:
    """Collects layout problems so a reader can report all of them at once."""

    def __init__(self, layout: str, root: Path) -> None:
        self.layout = layout
        self.root = root
        self.items: list[str] = []

    def add(self, message: str) -> None:
        """Record one problem (one line: path, what was expected, what was found, the fix)."""
        self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        """Raise LayoutError with every recorded problem, if there is one."""
        if self.items:
            raise LayoutError(self.layout, self.root, self.items)


def check_options(layout: str, options: Mapping[str, Any], valid: Iterable[str] | type) -> None:
    """ConfigError naming every unknown reader option and listing the valid ones (`config.check_option_names`)."""
    check_option_names(f"{layout} reader", options, valid)


def require_root(layout: str, root: Path, expected: str) -> None:
    """DatasetError when the dataset root is missing or not a folder."""
    if not root.exists():
        raise LayoutError(layout, root, [
            f"dataset root {root} does not exist: expected {expected}; "
            "pass the folder that holds the extracted dataset"])
    if not root.is_dir():
        raise LayoutError(layout, root, [f"dataset root {root} is a file, not a folder: expected {expected}"])


class DanglingSymlinkWarning(UserWarning):
    """A symbolic link where an image or a dataset folder belongs points to nothing; the reader skips it.

    `vireid data check` counts each one as a problem (a broken copy of the dataset); training only warns.
    """


def points_above_itself(path: str | Path) -> bool:
    """True when the symlinked folder `path` resolves to the folder holding it or one above it (a cycle)."""
    target = os.path.realpath(path)
    holder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    try:
        return os.path.commonpath([target, holder]) == target
    except ValueError:  # different drives (Windows)
        return False


def entry_kind(path: Path, problems: Problems, image: bool = True) -> str:
    """What `path` is, following symlinks: "file", "dir", "other" or "skip"; broken links never raise.

    A symlink loop (links that point at each other, or a folder link to the folder holding it or one
    above it) and an entry that cannot be examined are recorded in `problems` and give "skip". A
    dangling symlink gives "skip" after a DanglingSymlinkWarning when `image` (the entry would be an
    image or a dataset folder), or "other" (a stray entry the caller ignores with its own warning).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            problems.add(symlink_loop_message(path))
            return "skip"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.islink(path):
            if not image:
                return "other"
            warnings.warn(dangling_symlink_message(path), DanglingSymlinkWarning, stacklevel=3)
            return "skip"
        problems.add(f"{path} cannot be examined ({exc.strerror or exc}): expected a readable image or folder; "
                     "check its permissions or remove it")
        return "skip"
    if stat.S_ISDIR(st.st_mode):
        if os.path.islink(path) and points_above_itself(path):
            problems.add(symlink_loop_message(path))
            return "skip"
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def symlink_loop_message(path: str | Path) -> str:
    """The layout problem of a symlink loop at `path` (one line: the path, what was found, the fix)."""
    try:
        target = f" -> {os.readlink(path)}"
    except OSError:
        target = ""
    return (f"symlink loop at {path}{target}: the link leads back to itself or to a folder that holds it; "
            "delete the link or point it at the real image or folder")


def dangling_symlink_message(path: str | Path, skipped: bool = True) -> str:
    """The warning (and `vireid data check` problem) of a symlink at `path` whose target is missing."""
    try:
        target = f" -> {os.readlink(path)}"
    except OSError:
        target = ""
    return (f"dangling symlink {path}{target}: its target does not exist"
            f"{', so it is skipped' if skipped else ''}; restore the target (a broken copy of the dataset?) "
            "or delete the link")


def list_images(folder: Path, problems: Problems) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; other entries are skipped with a warning.

    Symlinks are followed: a symlink loop is recorded in `problems`, a dangling image symlink is
    skipped with a DanglingSymlinkWarning (see `entry_kind`).
    """
    images: list[Path] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = folder / entry.name
        if entry.is_symlink():  # only links need a stat; plain entries are typed by the directory listing
            kind = entry_kind(path, problems, image=is_image_file(entry.name))
        else:
            kind = "dir" if entry.is_dir(follow_symlinks=False) else (
                "file" if entry.is_file(follow_symlinks=False) else "other")
        if kind == "skip":
            continue
        if kind == "file" and is_image_file(entry.name):
            images.append(path)
        else:
            what = "folder" if kind == "dir" else "non-image file"
            warnings.warn(
                f"ignoring {what} {path}: an identity folder should hold only images "
                f"({', '.join(IMAGE_EXTENSIONS)})",
                stacklevel=2,
            )
    return images


def listed_image_problem(loc: str, path: str) -> str | None:
    """The problem of an image an index file lists (`loc` is file:line), or None when it is a regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{loc}: {symlink_loop_message(path)}"
        if os.path.islink(path):
            return f"{loc}: {dangling_symlink_message(path, skipped=False)}"
        return f"{loc}: image {path} does not exist; check the dataset root or restore the file"
    if not stat.S_ISREG(st.st_mode):
        return f"{loc}: image {path} is not a regular file; point the index line at an image file"
    return None


def read_id_list(path: Path, problems: Problems) -> list[int]:
    """Integer ids from the first line of a comma-separated split file (whitespace, trailing commas ok)."""
    if not path.is_file():
        problems.add(f"split file {path} is missing: expected one line of comma-separated person ids")
        return []
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline()
    ids: list[int] = []
    bad: list[str] = []
    for token in first.split(","):
        token = token.strip()
        if not token:
            continue
        if token.isdigit():
            ids.append(int(token))
        else:
            bad.append(token)
    if bad:
        problems.add(f"split file {path}: expected comma-separated integer ids, found {', '.join(map(repr, bad[:5]))}")
    elif not ids:
        problems.add(f"split file {path} is empty: expected one line of comma-separated person ids")
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(ids) != len(set(ids)) else []
    if dupes:
        problems.add(f"split file {path}: ids listed more than once: {', '.join(map(str, dupes[:10]))}")
    return sorted(set(ids))


def read_list_file(path: Path, problems: Problems) -> list[tuple[int, str, int]]:
    """(line number, relative path, label) for each 'relative/path label' line of an index file."""
    if not path.is_file():
        problems.add(f"index file {path} is missing: expected lines '<relative image path> <integer label>'")
        return []
    rows: list[tuple[int, str, int]] = []
    malformed = 0
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not _is_int(parts[1]):
                problems.add(f"{path}:{n}: expected '<relative image path> <integer label>', found {line!r}")
                malformed += 1
                continue
            rows.append((n, parts[0], int(parts[1])))
    if not rows and not malformed:
        problems.add(f"index file {path} lists no images: expected lines '<relative image path> <integer label>'")
    return rows


def _is_int(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?\d+", text))


def check_label_consistency(
    where: str, rows: Iterable[tuple[str, int, int, int]], problems: Problems
) -> dict[int, int]:
    """Verify one label <-> pid mapping across an index split; rows are (file, line, pid, label)."""
    pid_to_label: dict[int, tuple[int, str]] = {}
    label_to_pid: dict[int, tuple[int, str]] = {}
    for file, line, pid, label in rows:
        loc = f"{file}:{line}"
        if pid in pid_to_label and pid_to_label[pid][0] != label:
            first_label, first_loc = pid_to_label[pid]
            problems.add(f"{loc}: person {pid} has label {label} but label {first_label} at {first_loc}; "
                         f"the {where} index files must give each person one label")
            continue
        if label in label_to_pid and label_to_pid[label][0] != pid:
            first_pid, first_loc = label_to_pid[label]
            problems.add(f"{loc}: label {label} is person {pid} but person {first_pid} at {first_loc}; "
                         f"the {where} index files must give each label one person")
            continue
        pid_to_label.setdefault(pid, (label, loc))
        label_to_pid.setdefault(label, (pid, loc))
    return {pid: lab for pid, (lab, _) in pid_to_label.items()}


def check_both_modalities(where: str, samples: Iterable[Sample], problems: Problems, hint: str) -> None:
    """Record one problem per identity that has images in only one modality."""
    seen: dict[int, set[Modality]] = {}
    for s in samples:
        seen.setdefault(s.pid, set()).add(s.modality)
    for pid in sorted(seen):
        if len(seen[pid]) == 1:
            (have,) = seen[pid]
            lack = Modality.INFRARED if have is Modality.VISIBLE else Modality.VISIBLE
            problems.add(f"{where}: person {pid} has {have.value} images but no {lack.value} images "
                         f"({hint}); every training identity needs both modalities, "
                         "add its images or remove it from the split")


def sort_samples(samples: Iterable[Sample]) -> list[Sample]:
    """Deterministic order: person, camera, file name (AGW's listing order per modality)."""
    return sorted(samples, key=lambda s: (s.pid, s.camid, os.path.basename(s.path), s.path))


def read_manifest(root: Path) -> dict | None:
    """The root's manifest.json as a dict, or None when there is none or it is not a JSON object."""
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring {path}: not valid JSON ({exc})", stacklevel=2)
        return None
    return data if isinstance(data, dict) else None


def is_synthetic(manifest: dict | None) -> bool:
    """True when the manifest was written by the SynthVI generator."""
    if not manifest:
        return False
    gen = manifest.get("generator")
    if isinstance(gen, dict):
        gen = gen.get("name")
    return isinstance(gen, str) and "synthvi" in gen.lower()


def split_summary(samples: Iterable[Sample]) -> list[int]:
    """Sorted distinct pids of `samples`."""
    return sorted({s.pid for s in samples})
