"""Evaluation protocols of SYSU-MM01, RegDB and LLCM: seeded, logged query/gallery trials.

Protocols are registered by name in `registry.PROTOCOLS` (`@register_protocol`). Each declares its
`Options` dataclass (the config section `eval.options`), the `dataset` reader it evaluates, and
`build(test_samples, root=None, **options) -> Protocol`. Protocols take samples: the caller reads
the dataset once and hands its test samples to `protocol_from_samples`. `get_protocol(name, root)`
is the convenience that reads the dataset first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core import ConfigError, Sample
from ..registry import PROTOCOLS, register_protocol
from .common import Protocol, trial_file
from .llcm import llcm_trials
from .regdb import regdb_trials
from .sysu import find_rand_perm, load_rand_perm, sysu_trials


def protocol_from_samples(name: str, test_samples: Sequence[Sample], root: str | Path | None = None,
                          **options: Any) -> Protocol:
    """The protocol `name` over test samples held in memory (root only locates rand_perm_cam.mat)."""
    return PROTOCOLS.get(name).build(list(test_samples), root=root, **options)


def reader_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The protocol options that also choose what the dataset reader loads (RegDB's `trial`: the split)."""
    return {k: options[k] for k in getattr(PROTOCOLS.get(name), "reader_options", ()) if k in options}


def check_dataset_matches(name: str, dataset: Any, options: dict[str, Any]) -> None:
    """ConfigError when a loaded dataset was read with other reader options than the protocol asks for."""
    for key, value in reader_options(name, options).items():
        loaded = dataset.info.get(key)
        if loaded is not None and str(loaded) != str(value):
            raise ConfigError(f"protocol {name!r} option {key}={value!r} asks for another {dataset.name} {key} "
                              f"than the dataset that was loaded ({key}={loaded!r}); set data.options.{key}={value} "
                              "or evaluate without passing the loaded dataset")


def load_protocol_dataset(name: str, root: str | Path, dataset_options: dict | None = None,
                          **options: Any) -> Any:
    """Read, once, the dataset protocol `name` evaluates at `root` (a ReIDDataset).

    Options are checked first, so a wrong option fails before the (slow) dataset scan; `dataset_options`
    go to the reader, together with the protocol options the reader also takes (RegDB's `trial`).
    """
    from ..data import datasets

    entry = PROTOCOLS.get(name)
    entry.build([], root=root, **options)  # option errors surface before the dataset scan
    return datasets.load_dataset(entry.dataset, root, **{**(dataset_options or {}), **reader_options(name, options)})


def get_protocol(name: str, root: str | Path, dataset_options: dict | None = None, **options: Any) -> Protocol:
    """The protocol `name` over the test samples of its dataset at `root` (see `load_protocol_dataset`)."""
    dataset = load_protocol_dataset(name, root, dataset_options, **options)
    return protocol_from_samples(name, dataset.test, root=dataset.root, **options)


__all__ = [
    "PROTOCOLS", "Protocol", "check_dataset_matches", "find_rand_perm", "get_protocol",
    "load_protocol_dataset",
    "llcm_trials", "load_rand_perm", "protocol_from_samples", "reader_options", "regdb_trials", "register_protocol",
    "sysu_trials", "trial_file",
]
