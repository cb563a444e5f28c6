"""The bench spec: methods x datasets (each with its protocols) x seeds, read strictly from YAML (docs/bench.md).

A cell is one (method, dataset, seed): one training run, evaluated under every protocol of its dataset. Its
config is the method's config file, then the spec's `overrides`, then the method's `overrides`, then what the
bench owns (the seed, the dataset, the evaluation settings), so every method of a bench is evaluated alike.
Importing this module does not import torch (building a cell's config loads the method registry, which does).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import (
    Config,
    apply_overrides,
    build_options,
    config_from_dict,
    deep_merge,
    load_yaml_text,
    load_yaml_with_bases,
    parse_override,
    resolve_config_path,
)
from ..core import ConfigError
from ..registry import PROTOCOLS

#: Config keys a cell's config gets from the bench; an override of one of them is refused (eval.batch_size, which
#: changes no number, stays the method's).
BENCH_OWNED = ("train.seed", "data.name", "data.root", "data.options", "data.synthesize", "eval.protocol",
               "eval.options", "eval.features", "eval.flip", "eval.rerank", "eval.distance")
SELECTIONS = {"none": "last epoch", "val": "best val rank-1 (held-out val identities)"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SYNTH_KEYS = ("layout", "ids", "images_per_camera", "size", "difficulty", "seed", "ir_consistency")


@dataclass(frozen=True)
class MethodEntry:
    """A method of the bench: its label, config file and overrides."""

    name: str  # the leaderboard label (default: the config's method.name)
    config: str
    overrides: tuple[str, ...] = ()
    method: str = ""  # the registered method name (from the config), for its docs/methods page


@dataclass(frozen=True)
class ProtocolEntry:
    """One evaluation protocol of a dataset: a label, a registered protocol and its options."""

    name: str
    protocol: str
    options: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset of the bench: the config's data section (reader, root or how to synthesise it) and protocols."""

    name: str
    data: dict = field(hash=False, compare=False)
    protocols: tuple[ProtocolEntry, ...] = ()


@dataclass(frozen=True)
class EvalEntry:
    """How every cell is evaluated: the feature kind, flip fusion, re-ranking (its own rows) and distance."""

    feature: str = "reported"  # "reported": each method's own reported test-time feature; or a kind, e.g. "bn"
    flip: bool = False
    rerank: bool = False
    distance: str = "cosine"


@dataclass(frozen=True)
class StatsEntry:
    """The paired comparisons: bootstrap resamples, the generator's seed and the interval's confidence."""

    bootstrap: int = 10000
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True)
class LauncherEntry:
    """Where cells run: `kind` local (default) or submitit, GPUs per cell (>1: torchrun), local cells run side by
    side (`jobs`), submitit's parameters."""

    kind: str = "local"
    gpus_per_cell: int = 1
    jobs: int = 1
    submitit: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Cell:
    """One training run of the bench: a method on a dataset with a seed."""

    method: MethodEntry
    dataset: DatasetEntry
    seed: int

    @property
    def id(self) -> str:
        """`<method>/<dataset>/seed<N>`: the cell's name on the command line and its folder under runs/."""
        return f"{self.method.name}/{self.dataset.name}/seed{self.seed}"


@dataclass
class BenchSpec:
    """A parsed, validated bench spec (see `load_spec`)."""

    path: Path
    name: str
    methods: tuple[MethodEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    seeds: tuple[int, ...]
    overrides: tuple[str, ...] = ()
    eval: EvalEntry = field(default_factory=EvalEntry)
    stats: StatsEntry = field(default_factory=StatsEntry)
    launcher: LauncherEntry = field(default_factory=LauncherEntry)
    reported_numbers: str | None = None  # folder of docs/methods/*.md pages (default: the repository's)
    description: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    def cells(self) -> list[Cell]:
        """Every cell, in the order they run: seed, then method, then dataset (every method's first seed comes
        first, so a bench stopped part-way still compares every method)."""
        return [Cell(m, d, s) for s in self.seeds for m in self.methods for d in self.datasets]

    def cell(self, cell_id: str) -> Cell:
        """The cell named `cell_id`; ConfigError listing the valid names otherwise."""
        for c in self.cells():
            if c.id == cell_id:
                return c
        names = ", ".join(c.id for c in self.cells())
        raise ConfigError(f"{self.path}: no cell {cell_id!r}; the cells of this spec are: {names}")

    def select_cells(self, patterns: Sequence[str]) -> list[Cell]:
        """The cells whose id matches any of the shell-style `patterns` (`mpanet/*/seed2`, `*/synth-sysu/*`), in
        run order; ConfigError naming a pattern that matches no cell."""
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(c.id, pattern) for c in self.cells()):
                raise ConfigError(f"--only {pattern!r} matches no cell of {self.path}: cells are named "
                                  f"METHOD/DATASET/seedN (e.g. {self.cells()[0].id}); use * and ? as in a shell, "
                                  f"e.g. '*/*/seed{self.seeds[-1]}'")
        return [c for c in self.cells() if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]

    def protocols(self) -> list[tuple[DatasetEntry, ProtocolEntry]]:
        """Every (dataset, protocol) pair in spec order: the leaderboard's row groups."""
        return [(d, p) for d in self.datasets for p in d.protocols]

    def data_root(self, dataset: DatasetEntry, bench_dir: str | Path) -> Path:
        """Where the dataset is read: its `root`, else (a synthesised set) BENCH_DIR/data/<dataset name>."""
        root = dataset.data.get("root")
        if root:
            return Path(str(root)).expanduser()
        return Path(bench_dir) / "data" / dataset.name

    def cell_config(self, cell: Cell, bench_dir: str | Path) -> Config:
        """The resolved config of `cell` (method config, spec overrides, method overrides, then the bench's keys)."""
        where = f"{self.path}: methods[{self.methods.index(cell.method)}] ({cell.method.name})"
        try:
            raw = load_yaml_with_bases(resolve_config_path(cell.method.config))
            raw = apply_overrides(raw, [*self.overrides, *cell.method.overrides])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        data = {k: v for k, v in cell.dataset.data.items() if k != "root"}
        data["root"] = str(self.data_root(cell.dataset, bench_dir))
        data["options"] = dict(data.get("options") or {})
        data["synthesize"] = dict(data.get("synthesize") or {})
        raw["data"] = {**dict(raw.get("data") or {}), **data}  # options and synthesize replaced whole
        raw["train"] = {**dict(raw.get("train") or {}), "seed": int(cell.seed)}
        first = cell.dataset.protocols[0]
        raw["eval"] = deep_merge(dict(raw.get("eval") or {}), {
            "protocol": first.protocol, "options": {"_delete_": True, **first.options}, "flip": self.eval.flip,
            "rerank": self.eval.rerank, "distance": self.eval.distance})
        try:
            cfg = config_from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"{where}, dataset {cell.dataset.name!r}: {exc}") from None
        if cfg.train.select_best not in SELECTIONS:
            raise ConfigError(f"{where}: train.select_best={cfg.train.select_best!r}; a bench selects the model by "
                              f"{' or '.join(SELECTIONS)} (never on the test set): set train.select_best=none or val")
        return cfg


# ---------------------------------------------------------------------------------------------- loading

_TOP = ("name", "description", "methods", "datasets", "seeds", "overrides", "eval", "stats", "launcher",
        "reported_numbers")


def load_spec(path: str | Path) -> BenchSpec:
    """Read and validate a bench spec; ConfigError naming the file, the key, what was expected and the fix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"bench spec {path} not found; pass a YAML file such as benchmarks/tiny.yaml")
    try:
        raw = load_yaml_text(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a bench spec is a YAML mapping with methods, datasets and seeds; got "
                          f"{type(raw).__name__}")
    _unknown(path, "", raw, _TOP)
    for key in ("methods", "datasets", "seeds"):
        if not raw.get(key):
            raise ConfigError(f"{path}: '{key}' is missing or empty; a bench needs methods, datasets and seeds "
                              "(see benchmarks/tiny.yaml)")
    spec = BenchSpec(
        path=path, name=_name(path, "name", raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        methods=tuple(_method(path, i, m) for i, m in enumerate(_list(path, "methods", raw["methods"]))),
        datasets=tuple(_dataset(path, i, d) for i, d in enumerate(_list(path, "datasets", raw["datasets"]))),
        seeds=_seeds(path, raw["seeds"]),
        overrides=_overrides(path, "overrides", raw.get("overrides")),
        eval=_section(path, "eval", raw.get("eval"), EvalEntry),
        stats=_section(path, "stats", raw.get("stats"), StatsEntry),
        launcher=_section(path, "launcher", raw.get("launcher"), LauncherEntry),
        reported_numbers=str(raw["reported_numbers"]) if raw.get("reported_numbers") else None,
        raw=raw,
    )
    _check(spec)
    return spec


def _check(spec: BenchSpec) -> None:
    path = spec.path
    for what, names in (("methods", [m.name for m in spec.methods]), ("datasets", [d.name for d in spec.datasets]),
                        ("protocols", [p.name for _, p in spec.protocols()])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{path}: {what} named {', '.join(map(repr, dup))} more than once; give each its own "
                              "'name:' (the leaderboard's labels)")
    if spec.eval.distance not in ("cosine", "euclidean"):
        raise ConfigError(f"{path}: eval.distance must be cosine or euclidean, got {spec.eval.distance!r}")
    if spec.stats.bootstrap < 100:
        raise ConfigError(f"{path}: stats.bootstrap must be at least 100 resamples, got {spec.stats.bootstrap}")
    if not 0.5 <= spec.stats.confidence < 1.0:
        raise ConfigError(f"{path}: stats.confidence must be in [0.5, 1), e.g. 0.95; got {spec.stats.confidence}")
    if spec.launcher.kind not in ("local", "submitit"):
        raise ConfigError(f"{path}: launcher.kind must be local or submitit, got {spec.launcher.kind!r}")
    if spec.launcher.gpus_per_cell < 0:
        raise ConfigError(f"{path}: launcher.gpus_per_cell must be >= 0, got {spec.launcher.gpus_per_cell}")
    if spec.launcher.jobs < 1:
        raise ConfigError(f"{path}: launcher.jobs must be >= 1 (how many cells run side by side), got "
                          f"{spec.launcher.jobs}")


def _unknown(path: Path, where: str, raw: Mapping, valid: Sequence[str]) -> None:
    bad = sorted(set(map(str, raw)) - set(valid))
    if bad:
        at = f"{where}: " if where else ""
        raise ConfigError(f"{path}: {at}unknown key(s) {', '.join(map(repr, bad))}; valid keys here: "
                          f"{', '.join(valid)}")


def _list(path: Path, key: str, value: Any) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
    return value


def _name(path: Path, key: str, value: Any) -> str:
    text = str(value)
    if not _NAME.fullmatch(text):
        raise ConfigError(f"{path}: {key} {text!r} must be letters, digits, '.', '_' or '-' (it names folders); "
                          "rename it")
    return text


def _seeds(path: Path, value: Any) -> tuple[int, ...]:
    seeds = _list(path, "seeds", value)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: seeds must be non-negative integers, e.g. [0, 1, 2]; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds {seeds!r} repeat a seed; list each seed once")
    return tuple(seeds)


def _overrides(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {where} must be a list of KEY=VALUE strings, e.g. [train.epochs=5]; got {value!r}")
    for text in value:
        keys, _ = parse_override(text)
        key = ".".join(keys)
        for owned in BENCH_OWNED:
            if key == owned or key.startswith(owned + ".") or owned.startswith(key + "."):
                raise ConfigError(f"{path}: {where}: {text!r} sets {key}, which the bench sets for every cell "
                                  "(seeds:, datasets:, eval:); change it there instead")
    return tuple(value)


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "bool": bool, "int": int, "float": (int, float),
                                                    "dict": dict}


def _section(path: Path, key: str, value: Any, cls: type) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be a mapping, got {value!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    _unknown(path, key, value, names)
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for k, v in value.items():
        want = _FIELD_TYPES[str(hints[k])]
        if not isinstance(v, want) or (isinstance(v, bool) and want is not bool):
            raise ConfigError(f"{path}: {key}.{k} expects {hints[k]}, got {v!r}")
    return cls(**value)


def _method(path: Path, i: int, raw: Any) -> MethodEntry:
    where = f"methods[{i}]"
    if isinstance(raw, str):
        raw = {"config": raw}
    if not isinstance(raw, dict) or "config" not in raw:
        raise ConfigError(f"{path}: {where} must be a config path or a mapping with 'config' (and optional name, "
                          f"overrides); got {raw!r}")
    _unknown(path, where, raw, ("name", "config", "overrides"))
    config = str(raw["config"])
    resolved = resolve_config_path(config)
    if not resolved.is_file():
        raise ConfigError(f"{path}: {where}.config {config} not found (looked at {resolved}); give a path relative "
                          "to the current directory, or configs/<dataset>/<method>.yaml for a shipped config")
    overrides = _overrides(path, f"{where}.overrides", raw.get("overrides"))
    try:
        method_raw = apply_overrides(load_yaml_with_bases(resolved), list(overrides)).get("method") or {}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from None
    method = str(method_raw.get("name", "baseline"))
    return MethodEntry(_name(path, f"{where}.name", raw.get("name", method)), config, overrides, method)


def _dataset(path: Path, i: int, raw: Any) -> DatasetEntry:
    where = f"datasets[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where} must be a mapping with name, data and protocols; got {raw!r}")
    _unknown(path, where, raw, ("name", "data", "protocols"))
    name = _name(path, f"{where}.name", raw.get("name", ""))
    data = raw.get("data")
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{path}: {where}.data must be a mapping naming the reader (name: sysu | regdb | llcm | "
                          "folder) and root: DIR or synthesize: {...}")
    _unknown(path, f"{where}.data", data, ("name", "root", "options", "synthesize"))
    if not data.get("root") and not data.get("synthesize"):
        raise ConfigError(f"{path}: {where}.data needs root: DIR (where the dataset is) or synthesize: {{layout: "
                          "..., ids: ...}} (a SynthVI set made under BENCH_DIR/data/)")
    if data.get("synthesize"):
        _check_synthesize(path, f"{where}.data.synthesize", data["synthesize"])
    protocols = _list(path, f"{where}.protocols", raw.get("protocols") or [])
    if not protocols:
        raise ConfigError(f"{path}: {where}.protocols is missing or empty; list at least one, e.g. "
                          "{name: sysu-all, protocol: sysu, options: {mode: all}}")
    entries = tuple(_protocol(path, f"{where}.protocols[{j}]", name, p) for j, p in enumerate(protocols))
    seen = [(p.protocol, sorted(p.options.items())) for p in entries]
    if len({repr(s) for s in seen}) != len(seen):
        raise ConfigError(f"{path}: {where}.protocols lists the same protocol and options twice; drop one")
    return DatasetEntry(name, dict(data), entries)


def _protocol(path: Path, where: str, dataset: str, raw: Any) -> ProtocolEntry:
    if not isinstance(raw, dict) or "protocol" not in raw:
        raise ConfigError(f"{path}: {where} must be a mapping with protocol (sysu | regdb | llcm), options and "
                          f"name; got {raw!r}")
    _unknown(path, where, raw, ("name", "protocol", "options"))
    options = dict(raw.get("options") or {})
    try:
        build_options(PROTOCOLS, str(raw["protocol"]), options, f"{where}.options")  # names and types
        PROTOCOLS.get(str(raw["protocol"])).build([], root=None, **options)  # values, before any training
    except ConfigError as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from None
    name = _name(path, f"{where}.name", raw.get("name", f"{dataset}-{raw['protocol']}"))
    return ProtocolEntry(name, str(raw["protocol"]), options)


def _check_synthesize(path: Path, where: str, raw: Any) -> None:
    from ..data.synthetic import resolve_arguments

    if not isinstance(raw, dict) or "layout" not in raw:
        raise ConfigError(f"{path}: {where} must be a mapping with layout (sysu | regdb | llcm) and the vireid "
                          f"synth arguments ({', '.join(_SYNTH_KEYS)})")
    _unknown(path, where, raw, _SYNTH_KEYS)
    args = {"ids": None, "images_per_camera": None, "size": (128, 64), "difficulty": 0.5, "seed": 0, **raw}
    try:
        resolve_arguments(**args)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from None
