"""One figure of the report on its own (`vireid viz KIND SOURCE`): from a trained run, or from a saved `.npz` feature
file for the figures that need only features (cmc, ranklist and cameras with a protocol; tsne and gap without).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..core import ConfigError, VireidError
from ..runs import RunDir
from . import figures as F

log = logging.getLogger(__name__)

#: kind -> (file name stem, what it shows)
KINDS: dict[str, tuple[str, str]] = {
    "curves": ("training_curves", "training curves from metrics.jsonl"),
    "cmc": ("cmc", "CMC curves to rank 20, mean over the protocol's trials"),
    "ranklist": ("ranklist", "rank lists of the best, median or worst queries (--which)"),
    "tsne": ("tsne", "t-SNE of a sample of identities, colour = identity, marker = modality"),
    "gap": ("modality_gap", "same/different-identity distances within and across modalities, with AUCs"),
    "cameras": ("camera_rank1", "rank-1 per (query camera, gallery camera)"),
    "patterns": ("pattern_maps", "MPANet pattern maps over the input"),
    "correspondences": ("correspondences", "LbA correspondences and co-attention"),
    "translations": ("translations", "translated images of a generative method (JSIA-ReID, D2RL)"),
}
_NEEDS_METHOD = ("patterns", "correspondences", "translations")
_NEEDS_TRIALS = ("cmc", "ranklist", "cameras")


def default_out(kind: str, source: Path, which: str = "best") -> Path:
    """Where a figure goes without --out: <run>/report/figures/<name>.png, or beside a .npz as <stem>_<name>.png."""
    stem = KINDS[kind][0] + (f"_{which}" if kind == "ranklist" else "")
    if source.suffix == ".npz":
        return source.with_name(f"{source.stem}_{stem}.png")
    run = RunDir(source if source.is_dir() else source.parent.parent)
    return run.report / "figures" / f"{stem}.png"


def make_figure(kind: str, source: str | Path, *, out: str | Path | None = None, protocol: str | None = None,
                options: dict | None = None, checkpoint: str = "auto", device: str = "cpu",
                data_root: str | Path | None = None, feature: str | None = None, which: str = "best",
                seed: int = 0, num_ids: int = 10, progress: bool = True) -> Path:
    """Draw one figure `kind` (see `KINDS`) of `source` (a run directory, a checkpoint or a .npz) into `out`
    (.png, .svg or .pdf; default: `default_out`) and return its path."""
    if kind not in KINDS:
        raise ConfigError(f"unknown figure kind {kind!r}; choose one of {', '.join(KINDS)}")
    source = Path(source).expanduser()
    path = Path(out).expanduser() if out else default_out(kind, source, which)
    if kind == "curves":
        run = RunDir(source if source.is_dir() else source.parent.parent)
        records = run.read_metrics()
        if not records:
            raise VireidError(f"{run.metrics} is missing or empty: training curves come from a run trained by vireid "
                              "train; pass that run's directory")
        from ..viz.figures import plot_training_curves

        return plot_training_curves(records, path)
    if source.suffix == ".npz":
        return _from_npz(kind, source, path, protocol, options, feature, which, seed, num_ids)
    from ..config import options_dict
    from ..inference import load_trained
    from ..protocols import load_protocol_dataset
    from .build import prepare_inputs

    cfg, method, _ = load_trained(source, checkpoint, device)
    name = protocol or cfg.eval.protocol
    opts = dict(options or {})
    if protocol is None:
        opts = {**options_dict(cfg.eval.options), **opts}
    dataset = load_protocol_dataset(name, data_root or cfg.data.root, **opts)
    if kind in _NEEDS_METHOD:
        return _method_picture(kind, method, cfg, list(dataset.test), path, seed)
    inputs = prepare_inputs(method, cfg, dataset.test, protocol=name, options=opts, root=dataset.root,
                            device=device, progress=progress)
    if feature:
        _check_feature(feature, inputs.features)
        inputs.feature = feature
    return _from_inputs(kind, inputs, path, which, seed, num_ids, cfg.data.height, cfg.data.width)


def _check_feature(feature: str, features: dict) -> None:
    if feature not in features:
        raise ConfigError(f"--feature {feature!r} is not among the features ({', '.join(features)}); pass one of them")


def _from_inputs(kind: str, inputs: Any, path: Path, which: str, seed: int, num_ids: int, height: int = 64,
                 width: int = 32) -> Path:
    if kind == "cmc":
        return F.cmc_figure(inputs, path)
    if kind == "ranklist":
        if which not in F.GROUPS:
            raise ConfigError(f"--which must be one of {', '.join(F.GROUPS)}, got {which!r}")
        return F.ranklist_figure(inputs, path, which, height=height, width=width)[0]
    if kind == "tsne":
        return F.tsne_figure(inputs, path, num_ids=num_ids, seed=seed)[0]
    if kind == "gap":
        return F.gap_figure(inputs, path, seed=seed)[0]
    return F.camera_figure(inputs, path)[0]


def _method_picture(kind: str, method: Any, cfg: Any, test: list, path: Path, seed: int) -> Path:
    from ..viz.pictures import method_pictures

    h, w = int(cfg.data.height), int(cfg.data.width)
    if kind == "translations":
        out = F.translation_figure(method, test, h, w, path, seed=seed)
        if out is None:
            raise VireidError(f"method {cfg.method.name!r} makes no translated images (only generative methods "
                              "such as jsia and d2rl do)")
        return out
    if kind not in method_pictures(method):
        owner = "an MPANet with pattern maps (method.num_parts > 0)" if kind == "patterns" else "an LbA"
        raise VireidError(f"method {cfg.method.name!r} has no {kind} picture; it needs {owner} run")
    if kind == "patterns":
        return F.pattern_map_figure(method, test, h, w, path, seed=seed)
    return F.correspondence_figure(method, test, h, w, path, seed=seed)


def _from_npz(kind: str, source: Path, path: Path, protocol: str | None, options: dict | None,
              feature: str | None, which: str, seed: int, num_ids: int) -> Path:
    from .inputs import evaluate_features, load_npz_features

    if kind in _NEEDS_METHOD:
        raise ConfigError(f"figure {kind!r} needs the trained method; pass a run directory, not the feature file "
                          f"{source}")
    samples, feats = load_npz_features(source)
    feature = feature or ("bn" if "bn" in feats else next(iter(feats)))
    _check_feature(feature, feats)
    if kind in ("tsne", "gap"):
        from ..viz.analysis import modality_gap
        from ..viz.figures import plot_modality_gap, plot_tsne

        pids, mods = [s.pid for s in samples], [s.modality for s in samples]
        if kind == "gap":
            return plot_modality_gap(modality_gap(feats[feature], pids, mods, seed=seed), path)
        return plot_tsne(feats[feature], pids, mods, path, num_ids=num_ids, seed=seed)
    if not protocol:
        raise ConfigError(f"figure {kind!r} of a feature file needs --protocol (sysu, regdb or llcm) to build its "
                          "trials")
    from ..protocols import protocol_from_samples

    opts = dict(options or {})
    root = opts.pop("root", None)
    trials = list(protocol_from_samples(protocol, samples, root=root, **opts).trials())
    inputs = evaluate_features(samples, feats, trials, feature=feature, meta={"features_file": str(source)})
    return _from_inputs(kind, inputs, path, which, seed, num_ids)
