"""One cell of a bench: train (or resume) the method on the dataset with the seed, evaluate every protocol of
the dataset, and record the outcome, done or failed with its error, in BENCH/cells/<cell>.json.

The same function runs a cell in the driver's process, in a process of its own (`vireid bench ... --cell ID`,
what --isolate, --print-commands and torchrun use) and in a submitit job, so every launcher gives the same
numbers. A cell holds its lock while it works: two processes never write one cell's files at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..config import RESUME_MAY_CHANGE, Config, config_differences, config_from_dict, upgrade_saved_config
from ..core import ConfigError, TrainingError
from ..utils.atomic import clean_leftovers, file_lock
from .layout import CELL_DONE, CELL_FAILED, BenchDir
from .spec import SELECTIONS, BenchSpec, Cell, DatasetEntry

if TYPE_CHECKING:  # runs/ imports torch: a cell imports it when it runs, not when the command line loads
    from ..runs import RunDir

log = logging.getLogger(__name__)

RECORD_SCHEMA = "vireid.bench-cell/1"


def signature(spec: BenchSpec, cell: Cell, cfg: Config) -> dict[str, Any]:
    """What a finished cell must match to be skipped: the evaluation settings, the protocols and the epochs
    (more epochs resume the training; other evaluation settings re-evaluate the trained model)."""
    return {"feature": spec.eval.feature, "flip": spec.eval.flip, "rerank": spec.eval.rerank,
            "distance": spec.eval.distance, "epochs": cfg.train.epochs,
            "protocols": {p.name: {"protocol": p.protocol, "options": dict(p.options)} for p in cell.dataset.protocols}}


def is_done(record: dict[str, Any] | None, run: RunDir, sig: dict[str, Any]) -> bool:
    """Whether a cell's record says it finished under `sig` and its results are still there."""
    return bool(record and record.get("status") == CELL_DONE and record.get("signature") == _plain(sig)
                and run.results.is_file())


def cell_done(spec: BenchSpec, bench: BenchDir, cell: Cell, cfg: Config | None = None) -> bool:
    """Whether `bench` holds `cell` as done under the spec's current settings (`is_done` of its saved record and
    run against `signature`); `cfg` is the cell's config when the caller has it already."""
    cfg = spec.cell_config(cell, bench.path) if cfg is None else cfg
    return is_done(bench.read_record(cell.id), bench.run(cell.id), signature(spec, cell, cfg))


def _plain(obj: Any) -> Any:
    """`obj` as JSON reads it back (tuples become lists), so a signature compares equal to its saved copy."""
    return json.loads(json.dumps(obj))


def check_saved_config(run: RunDir, cfg: Config) -> None:
    """ConfigError when the cell's run was trained with a config other than the spec's now (beyond the keys a
    resumed run may change), or for more epochs than the spec asks: its numbers would not be this cell's."""
    if not run.config.is_file():
        return
    from ..config import load_yaml_with_bases

    try:
        saved = config_from_dict(upgrade_saved_config(load_yaml_with_bases(run.config)))
    except ConfigError as exc:
        raise ConfigError(f"{run.config}: cannot be read ({exc}); delete {run.path} to train the cell again") from None
    differ = config_differences(saved, cfg, allowed=RESUME_MAY_CHANGE)
    if not differ and saved.train.epochs > cfg.train.epochs and run.is_trained:
        differ = [f"train.epochs ({saved.train.epochs} -> {cfg.train.epochs}: fewer epochs than it trained)"]
    if differ:
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise ConfigError(f"{run.path} was trained with another config than the spec gives it now: "
                          f"{'; '.join(differ[:4])}{more}. Delete that folder to train the cell again, or run the "
                          "bench with another --out")


def prepare_dataset(spec: BenchSpec, bench: BenchDir, dataset: DatasetEntry, *, progress: bool = False) -> Path:
    """The dataset's root, synthesised first when its spec says how (under a lock: cells run in parallel by
    submitit share it; an identical set already there is left as is)."""
    root = spec.data_root(dataset, bench.path)
    synth = dict(dataset.data.get("synthesize") or {})
    if synth:
        from ..data.synthetic import synthesize

        root.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(root.parent / f".{root.name}.lock"):
            res = synthesize(out=root, progress=progress, **synth)
            if not res.up_to_date:
                log.info("[bench] synthesised %s: %d images in %.1f s", root, res.images, res.seconds)
    return root


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_cell(spec: BenchSpec, bench_dir: str | Path, cell_id: str, *, progress: bool = False) -> dict[str, Any]:
    """Run one cell unless its record says it is done; returns its record (status done or failed).

    A failure (any exception but KeyboardInterrupt) is recorded with its error and returned, not raised: the
    other cells go on."""
    from ..runs import git_revision

    bench = BenchDir(bench_dir)
    cell = spec.cell(cell_id)
    run = bench.run(cell.id)
    main = _is_main_rank()
    with bench.cell_lock(cell.id) if main else contextlib.nullcontext():
        if main:
            clean_leftovers(bench.record(cell.id))  # a record's temporary file left by a killed writer
        previous = bench.read_record(cell.id)
        start = time.perf_counter()
        base: dict[str, Any] = {
            "schema": RECORD_SCHEMA, "cell": cell.id, "method": cell.method.name, "method_name": cell.method.method,
            "dataset": cell.dataset.name, "seed": cell.seed, "run": str(run.path),
            "attempts": int((previous or {}).get("attempts", 0)) + 1}
        try:
            cfg = spec.cell_config(cell, bench.path)
            sig = signature(spec, cell, cfg)
            if is_done(previous, run, sig):
                return previous  # type: ignore[return-value]
            prepare_dataset(spec, bench, cell.dataset)
            check_saved_config(run, cfg)
            record = {**base, "status": CELL_DONE, "signature": sig, "error": None,
                      **_train_and_evaluate(spec, cell, cfg, run, progress)}
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failed cell is recorded, and the bench goes on with the others
            first = (str(exc).strip().splitlines() or [""])[0]
            record = {**base, "status": CELL_FAILED, "error": f"{type(exc).__name__}: {first}",
                      "traceback": traceback.format_exc()[-4000:]}
            log.error("[bench] %s failed: %s", cell.id, record["error"])
        _free_memory()
        record.update({"wall_seconds": time.perf_counter() - start, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       "host": platform.node(), "vireid": __version__, "git_revision": git_revision()})
        if main:
            bench.write_record(cell.id, record)
        return record


def _train_and_evaluate(spec: BenchSpec, cell: Cell, cfg: Config, run: RunDir, progress: bool) -> dict[str, Any]:
    """Train (resuming a run killed mid-way), evaluate every protocol of the dataset, write results.json."""
    from ..engine.evaluator import Evaluator
    from ..engine.results import merge_results
    from ..engine.trainer import Trainer
    from ..inference import load_trained, make_extractor
    from ..protocols import check_dataset_matches, protocol_from_samples
    from ..runs import training_time

    resume = "auto" if run.is_trained else None
    log.info("[bench] %s: %s", cell.id, "resuming its training" if resume else "training")
    trainer = Trainer(cfg, run, resume=resume, progress=None if progress else False)  # None: the config says
    trainer.fit()
    parameters = sum(int(p.numel()) for p in trainer.method.parameters())
    dataset, device, dist = trainer.dataset, trainer.device, trainer.dist
    which = "best" if cfg.train.select_best == "val" else "last"
    if not run.checkpoint(which).is_file():
        raise TrainingError(f"{run.path}: train.select_best={cfg.train.select_best} but {run.checkpoint(which)} was "
                            "not written; set train.eval_every=1 (validation each epoch) or train.select_best=none")
    _, method, checkpoint = load_trained(run.path, which, device=device)
    del trainer
    feature = method.inference_spec().feature if spec.eval.feature == "reported" else spec.eval.feature
    clock = {"seconds": 0.0, "images": 0}
    embed = make_extractor(method, cfg.data.height, cfg.data.width, device, flip=spec.eval.flip,
                           batch_size=cfg.eval.batch_size, dist=dist, kinds=(feature,))

    def extract(samples: list) -> dict:
        t = time.perf_counter()
        out = embed(samples)
        clock["seconds"] += time.perf_counter() - t
        clock["images"] += len(samples)
        return out

    log.info("[bench] %s: evaluating %s (%s feature)", cell.id, ", ".join(p.name for p in cell.dataset.protocols),
             feature)
    results, trials, keys = [], [], {}
    eval_start = time.perf_counter()
    for proto in cell.dataset.protocols:
        check_dataset_matches(proto.protocol, dataset, proto.options)
        these = list(protocol_from_samples(proto.protocol, dataset.test, root=dataset.root, **proto.options).trials())
        res = Evaluator(these, features=(feature,), distance=spec.eval.distance, rerank=spec.eval.rerank,
                        meta={"dataset": cfg.data.name, "protocol": proto.protocol, "options": dict(proto.options),
                              "flip": spec.eval.flip, "method": cfg.method.name, "checkpoint": str(checkpoint),
                              "bench_cell": cell.id}).run(extract)
        keys[proto.name] = next(iter(res.protocols))
        results.append(res)
        trials += these
    merged = merge_results(results)
    if dist.is_main:
        run.write_trial_lists(trials, results=merged.to_json_text())
    eval_seconds = time.perf_counter() - eval_start
    info = {
        "protocols": keys, "feature": feature, "checkpoint": which,
        "model_selection": SELECTIONS[cfg.train.select_best],
        "parameters": parameters, "input_size": [cfg.data.height, cfg.data.width], "epochs": cfg.train.epochs,
        "train_seconds": training_time(run.read_metrics())[1], "eval_seconds": eval_seconds,
        "ms_per_image": 1000.0 * clock["seconds"] / max(clock["images"], 1), "images_embedded": clock["images"],
        "device": str(device), "device_name": _device_name(device), "world_size": dist.world_size,
    }
    return info


def _free_memory() -> None:
    """Give back the finished cell's memory before the next cell in this process (GPU cache included)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return f"CPU {platform.machine()} ({torch.get_num_threads()} threads)"
