"""Evaluation protocols of SYSU-MM01, RegDB and LLCM: seeded, logged query/gallery trials.

`get_protocol(name, root, **options)` reads the dataset and returns a Protocol whose `trials()`
yields EvalTrials; `protocol_from_samples(name, samples, **options)` does the same over an
in-memory test sample list (a saved feature file, a test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..core import ConfigError, Sample
from .common import Protocol, trial_file, write_trial_lists
from .llcm import llcm_protocol, llcm_trials
from .regdb import regdb_protocol, regdb_trials
from .sysu import find_rand_perm, load_rand_perm, sysu_protocol, sysu_trials

ProtocolFactory = Callable[..., Protocol]

PROTOCOLS: dict[str, ProtocolFactory] = {"sysu": sysu_protocol, "regdb": regdb_protocol, "llcm": llcm_protocol}
# Options that belong to the dataset reader rather than to the protocol.
_READER_OPTIONS = {"regdb": ("trial",)}


def register_protocol(name: str, factory: ProtocolFactory, *, overwrite: bool = False) -> None:
    """Add a protocol: factory(test_samples, root=None, **options) -> Protocol."""
    if name in PROTOCOLS and not overwrite:
        raise ConfigError(f"protocol {name!r} is already registered; pass overwrite=True to replace it")
    PROTOCOLS[name] = factory


def protocol_from_samples(name: str, test_samples: Sequence[Sample], root: "str | Path | None" = None,
                          **options: Any) -> Protocol:
    """The protocol `name` over test samples held in memory (root only locates rand_perm_cam.mat)."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; available: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name](list(test_samples), root=root, **options)


def get_protocol(name: str, root: "str | Path", dataset_options: "dict | None" = None, **options: Any) -> Protocol:
    """Read dataset `name` at `root` and return its protocol with `options`.

    sysu: mode ("all"|"indoor"), shots (1|10), gallery_sampler ("agw"|"official"), trials (10),
    rand_perm_path; regdb: trial (1..10, also the split the reader loads), direction
    ("visible_to_thermal"|"thermal_to_visible"); llcm: direction ("ir_to_visible"|"visible_to_ir"|
    "visible_to_ir_transposed"), trials. `dataset_options` go to the reader unchanged.
    """
    from ..data.datasets import load_dataset

    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; available: {', '.join(sorted(PROTOCOLS))}")
    # Build once without samples first so option errors surface before the (slow) dataset scan.
    PROTOCOLS[name]([], root=root, **options)
    reader_opts = dict(dataset_options or {})
    for key in _READER_OPTIONS.get(name, ()):
        if key in options:
            reader_opts[key] = options[key]
    dataset = load_dataset(name, root, **reader_opts)
    return protocol_from_samples(name, dataset.test, root=dataset.root, **options)


__all__ = [
    "PROTOCOLS", "Protocol", "find_rand_perm", "get_protocol", "llcm_trials", "load_rand_perm",
    "protocol_from_samples", "regdb_trials", "register_protocol", "sysu_trials", "trial_file", "write_trial_lists",
]
