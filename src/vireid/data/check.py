"""`vireid data check`: parse a dataset, count it per split/modality/camera, optionally decode every image."""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..core import DatasetError, Modality, ModalityError, Sample

SPLITS = ("train", "val", "test")

#: SYSU-MM01 counts a correct reader gives on the unmodified dataset (protocols.md TV-11, section 2.3).
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


def sysu_protocol_sizes(test: Iterable[Sample], shots: int = 10) -> dict[str, int]:
    """Query, gallery and valid-query counts of the SYSU-MM01 protocols derived from the test images."""
    n: dict[tuple[int, int], int] = defaultdict(int)
    for s in test:
        n[(s.pid, s.camid)] += 1
    cams_of: dict[int, set[int]] = defaultdict(set)
    for pid, cam in n:
        cams_of[pid].add(cam)
    all_cams, indoor_cams = (1, 2, 4, 5), (1, 2)
    pairs_all = [k for k in n if k[1] in all_cams]
    pairs_indoor = [k for k in n if k[1] in indoor_cams]
    # cam3 queries skip every cam2 gallery image (same location), so only the other cameras can match.
    valid_all = valid_indoor = 0
    for (pid, cam), count in n.items():
        has = cams_of[pid]
        if cam == 3:
            valid_all += count if has & {1, 4, 5} else 0
            valid_indoor += count if 1 in has else 0
        elif cam == 6:
            valid_all += count if has & set(all_cams) else 0
            valid_indoor += count if has & set(indoor_cams) else 0
    q3 = sum(c for (_, cam), c in n.items() if cam == 3)
    q6 = sum(c for (_, cam), c in n.items() if cam == 6)
    return {
        "query": q3 + q6, "query_cam3": q3, "query_cam6": q6,
        "gallery_single_all": len(pairs_all), "gallery_single_indoor": len(pairs_indoor),
        "gallery_multi_all": sum(min(shots, n[k]) for k in pairs_all),
        "gallery_multi_indoor": sum(min(shots, n[k]) for k in pairs_indoor),
        "valid_queries_all": valid_all, "valid_queries_indoor": valid_indoor,
    }


def decode_all(paths: list[str], workers: int = 0, progress: bool = True) -> list[str]:
    """Decode every image (threads, tqdm bar); one problem line per file that cannot be decoded."""
    from tqdm import tqdm

    from .images import load_rgb

    def one(path: str) -> "str | None":
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


def check_dataset(
    name: str, root: "str | Path", decode: bool = False, *, workers: int = 0, progress: bool = True,
    **options: Any,
) -> CheckReport:
    """Load dataset `name` at `root`, count it, run the layout checks and (with decode) decode every image."""
    from .datasets.base import load_dataset

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
    report.warnings = [str(w.message) for w in caught]
    if ds is None:
        return report

    report.synthetic = bool(ds.info.get("synthetic"))
    report.checks = list(ds.info.get("checks", []))
    report.counts = {split: count_samples(getattr(ds, split)) for split in SPLITS}
    report.checks.append(f"training label map: {ds.num_classes} identities, labels 0..{ds.num_classes - 1} "
                         "shared by both modalities")
    if ds.info.get("layout") == "sysu":
        report.protocol = sysu_protocol_sizes(ds.test)
        if not report.synthetic and ds.info.get("train_split") == "train+val":
            _compare_sysu_official(report)
    if ds.info.get("manifest") is not None:
        _compare_manifest(report, ds.info["manifest"], root / "manifest.json")
    if decode:
        paths = sorted({s.path for split in SPLITS for s in getattr(ds, split)})
        bad = decode_all(paths, workers=workers, progress=progress)
        for line in bad:
            report.problem(line)
        report.checks.append(f"decoded {len(paths)} images as RGB: {len(paths) - len(bad)} ok, {len(bad)} failed")
    return report


def _compare_sysu_official(report: CheckReport) -> None:
    """Warn (not fail) when real SYSU-MM01 counts differ from the official ones: a modified copy (P27)."""
    train = report.counts["train"]
    found = {"train_ids": train["ids"], "train_visible": train["visible"]["images"],
             "train_infrared": train["infrared"]["images"], **report.protocol}
    diff = [f"{k} {found[k]} (official {v})" for k, v in SYSU_OFFICIAL.items() if found.get(k) != v]
    if diff:
        report.warnings.append("counts differ from the unmodified SYSU-MM01 (protocols TV-11): " + ", ".join(diff)
                               + "; fine for a subset, otherwise this copy is modified or incomplete")
    else:
        report.checks.append("counts equal the unmodified SYSU-MM01 (TV-11)")


def _compare_manifest(report: CheckReport, manifest: dict, path: Path) -> None:
    """Compare reader counts with the counts a synthetic set's manifest records; mismatches are problems."""
    expected = manifest_counts(manifest)
    if not expected:
        report.warnings.append(f"{path}: no counts this check understands; counts not compared")
        return
    found = flat_counts(report.counts)
    mismatched = 0
    for key, value in sorted(expected.items()):
        if key in found and found[key] != value:
            mismatched += 1
            report.problem(f"{path}: manifest records {key} = {value}, the reader found {found[key]}; "
                           "the set was modified or only partly written, regenerate it with --force")
    compared = sum(1 for k in expected if k in found)
    report.checks.append(f"counts match {path.name} ({compared} values compared, {mismatched} differ)")


def flat_counts(counts: dict[str, Any]) -> dict[str, int]:
    """Reader counts as flat keys: '<split>.ids', '<split>.images', '<split>.<modality>.images|ids'."""
    out: dict[str, int] = {}
    for split, c in counts.items():
        out[f"{split}.ids"] = c["ids"]
        out[f"{split}.images"] = c["images"]
        for mod in (Modality.VISIBLE.value, Modality.INFRARED.value):
            out[f"{split}.{mod}.ids"] = c[mod]["ids"]
            out[f"{split}.{mod}.images"] = c[mod]["images"]
    return out


def manifest_counts(manifest: dict) -> dict[str, int]:
    """The manifest's counts as flat keys matching flat_counts (empty when it records none)."""
    counts = manifest.get("counts")
    if not isinstance(counts, dict):
        return {}
    out: dict[str, int] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, int) and not isinstance(value, bool):
            out[prefix] = value

    walk("", counts)
    return out
