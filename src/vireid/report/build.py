"""`make_report(run)`: a trained run explains itself in one HTML page with its figures beside it.

The page (report.html) holds the run (method, config highlights, data, protocol, environment, training time,
parameters), training curves, results (mean ± std over trials; re-ranked numbers in their own table), CMC curves
to rank 20, rank lists of the best, median and worst queries, a t-SNE of some identities, the modality gap,
per-camera-pair rank-1 and the method's own pictures when it has some. Figures go to figures/ beside the page,
the numbers behind them to report.json; every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core import Sample
from ..runs import RunDir, training_time
from ..utils.atomic import write_json, write_text
from . import figures as F
from .html import Section, figure, heading, para, pre, render_page, table
from .inputs import ReportInputs, evaluate_features, extract_features

log = logging.getLogger(__name__)

FIGURES = "figures"
HTML_NAME = "report.html"
METRIC_COLUMNS = (("R1", "rank1"), ("R5", "rank5"), ("R10", "rank10"), ("R20", "rank20"), ("mAP", "mAP"),
                  ("mINP", "mINP"))


def make_report(run: str | Path, *, protocol: str | None = None, options: dict | None = None,
                out: str | Path | None = None, checkpoint: str = "auto", device: str = "cpu",
                data_root: str | Path | None = None, progress: bool = True, rerank: bool | None = None,
                flip: bool | None = None) -> Path:
    """Write the report of a trained run (a run directory or a checkpoint file) into `out` (default
    <run>/report/) and return the page's path.

    `protocol` and `options` default to the run's eval.protocol and eval.options (with `protocol` None, `options`
    change the run's options, as `vireid eval --option` does); the test set is read from `data_root` (default
    the run's data.root).

    Examples::

        make_report("runs/demo/run")                       # runs/demo/run/report/report.html
        make_report("runs/base", options={"mode": "indoor"}, out="reports/indoor")
    """
    from ..config import options_dict
    from ..inference import load_trained
    from ..protocols import load_protocol_dataset

    cfg, method, ck = load_trained(run, checkpoint, device)
    run_dir = RunDir(run) if Path(run).is_dir() else RunDir(ck.parent.parent)
    name = protocol or cfg.eval.protocol
    opts = dict(options or {})
    if protocol is None:
        opts = {**options_dict(cfg.eval.options), **opts}
    dataset = load_protocol_dataset(name, data_root or cfg.data.root, **opts)
    return build_report(method, cfg, dataset.test, out=Path(out) if out else run_dir.report, run=run_dir,
                        protocol=name, options=opts, root=dataset.root, device=device, progress=progress,
                        rerank=rerank, flip=flip, checkpoint=ck)


def prepare_inputs(method: Any, cfg: Any, test: Sequence[Sample], *, protocol: str, options: dict,
                   root: str | Path | None = None, device: str = "cpu", progress: bool = True,
                   rerank: bool | None = None, flip: bool | None = None) -> ReportInputs:
    """The protocol's trials over `test`, the method's features of their samples (extracted once) and the
    Evaluator's results: what every figure is drawn from."""
    from ..engine.evaluator import unique_samples
    from ..protocols import protocol_from_samples

    trials = list(protocol_from_samples(protocol, list(test), root=root, **options).trials())
    samples = unique_samples(trials)
    flip = cfg.eval.flip if flip is None else flip
    kinds = tuple(dict.fromkeys([*cfg.eval.features, method.inference_spec().feature]))
    log.info("[report] %d images of %d trial(s) of %s: extracting %s", len(samples), len(trials), protocol,
             ", ".join(kinds))
    feats = extract_features(method, samples, cfg.data.height, cfg.data.width, kinds=kinds, device=device,
                             flip=flip, batch_size=cfg.eval.batch_size, progress=progress)
    return evaluate_features(samples, feats, trials, feature=method.inference_spec().feature,
                             distance=cfg.eval.distance, rerank=cfg.eval.rerank if rerank is None else rerank,
                             meta={"protocol": protocol, "options": options, "flip": flip,
                                   "method": cfg.method.name, "dataset": cfg.data.name})


def build_report(method: Any, cfg: Any, test: Sequence[Sample], *, out: str | Path, run: RunDir | None = None,
                 protocol: str | None = None, options: dict | None = None, root: str | Path | None = None,
                 device: str = "cpu", progress: bool = True, rerank: bool | None = None, flip: bool | None = None,
                 title: str | None = None, intro: Sequence[Section] = (), html_name: str = HTML_NAME,
                 checkpoint: Path | None = None, seed: int = 0) -> Path:
    """Write the report of `method` (trained with `cfg`) evaluated on `test` into `out`: `html_name`, figures/
    and report.json. `run` supplies metrics.jsonl and env.json; `intro` sections follow the run summary."""
    from ..config import options_dict

    t_start = time.perf_counter()
    out = Path(out).expanduser()
    fig_dir = out / FIGURES
    name = protocol or cfg.eval.protocol
    opts = dict(options) if options is not None else options_dict(cfg.eval.options)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    inputs = prepare_inputs(method, cfg, test, protocol=name, options=opts, root=root, device=device,
                            progress=progress, rerank=rerank, flip=flip)
    timings["features_and_evaluation"] = time.perf_counter() - t0
    data: dict[str, Any] = {"schema": "vireid.report/1", "protocol": name, "options": opts,
                            "feature": inputs.feature, "distance": inputs.distance, "figures": {}}
    files: dict[str, str] = data["figures"]
    records = run.read_metrics() if run is not None else []
    height, width = int(cfg.data.height), int(cfg.data.width)

    def rel(path: Path) -> str:
        return path.relative_to(out).as_posix()

    sections: dict[str, Section] = {}
    stages: list[tuple[str, Callable[[], None]]] = []

    def curves() -> None:
        from ..viz.figures import plot_training_curves

        s = sections["training"] = Section("training", "Training curves")
        if not records:
            s.parts.append(para("No metrics.jsonl records: this run was not trained by vireid train here (a "
                                "converted checkpoint?), so there are no curves.", "note"))
            return
        path = plot_training_curves(records, fig_dir / "training_curves.png")
        files["training_curves"] = rel(path)
        s.parts += [para("Every scalar the trainer logged, against the training step: per-step values (thin) "
                         "with their epoch means (dots), learning rates, validation rank-1 and speed."),
                    figure(rel(path), "training curves")]

    def results() -> None:
        sections["results"] = _results_section(inputs)
        path = F.cmc_figure(inputs, fig_dir / "cmc.png")
        files["cmc"] = rel(path)
        sections["cmc"] = Section("cmc", "CMC curves", [
            para("Cumulative matching characteristic to rank 20, the mean over trials; re-ranked curves (if any) "
                 "are dashed."), figure(rel(path), "CMC curves")])

    def ranklists() -> None:
        trial = inputs.trials[0]
        s = sections["ranklists"] = Section("ranklists", "Rank lists", [para(
            f"Trial {trial.name}, feature {inputs.feature}: the three best, median and worst queries by average "
            "precision. Each row starts with the query (blue frame: identity, camera, modality, AP), then its "
            "top-10 gallery images in rank order after the protocol's filter: green frame = the query's identity, "
            "red = another identity. When the first true match is beyond rank 10, a last tile shows it with its "
            "rank.")])
        data["ranklists"] = {"trial": trial.name}
        for group in F.GROUPS:
            path, ranked = F.ranklist_figure(inputs, fig_dir / f"ranklist_{group}.png", group,
                                             height=height, width=width)
            files[f"ranklist_{group}"] = rel(path)
            data["ranklists"][group] = F.ranked_json(ranked, list(trial.query), list(trial.gallery))
            s.parts += [heading(f"{group.capitalize()} queries by AP"), figure(rel(path), f"{group} queries")]

    def embedding() -> None:
        from ..viz._figure import has_sklearn

        s = sections["embeddings"] = Section("embeddings", "Embeddings (t-SNE)")
        if not has_sklearn():
            s.parts.append(para("The t-SNE figure needs scikit-learn, which is not installed: pip install "
                                "'vireid[viz]'.", "note"))
            return
        path, ids = F.tsne_figure(inputs, fig_dir / "tsne.png", seed=seed)
        files["tsne"] = rel(path)
        data["tsne"] = {"identities": ids}
        s.parts += [para("A t-SNE of the test features of a seeded sample of identities: colour = identity, "
                         "circle = visible, triangle = infrared. When the two markers of one colour sit apart, the "
                         "features still carry the modality; the next figure measures that gap."),
                    figure(rel(path), "t-SNE")]

    def gap() -> None:
        path, g = F.gap_figure(inputs, fig_dir / "modality_gap.png", seed=seed)
        files["modality_gap"] = rel(path)
        data["modality_gap"] = summary = g.summary()
        rows = [[label, summary[key]["pairs"], _num(summary[key]["mean"])] for key, label in (
            ("within_same", "same identity, same modality"), ("within_different", "different identity, same modality"),
            ("cross_same", "same identity, across modalities"),
            ("cross_different", "different identity, across modalities"))]
        sections["modality-gap"] = Section("modality-gap", "Modality gap", [
            para("Cosine distances of test image pairs, same vs different identity, within one modality and across "
                 "visible and infrared. The AUC is the probability that a different-identity pair is farther apart "
                 "than a same-identity pair (1 = always, 0.5 = chance): "
                 f"within a modality {_num(summary['auc_within'], 3)}, across modalities "
                 f"{_num(summary['auc_cross'], 3)}."),
            figure(rel(path), "modality gap"),
            table(["pairs", "count", "mean distance"], rows, numeric_from=1)])

    def cameras() -> None:
        path, cams = F.camera_figure(inputs, fig_dir / "camera_rank1.png")
        files["camera_rank1"] = rel(path)
        data["camera_rank1"] = cams.to_json()
        sections["cameras"] = Section("cameras", "Rank-1 per camera pair", [
            para("Rank-1 of the queries of each camera when the gallery is cut to one camera, the protocol's rule "
                 "kept, added up over every trial (the number of queries with a true match is under each value). "
                 "Grey cells have no query with a true match there (the rule removes that pair)."),
            figure(rel(path), "rank-1 per camera pair")])

    def pictures() -> None:
        from ..viz.pictures import CORRESPONDENCES, PATTERN_MAPS, method_pictures

        kinds = method_pictures(method)
        parts: list[str] = []
        test_samples = list(inputs.samples)
        if PATTERN_MAPS in kinds:
            path = F.pattern_map_figure(method, test_samples, height, width, fig_dir / "pattern_maps.png",
                                        seed=seed)
            files["pattern_maps"] = rel(path)
            parts += [para("MPANet's pattern maps (PAM) over visible and infrared test images of the same "
                           "identities: each map is the spatial attention of one pattern (red = high)."),
                      figure(rel(path), "MPANet pattern maps")]
        if CORRESPONDENCES in kinds:
            path = F.correspondence_figure(method, test_samples, height, width, fig_dir / "correspondences.png",
                                           seed=seed)
            files["correspondences"] = rel(path)
            parts += [para("LbA's dense cross-modal correspondences (CMAlign at layer4): lines join the visible "
                           "positions matched most confidently to their most probable infrared position (colour = "
                           "matching probability); right, the co-attention over the visible image."),
                      figure(rel(path), "LbA correspondences")]
        made = F.translation_figure(method, test_samples, height, width, fig_dir / "translations.png", seed=seed)
        if made is not None:
            files["translations"] = rel(made)
            parts += [para("Each row is one person: the real visible image, its translation into the infrared "
                           "style, the real infrared image, its translation into the visible style, then the "
                           "reconstructions."), figure(rel(made), "translated images")]
        if parts:
            sections["method-pictures"] = Section("method-pictures", f"Method pictures ({cfg.method.name})", parts)

    stages += [("training curves", curves), ("results and CMC", results), ("rank lists", ranklists),
               ("t-SNE", embedding), ("modality gap", gap), ("camera pairs", cameras),
               ("method pictures", pictures)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(stages), desc="report", unit="part", leave=False, dynamic_ncols=True)
    for label, stage in stages:
        if bar is not None:
            bar.set_postfix_str(label)
        t0 = time.perf_counter()
        stage()
        timings[label] = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    summary = _run_section(method, cfg, run, inputs, name, opts, records, checkpoint)
    order = [summary, *intro] + [sections[k] for k in ("training", "results", "cmc", "ranklists", "embeddings",
                                                       "modality-gap", "cameras", "method-pictures") if k in sections]
    timings["total"] = time.perf_counter() - t_start
    data["timings"] = {k: round(v, 3) for k, v in timings.items()}
    data["sections"] = [s.id for s in order]
    write_json(out / "report.json", data)
    page = out / html_name
    variant = getattr(cfg.method, "variant", "")
    subtitle = (f"{cfg.method.name}{f' ({variant})' if variant else ''} on {cfg.data.name}, protocol {name} "
                f"{_options_text(opts)}; written by vireid in {timings['total']:.0f} s")
    write_text(page, render_page(title or f"vireid report: {run.path.name if run else cfg.method.name}", subtitle,
                                 order))
    log.info("[report] %s (%d figures, %.1f s)", page, len(files), timings["total"])
    return page


# ---------------------------------------------------------------------------------------------- sections


def _num(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _pct(mean: Any, std: Any) -> str:
    return "n/a" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def _options_text(opts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in opts.items()) or "(defaults)"


def _results_section(inputs: ReportInputs) -> Section:
    """Mean ± std over trials per protocol and feature; re-ranked numbers in their own table."""
    plain: list[list[Any]] = []
    reranked: list[list[Any]] = []
    params = None
    for key, entry in inputs.results.protocols.items():
        for fr in entry.features.values():
            mean, std = fr.mean(), fr.std()
            row = [key, fr.feature, len(fr.trials)] + [_pct(mean[k], std[k]) for _, k in METRIC_COLUMNS]
            (reranked if fr.rerank else plain).append(row)
            if fr.rerank:
                params = entry.info.get("rerank_params")
    head = ["protocol", "feature", "trials", *(h for h, _ in METRIC_COLUMNS)]
    parts = [para(f"Percent, mean ± sample standard deviation over the trials ({inputs.distance} distance); the "
                  f"reported feature is {inputs.feature}."), table(head, plain, numeric_from=2)]
    if reranked:
        p = params or {}
        parts += [para(f"With k-reciprocal re-ranking (k1={p.get('k1')}, k2={p.get('k2')}, lambda={p.get('lambda')}): "
                       "not comparable with the numbers above, reported separately as the papers do."),
                  table(head, reranked, numeric_from=2)]
    return Section("results", "Results", parts)


def _run_section(method: Any, cfg: Any, run: RunDir | None, inputs: ReportInputs, protocol: str, opts: dict,
                 records: Sequence[dict], checkpoint: Path | None) -> Section:
    """Method, config highlights, data, protocol, environment, training time and parameters."""
    m, d, model, optim, sampler, train = cfg.method, cfg.data, cfg.model, cfg.optim, cfg.sampler, cfg.train
    variant = getattr(m, "variant", "")
    epochs, seconds = training_time(records)
    params = sum(p.numel() for p in method.parameters())
    counts = F.modality_counts(inputs.samples)
    ids = len({s.pid for s in inputs.samples})
    rows: list[list[str]] = [
        ["method", f"{m.name}{f' ({variant})' if variant else ''}"],
        ["backbone", f"{model.arch}, pretrained {model.pretrained}, last stride {model.last_stride}, modality-specific "
                     f"{', '.join(model.modality_specific) or 'none'}, pooling {model.pooling}"],
        ["input", f"{d.height} x {d.width}"],
        ["sampler", f"{sampler.kind}: {sampler.num_ids} identities x {sampler.num_pos} visible + {sampler.num_pos} "
                    "infrared per batch"],
        ["optimizer", f"{optim.name}, lr {optim.lr:g}, weight decay {optim.weight_decay:g}, schedule {optim.schedule}"],
        ["epochs", f"{epochs if epochs else '?'} trained of {train.epochs} configured"],
        ["training time", _duration(seconds) if epochs else "unknown (no metrics.jsonl)"],
        ["parameters", f"{params / 1e6:.2f} M"],
        ["dataset", f"{d.name} at {d.root}"],
        ["test images", f"{counts['visible']} visible + {counts['infrared']} infrared of {ids} identities"],
        ["protocol", f"{protocol} {_options_text(opts)}; {len(inputs.trials)} trial(s), {inputs.distance} distance"],
    ]
    if run is not None:
        rows.append(["run directory", str(run.path)])
    if checkpoint is not None:
        rows.append(["checkpoint", str(checkpoint)])
    env = _read_json(run.env) if run is not None else {}
    if env:
        rows.append(["environment", ", ".join(f"{k} {env[k]}" for k in ("vireid", "python", "torch", "numpy", "cuda")
                                              if env.get(k) is not None) + f"; {env.get('platform', '?')}"])
        rows.append(["git revision", str(env.get("git_revision") or "unknown")])
    return Section("run", "The run", [table([], rows)])


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {s:02d} s"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def demo_section(table_text: str, seconds: float) -> Section:
    """The demo's comparison of the trained and the untrained network (its console table)."""
    return Section("demo", "Trained vs untrained", [
        para("The demo trained the network on the built-in synthetic SYSU-layout set (not the real SYSU-MM01) and "
             f"compared it with the same network at its initialisation; the whole demo took {seconds:.0f} s."),
        pre(table_text)])
