"""`vireid data check`: parse a dataset, count it per split/modality/camera, optionally decode every image."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import DatasetError, Modality, ModalityError, Sample

SPLITS = ("train", "val", "test")

#: SYSU-MM01 counts a correct reader gives on the unmodified dataset (docs/reference/protocols.md#tv-11, #sec-2-3).
SYSU_OFFICIAL = {
    "train_ids": 395, "train_visible": 22258, "train_infrared": 11909,
    "query": 3803, "query_cam3": 1883, "query_cam6": 1920,
    "gallery_single_all": 301, "gallery_single_indoor": 112,
    "gallery_multi_all": 3010, "gallery_multi_indoor": 1120,
    "valid_queries_all": 3803, "valid_queries_indoor": 2208,
}


@dataclass
class CheckReport:
    """The outcome of a dataset check: counts, checks run, warnings and one line per problem."""

    name: str
    root: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, int] = field(default_factory=dict)
    synthetic: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def problem(self, line: str) -> None:
        """Record a problem; the report is no longer OK."""
        self.problems.append(line)
        self.ok = False

    def format(self) -> str:
        """Human-readable report: counts table, protocol sizes, checks, warnings, problems, OK/FAILED."""
        opts = "".join(f" {k}={v}" for k, v in self.options.items())
        kind = "synthetic (SynthVI manifest.json)" if self.synthetic else "no manifest.json (real data)"
        out = [f"dataset {self.name} at {self.root}{opts}: {kind}"]
        if self.counts:
            out.append(f"{'split':<6} {'modality':<9} {'camera':<7} {'ids':>6} {'images':>8}")
            for split in SPLITS:
                c = self.counts.get(split)
                if not c or not c["images"]:
                    continue
                for mod in (Modality.VISIBLE.value, Modality.INFRARED.value):
                    m = c[mod]
                    for cam, cc in sorted(m["cams"].items()):
                        out.append(f"{split:<6} {mod:<9} {'cam' + str(cam):<7} {cc['ids']:>6} {cc['images']:>8}")
                    out.append(f"{split:<6} {mod:<9} {'all':<7} {m['ids']:>6} {m['images']:>8}")
                out.append(f"{split:<6} {'both':<9} {'all':<7} {c['ids']:>6} {c['images']:>8}")
        if self.protocol:
            p = self.protocol
            out += [
                "SYSU-MM01 test protocol sizes:",
                f"  query (IR cams 3+6): {p['query']} ({p['query_cam3']} / {p['query_cam6']})",
                f"  single-shot gallery: all-search {p['gallery_single_all']}, indoor {p['gallery_single_indoor']}",
                f"  multi-shot gallery (10 shots): all-search {p['gallery_multi_all']}, "
                f"indoor {p['gallery_multi_indoor']}",
                f"  valid queries: all-search {p['valid_queries_all']}, indoor {p['valid_queries_indoor']}",
            ]
        if self.checks:
            out.append("checks:")
            out += [f"  - {c}" for c in self.checks]
        if self.warnings:
            out.append(f"warnings ({len(self.warnings)}):")
            out += [f"  {w}" for w in self.warnings]
        if self.problems:
            out.append(f"FAILED: {len(self.problems)} problem(s):")
            out += list(self.problems)
        else:
            out.append("OK")
        return "\n".join(out)


def count_samples(samples: Iterable[Sample]) -> dict[str, Any]:
    """Identities and images per modality and camera: {ids, images, visible: {ids, images, cams: {...}}, ...}."""
    samples = list(samples)
    out: dict[str, Any] = {"ids": len({s.pid for s in samples}), "images": len(samples)}
    for mod in Modality:
        sub = [s for s in samples if s.modality is mod]
        cams: dict[int, dict[str, int]] = {}
        for cam in sorted({s.camid for s in sub}):
            in_cam = [s for s in sub if s.camid == cam]
            cams[cam] = {"ids": len({s.pid for s in in_cam}), "images": len(in_cam)}
        out[mod.value] = {"ids": len({s.pid for s in sub}), "images": len(sub), "cams": cams}
    return out


def decode_all(paths: list[str], workers: int = 0, progress: bool = True) -> list[str]:
    """Decode every image (threads, tqdm bar); one problem line per file that cannot be decoded."""
    from tqdm import tqdm

    from .images import load_rgb

    def one(path: str) -> str | None:
        try:
            load_rgb(path)
        except DatasetError as exc:
            return str(exc)
        return None

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(one, paths), total=len(paths), desc="decoding", unit="img",
                            disable=not progress, leave=False))
    return [r for r in results if r]


def size_problems(paths: Iterable[str]) -> list[str]:
    """One line per image that is empty (0 bytes) or cannot be stat'ed; nothing is decoded."""
    from .images import image_size_problem

    return [line for line in map(image_size_problem, paths) if line]


def check_dataset(
    name: str, root: str | Path, decode: bool = False, *, workers: int = 0, progress: bool = True,
    **options: Any,
) -> CheckReport:
    """Load dataset `name` at `root`, count it, run the layout checks and (with decode) decode every image.

    Every image's size is read (a stat, no decoding), so an empty file is a problem without `decode`; the
    dangling symlinks a reader skips with a DanglingSymlinkWarning are problems here (a broken copy).
    """
    from .datasets import DanglingSymlinkWarning, load_dataset

    root = Path(root).expanduser()
    report = CheckReport(name=name, root=str(root), options=dict(options))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = load_dataset(name, root, **options)
        except (DatasetError, ModalityError) as exc:
            for line in getattr(exc, "problems", None) or [str(exc)]:
                report.problem(line)
            ds = None
    # A dangling symlink is a broken copy of the dataset: training skips it with a warning, the check fails.
    dangling = [str(w.message) for w in caught if issubclass(w.category, DanglingSymlinkWarning)]
    report.warnings = [str(w.message) for w in caught if not issubclass(w.category, DanglingSymlinkWarning)]
    for line in dangling:
        report.problem(line)
    if ds is None:
        return report
    report.checks.append(f"dangling symlinks among the images and folders: {len(dangling)}")

    report.synthetic = bool(ds.info.get("synthetic"))
    report.checks = list(ds.info.get("checks", [])) + report.checks
    report.counts = {split: count_samples(getattr(ds, split)) for split in SPLITS}
    report.checks.append(f"training label map: {ds.num_classes} identities, labels 0..{ds.num_classes - 1} "
                         "shared by both modalities")
    if ds.info.get("layout") == "sysu":
        from ..protocols.sysu import expected_sizes

        report.protocol = expected_sizes(ds.test)
        if not report.synthetic and ds.info.get("train_split") == "train+val":
            _compare_sysu_official(report)
    if ds.info.get("manifest") is not None:
        _compare_manifest(report, ds, root / "manifest.json")
    paths = sorted({s.path for split in SPLITS for s in getattr(ds, split)})
    sized = size_problems(paths)  # free (one stat per file): empty or vanished images without --decode
    for line in sized:
        report.problem(line)
    report.checks.append(f"image sizes read (stat) for {len(paths)} images: {len(sized)} empty or unreadable")
    if decode:
        bad = decode_all(paths, workers=workers, progress=progress)
        for line in bad:
            if line not in sized:  # the size check already reported it, in the same words
                report.problem(line)
        report.checks.append(f"decoded {len(paths)} images as RGB: {len(paths) - len(bad)} ok, {len(bad)} failed")
    return report


def _compare_sysu_official(report: CheckReport) -> None:
    """Warn (not fail) when real SYSU-MM01 counts differ from the official ones: a modified copy.

    See docs/reference/protocols.md#p27 and #tv-11.
    """
    train = report.counts["train"]
    found = {"train_ids": train["ids"], "train_visible": train["visible"]["images"],
             "train_infrared": train["infrared"]["images"], **report.protocol}
    diff = [f"{k} {found[k]} (official {v})" for k, v in SYSU_OFFICIAL.items() if found.get(k) != v]
    if diff:
        report.warnings.append("counts differ from the unmodified SYSU-MM01 "
                               "(TV-11, docs/reference/protocols.md#tv-11): " + ", ".join(diff)
                               + "; fine for a subset, otherwise this copy is modified or incomplete")
    else:
        report.checks.append("counts equal the unmodified SYSU-MM01 (TV-11, docs/reference/protocols.md#tv-11)")


def _compare_manifest(report: CheckReport, ds: Any, path: Path) -> None:
    """Compare reader counts with the counts a SynthVI manifest records; every mismatch is a problem."""
    expected = manifest_expectations(ds.info["manifest"], ds.info)
    if not expected:
        report.warnings.append(f"{path}: records no counts this check understands; counts not compared")
        return
    found = reader_counts(ds)
    mismatched = 0
    for key, value in expected.items():
        if found.get(key, 0) != value:
            mismatched += 1
            report.problem(f"{path}: manifest records {key} = {value}, the reader found {found.get(key, 0)}; "
                           "the set was modified or only partly written, regenerate it with --force")
    report.checks.append(f"counts match {path.name} ({len(expected)} values compared, {mismatched} differ)")


def _cam_key(name: str) -> int | None:
    """Camera number of a manifest camera name: sysu `cam3`, llcm `nir_cam4`, regdb `visible`/`thermal`."""
    if name in ("visible", "thermal"):  # RegDB's single aligned pair: reader cams 1 and 2
        return 1 if name == "visible" else 2
    m = re.search(r"cam(\d+)$", name)
    return int(m.group(1)) if m else None


def manifest_expectations(manifest: dict, info: dict) -> dict[str, int]:
    """Counts a SynthVI manifest implies for the reader's splits, as flat keys (see reader_counts)."""
    counts = manifest.get("counts")
    splits = counts.get("splits") if isinstance(counts, dict) else None
    if not isinstance(counts, dict) or not isinstance(splits, dict):
        return {}
    layout = info.get("layout")
    if layout == "sysu":
        groups = {"train": ["train", "val"] if info.get("train_split") == "train+val" else ["train"],
                  "test": ["test"]}
        if info.get("train_split") == "train":
            groups["val"] = ["val"]
    elif layout == "regdb":
        groups = {"train+test": ["all"]}  # the manifest counts persons, the trial splits them
    else:
        groups = {"train": ["train"], "test": ["test"]}
    out: dict[str, int] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = out.get(key, 0) + value

    for ours, theirs in groups.items():
        for split in theirs:
            entry = splits.get(split)
            if not isinstance(entry, dict):
                continue
            # Identities add up because the manifest's splits are disjoint.
            add(f"{ours}.identities", entry.get("identities"))
            add(f"{ours}.images", entry.get("images"))
            for mod, m in (entry.get("modalities") or {}).items():
                add(f"{ours}.{mod}.identities", m.get("identities"))
                add(f"{ours}.{mod}.images", m.get("images"))
            for name, c in (entry.get("cameras") or {}).items():
                cam = _cam_key(name)
                if cam is not None and c.get("modality") in ("visible", "infrared"):
                    add(f"{ours}.{c['modality']}.cam{cam}.identities", c.get("identities"))
                    add(f"{ours}.{c['modality']}.cam{cam}.images", c.get("images"))
    if layout == "sysu":
        add("test.indoor_identities", counts.get("test_indoor_identities"))
    if layout == "regdb":
        trial = (counts.get("trials") or {}).get(str(info.get("trial")))
        if isinstance(trial, dict):
            add("train.identities", trial.get("train_identities"))
            add("test.identities", trial.get("test_identities"))
    return out


def reader_counts(ds: Any) -> dict[str, int]:
    """The reader's counts under the keys manifest_expectations uses."""
    groups = {"train": ds.train, "val": ds.val, "test": ds.test, "train+test": ds.train + ds.test}
    out: dict[str, int] = {}
    for name, samples in groups.items():
        out[f"{name}.identities"] = len({s.pid for s in samples})
        out[f"{name}.images"] = len(samples)
        for s in samples:
            for key in (f"{name}.{s.modality.value}.images", f"{name}.{s.modality.value}.cam{s.camid}.images"):
                out[key] = out.get(key, 0) + 1
        for mod in Modality:
            sub = [s for s in samples if s.modality is mod]
            out[f"{name}.{mod.value}.identities"] = len({s.pid for s in sub})
            for cam in {s.camid for s in sub}:
                out[f"{name}.{mod.value}.cam{cam}.identities"] = len({s.pid for s in sub if s.camid == cam})
    out["test.indoor_identities"] = len({s.pid for s in ds.test if s.camid in (1, 2)
                                         and s.modality is Modality.VISIBLE})
    return out
