"""Evaluate a trained method: load a run's checkpoint, build protocol trials, embed once, score, save."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import Config, config_from_dict
from ..core import EvalTrial, Modality, Sample
from ..methods import Method, build_method
from .checkpoint import find_checkpoint, load_model_state, read_checkpoint
from .distributed import DistInfo
from .extract import make_extractor


def validation_trial(val: Sequence[Sample]) -> EvalTrial:
    """Held-out identities: every infrared image queries every visible image (SYSU location rule)."""
    query = sorted(s for s in val if s.modality is Modality.INFRARED)
    gallery = sorted(s for s in val if s.modality is Modality.VISIBLE)
    return EvalTrial("val", query, gallery, rule="sysu_location", cmc_kind="identity")


def run_trials(method: Method, cfg: Config, trials: list[EvalTrial], device: torch.device, dist: DistInfo,
               *, features: Sequence[str] = ("bn",), progress: bool = False) -> dict[str, dict[str, float]]:
    """Rank-1/mAP/mINP of each feature kind, averaged over `trials` (validation during training; the Evaluator scores)."""
    from .evaluator import Evaluator
    from .results import mean_std

    extract = make_extractor(method, cfg.data.height, cfg.data.width, device, flip=cfg.eval.flip,
                             batch_size=cfg.eval.batch_size, dist=dist, progress=progress, kinds=features)
    results = Evaluator(trials, features=features, distance=cfg.eval.distance).run(extract)
    out: dict[str, dict[str, float]] = {}
    for kind in features:
        rows = [t.values for entry in results.protocols.values() for t in entry.features[kind].trials]
        mean = mean_std(rows)[0]
        out[kind] = {"rank1": float(mean["rank1"]), "mAP": float(mean["mAP"]), "mINP": float(mean["mINP"])}
    return out


def load_trained(run_dir: "str | Path", checkpoint: str = "auto", device: "str | torch.device" = "cpu",
                 overrides: Sequence[str] = ()) -> tuple[Config, Method, Path]:
    """Rebuild the method of a run and load its trained weights; refuses when no checkpoint exists."""
    from ..config import apply_overrides

    path = find_checkpoint(run_dir, checkpoint) if Path(run_dir).is_dir() else Path(run_dir)
    data = read_checkpoint(path)
    raw = apply_overrides(copy.deepcopy(data["config"]), list(overrides) + ["model.pretrained=none"])
    cfg = config_from_dict(raw)
    method = build_method(cfg, int(data["num_classes"]))
    load_model_state(method, data["model"], source=str(path), method=data["method"], expected_method=cfg.method.name)
    method.to(device).eval()
    return cfg, method, path


def protocol_trials(name: str, root: "str | Path", options: dict[str, Any]) -> tuple[Any, list[EvalTrial]]:
    """The protocol object and its trials."""
    from ..protocols import get_protocol

    protocol = get_protocol(name, root, **options)
    return protocol, list(protocol.trials())


def evaluate_method(method: Method, cfg: Config, *, protocol: str | None = None, options: dict | None = None,
                    root: "str | Path | None" = None, out_dir: "str | Path | None" = None,
                    device: "str | torch.device" = "cpu", dist: DistInfo | None = None, progress: bool = True,
                    flip: bool | None = None, rerank: bool | None = None, features: Sequence[str] | None = None,
                    meta: dict | None = None):
    """Evaluate `method` under a protocol (default: cfg.eval) and return the Evaluator's results."""
    from .evaluator import Evaluator

    name = protocol or cfg.eval.protocol
    opts = dict(cfg.eval.options if options is None and name == cfg.eval.protocol else (options or {}))
    flip = cfg.eval.flip if flip is None else flip
    rerank = cfg.eval.rerank if rerank is None else rerank
    kinds = tuple(features or cfg.eval.features)
    _, trials = protocol_trials(name, root or cfg.data.root, opts)
    extract = make_extractor(method, cfg.data.height, cfg.data.width, torch.device(device), flip=flip,
                             batch_size=cfg.eval.batch_size, dist=dist, progress=progress, kinds=kinds)
    evaluator = Evaluator(trials, features=kinds, distance=cfg.eval.distance, rerank=rerank,
                          meta={"dataset": cfg.data.name, "protocol": name, "options": opts, "flip": flip,
                                "method": cfg.method.name, **(meta or {})})
    return evaluator.run(extract, out_dir=out_dir)
