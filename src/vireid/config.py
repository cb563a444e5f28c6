"""Typed configuration: dataclasses loaded from YAML with `_base_` inheritance and dotted overrides.

A config file is a YAML mapping. `_base_: other.yaml` (or a list) is loaded first, relative to the
file, and the file's keys are merged over it (`_delete_: true` inside a mapping replaces instead).
Overrides `a.b=value` are parsed as YAML scalars. YAML is read with the YAML 1.2 booleans: only
true/false are booleans, so `train.amp=off` is the string "off"; a boolean key also accepts
on/off/yes/no. Unknown keys are an error naming the key and the closest valid one. Three sections
are checked by what they configure, through the registries: `method:` by the method's `Options`,
`data.options` by the dataset reader's, `eval.options` by the protocol's (`check_eval_options`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .core import ConfigError
from .registry import DATASETS, METHODS, PROTOCOLS, Registry


@dataclass
class DataConfig:
    """Where the training data is and how images are prepared."""

    name: str = "sysu"  # a registered dataset reader: sysu, regdb, llcm, folder
    root: str = "data/synthetic-sysu"
    options: dict = field(default_factory=dict)  # the reader's options (its Options), e.g. sysu train_split
    height: int = 288
    width: int = 144
    cache: bool = True  # decode and resize each image once into a memory-mapped uint8 array
    cache_dir: str = ""  # default: <run dir>/cache
    num_workers: int = 2
    synthesize: dict = field(default_factory=dict)  # if set and root is missing: vireid synth arguments

    def __getattr__(self, name: str) -> Any:
        """Read shorthand for a reader option: `cfg.data.trial` is `cfg.data.options["trial"]`."""
        options = self.__dict__.get("options") or {}
        if name in options:
            return options[name]
        raise AttributeError(f"'DataConfig' has no attribute {name!r} (nor a reader option of that name)")


@dataclass
class SamplerConfig:
    """How batches are composed (see docs/reference/methods.md#common-1-5)."""

    kind: str = "agw"  # agw: P ids x K visible + K infrared with replacement; mpanet: identity chunks
    num_ids: int = 8  # P
    num_pos: int = 4  # K per modality
    seed_offset: int = 0


@dataclass
class AugmentConfig:
    """Training-time augmentation."""

    pad: int = 10
    pad_fill: int = 0
    flip: bool = True
    random_erasing: float = 0.0  # probability; 0 disables
    channel_aug: bool = False  # CAJ: channel random erasing, channel exchange, adaptive gray
    channel_erasing: float = 0.5
    resize_first: bool = False  # MPANet: resize then crop from the padded resized image


@dataclass
class ModelConfig:
    """Backbone and head options shared by the methods."""

    arch: str = "resnet50"  # resnet50 | resnet18
    pretrained: str = "none"  # none | imagenet | <path to a state dict>
    last_stride: int = 1
    modality_specific: list = field(default_factory=lambda: ["stem"])  # stages with one copy per modality
    in_channels: int = 3
    non_local: bool = False
    non_local_inter: int = 1  # AGW's accidental 1-channel intermediate width (docs/reference/protocols.md#p16)
    non_local_reduction: int = 0  # r > 0: each block channels // r wide (the AGW model.py on GitHub today: 2)
    pooling: str = "gem"  # gem | avg
    gem_p: float = 3.0


@dataclass
class OptimConfig:
    """Optimiser and per-epoch learning-rate schedule of the main optimiser."""

    name: str = "sgd"  # sgd | adam
    lr: float = 0.1  # head learning rate
    backbone_lr_mult: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "warmup_step"  # warmup_step | step | constant
    warmup_epochs: int = 10
    milestones: list = field(default_factory=lambda: [20, 50])
    gamma: float = 0.1


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 81
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "off"  # off | bf16 | fp16 | auto
    deterministic: bool = False
    grad_clip: float = 0.0
    max_steps_per_epoch: int = 0  # 0: the sampler's full epoch
    checkpoint_every: int = 0  # 0: only last (and best)
    eval_every: int = 0  # 0: no evaluation during training
    log_every: int = 10
    select_best: str = "none"  # none (report last) | val (the held-out val identities)
    progress: bool = True
    # at each validation, log a rank-list and a t-SNE figure of the validation set to TensorBoard (needs vireid[viz])
    tensorboard_figures: bool = False
    # torchrun runs: SyncBatchNorm (statistics of the global batch; CUDA only) instead of per-rank BatchNorm
    # statistics averaged once per epoch; ignored in a single process
    sync_bn: bool = False
    # speed options, off until measured faster (docs/performance.md "Training throughput"): channels_last memory
    # format for the network and its images; torch.compile of the method's forward (in place, same state_dict keys)
    channels_last: bool = False
    compile: bool = False


@dataclass
class EvalConfig:
    """Evaluation defaults used by `vireid eval` and the demo."""

    protocol: str = "sysu"  # a registered protocol: sysu, regdb, llcm
    # the protocol's options (names and types of its Options; checked when training starts and when evaluating)
    options: dict = field(default_factory=lambda: {"mode": "all", "shots": 1, "trials": 10})
    features: list = field(default_factory=lambda: ["bn", "pool"])
    flip: bool = False
    distance: str = "cosine"  # cosine | euclidean
    rerank: bool = False
    batch_size: int = 128


@dataclass
class Config:
    """The whole resolved configuration of a run."""

    method: Any = None  # the method's options dataclass (has a `name` field)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- loading


class YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 booleans: only true/false (any case) are booleans, not on/off/yes/no."""


YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
_BOOL_WORDS = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}


def load_yaml_text(text: str) -> Any:
    """Parse YAML text with `YAMLLoader` (safe: no Python objects are built)."""
    return yaml.load(text, Loader=YAMLLoader)  # noqa: S506 - YAMLLoader is a SafeLoader


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml_text(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict, over: Mapping) -> dict:
    """Return `base` updated recursively by `over` (mappings merge, everything else replaces).

    A mapping in `over` holding `_delete_: true` replaces the base mapping instead of merging into
    it (e.g. `eval.options` of another protocol must not inherit SYSU's options).
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and v.get("_delete_"):
            out[k] = {kk: copy.deepcopy(vv) for kk, vv in v.items() if kk != "_delete_"}
        elif isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(
                {kk: vv for kk, vv in v.items() if kk != "_delete_"} if isinstance(v, Mapping) else v
            )
    return out


def load_yaml_with_bases(path: str | Path, _seen: tuple = ()) -> dict:
    """Load a YAML file, resolving `_base_` (a path or list of paths relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"circular _base_ chain: {' -> '.join(map(str, _seen + (path,)))}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for b in bases:
        merged = deep_merge(merged, load_yaml_with_bases(path.parent / b, _seen + (path,)))
    return deep_merge(merged, data)


def parse_override(text: str, *, what: str = "override", example: str = "train.epochs=5") -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (['a','b','c'], the value parsed as a YAML scalar; unparsable text stays text)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{what} {text!r}: expected KEY=VALUE, e.g. {example}")
    try:
        value = load_yaml_text(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def parse_key_values(pairs: Sequence[str], *, what: str = "--option", example: str = "--option trial=3"
                     ) -> dict[str, Any]:
    """`["mode=indoor", "trials=3"]` -> {"mode": "indoor", "trials": 3} (values parsed as by `parse_override`)."""
    out: dict[str, Any] = {}
    for text in pairs or ():
        keys, value = parse_override(text, what=what, example=example)
        out[".".join(keys)] = value
    return out


def _without_delete_marks(value: Any) -> Any:
    """`value` without `_delete_` keys at any depth (an override replaces its key's value whole anyway)."""
    if isinstance(value, Mapping):
        return {k: _without_delete_marks(v) for k, v in value.items() if k != "_delete_"}
    return value


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Apply dotted overrides to a raw config mapping; a mapping value replaces the key's value whole
    (so `eval.options={_delete_: true, trial: 3}` and `eval.options={trial: 3}` mean the same)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {k!r} is a value, not a section")
            node = nxt
        node[keys[-1]] = _without_delete_marks(value)
    return out


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check/coerce a scalar against a simple annotation; returns (ok, coerced)."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return True, _BOOL_WORDS[value.strip().lower()]
        return isinstance(value, bool), value
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str) and _FLOAT_WORD.fullmatch(value.strip()):
            return True, float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        return False, value
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, value
    if tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return True, list(value)
        return False, value
    if tp is dict or origin is dict:
        return isinstance(value, dict), value
    return True, value


_FLOAT_WORD = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def build_dataclass(cls: type, raw: Mapping, where: str = "") -> Any:
    """Build dataclass `cls` from `raw`, strictly: unknown keys and wrong types raise ConfigError."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{(where + '.') if where else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint} Valid keys here: {', '.join(fields)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build_dataclass(typing.cast(type, tp), value or {}, full)  # a hint: a class
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"config key '{full}' expects {getattr(tp, '__name__', tp)}, got {value!r}")
        kwargs[key] = coerced
    return cls(**kwargs)


def check_option_names(what: str, options: Mapping[str, Any], valid: Iterable[str] | type) -> None:
    """ConfigError naming every unknown option of `options` and listing the valid ones (names, or the fields of an
    Options dataclass); `what` says whose options they are, e.g. "sysu reader" or "protocol 'regdb'"."""
    names = sorted(f.name for f in dataclasses.fields(valid)) if isinstance(valid, type) else sorted(valid)
    unknown = sorted(set(options) - set(names))
    if unknown:
        allowed = ", ".join(repr(k) for k in names) if names else "none"
        raise ConfigError(f"{what}: unknown option(s) {', '.join(repr(k) for k in unknown)}; valid options: {allowed}")


def options_class(entry: Any) -> type:
    """The `Options` dataclass a registered class declares (an empty one when it declares none)."""
    return getattr(entry, "Options", NoOptions)


@dataclass
class NoOptions:
    """The options of a reader or protocol that takes none."""


def options_dict(options: Any) -> dict[str, Any]:
    """An options dataclass (or mapping) as a plain dict, without the fields left at None."""
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        items = dataclasses.asdict(options).items()
    else:
        items = dict(options or {}).items()
    return {k: v for k, v in items if v is not None}


def build_options(registry: Registry, name: str, raw: Any, where: str) -> Any:
    """The `Options` of the entry `name` of `registry`, built strictly from `raw` (a mapping or such a dataclass)."""
    cls = options_class(registry.get(name))
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = dataclasses.asdict(raw)
    return build_dataclass(cls, raw or {}, where)


def config_from_dict(raw: Mapping) -> Config:
    """Build a validated Config; `method:` and `data.options` are checked by the registered method's and dataset
    reader's Options dataclasses (`eval.options` by the protocol's: `check_eval_options`). A reader option may
    also be written directly under `data:` (`data.trial=3` is `data.options.trial=3`) and read so."""
    raw_copy = copy.deepcopy(dict(raw))
    method_raw = dict(raw_copy.pop("method", None) or {})
    data_options: Any = None
    if isinstance(raw_copy.get("data"), dict):
        data = raw_copy["data"]
        data_options = data.pop("options", None)
        # shorthand: data.<reader option> means data.options.<reader option>, and wins over it
        reader = options_class(DATASETS.get(str(data.get("name", DataConfig.name))))
        flat = {f.name for f in dataclasses.fields(reader)} - {f.name for f in dataclasses.fields(DataConfig)}
        if flat & set(data):
            data_options = {**dict(data_options or {}), **{k: data.pop(k) for k in flat & set(data)}}
    name = method_raw.get("name", "baseline")
    options_cls = options_class(METHODS.get(name))
    method_raw["name"] = name
    cfg = build_dataclass(Config, raw_copy)
    cfg.method = build_dataclass(options_cls, method_raw, "method")
    cfg.data.options = dataclasses.asdict(build_options(DATASETS, cfg.data.name, data_options, "data.options"))
    check_values(cfg)
    return cfg


#: (key, lowest allowed value, whether the lowest value itself is allowed, an example of a valid value)
_RANGES: tuple[tuple[str, float, bool, str], ...] = (
    ("train.epochs", 1, True, "train.epochs=6"),
    ("optim.lr", 0, False, "optim.lr=0.001"),
    ("optim.weight_decay", 0, True, "optim.weight_decay=5e-4"),
    ("data.num_workers", 0, True, "data.num_workers=0 (load in the main process)"),
    ("train.max_steps_per_epoch", 0, True, "train.max_steps_per_epoch=0 (the full epoch)"),
    ("train.checkpoint_every", 0, True, "train.checkpoint_every=0 (only last.pt)"),
    ("train.eval_every", 0, True, "train.eval_every=0 (no evaluation during training)"),
    ("train.log_every", 0, True, "train.log_every=10"),
    ("train.grad_clip", 0, True, "train.grad_clip=0 (no clipping)"),
    ("eval.batch_size", 1, True, "eval.batch_size=128"),
)


def check_values(cfg: Config) -> None:
    """ConfigError naming the first key whose value is out of range (a negative learning rate, zero epochs, ...)."""
    for key, low, inclusive, example in _RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        ok = math.isfinite(value) and (value >= low if inclusive else value > low)
        if not ok:
            expected = f">= {low}" if inclusive else f"> {low}"
            raise ConfigError(f"config key '{key}' must be {expected}, got {value!r}; set e.g. {example}")


#: Keys a resumed run may change: they say how long to train, how to report, where the data lies and how to
#: evaluate, not how the steps so far were taken. `eval` covers the whole section ("eval.*").
RESUME_MAY_CHANGE: tuple[str, ...] = ("train.epochs", "train.progress", "train.log_every", "train.checkpoint_every",
                                      "train.tensorboard_figures", "train.device", "train.channels_last",
                                      "train.compile", "data.root", "data.cache_dir", "data.num_workers", "eval")


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: value}


def config_differences(saved: Config, now: Config, *, allowed: Sequence[str] = ()) -> list[str]:
    """'key (saved -> now)' for every dotted key whose value differs, except keys under `allowed` prefixes."""
    a, b = _flatten(config_to_dict(saved), ""), _flatten(config_to_dict(now), "")
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == p or key.startswith(p + ".") for p in allowed):
            continue
        missing = "(unset)"
        if a.get(key, missing) != b.get(key, missing):
            out.append(f"{key} ({a.get(key, missing)!r} -> {b.get(key, missing)!r})")
    return out


def check_eval_options(cfg: Config) -> Any:
    """`cfg.eval.options` built by the protocol's Options (ConfigError naming a wrong key or type).

    Kept out of `config_from_dict` so a config may carry options for a protocol it overrides later;
    the trainer calls it before the first epoch, so a typo fails before hours of training, not after."""
    return build_options(PROTOCOLS, cfg.eval.protocol, cfg.eval.options, "eval.options")


#: `data` keys of vireid 0.1.0 configs that reader options replaced (data.options); see `upgrade_saved_config`.
LEGACY_DATA_KEYS = ("train_split", "trial")


def upgrade_saved_config(raw: Mapping) -> dict:
    """A config saved by vireid 0.1.0 (a checkpoint's) in today's keys: it held every legacy `data` key whatever
    the reader; those the reader does not declare are dropped (the others are reader-option shorthands)."""
    raw_copy = copy.deepcopy(dict(raw))
    data = raw_copy.get("data")
    if not isinstance(data, dict) or not any(k in data for k in LEGACY_DATA_KEYS):
        return raw_copy
    declared = {f.name for f in dataclasses.fields(options_class(DATASETS.get(data.get("name", DataConfig.name))))}
    for key in LEGACY_DATA_KEYS:
        if key in data and key not in declared:
            del data[key]
    return raw_copy


SHIPPED_PREFIX = "configs"


def shipped_configs() -> Path:
    """The folder of the configs shipped with vireid (the package `vireid.configs`; the repo's configs/)."""
    import importlib.resources

    return Path(str(importlib.resources.files("vireid.configs")))


def resolve_config_path(path: str | Path) -> Path:
    """`path` if it exists; else, for `configs/<...>.yaml`, the shipped config of that name."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute() or not p.parts or p.parts[0] != SHIPPED_PREFIX:
        return p
    shipped = shipped_configs().joinpath(*p.parts[1:])
    return shipped if shipped.is_file() else p


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load `path` (with its `_base_` chain) and apply dotted `overrides`.

    A path `configs/<dataset>/<method>.yaml` that does not exist here names the shipped config.
    """
    raw = load_yaml_with_bases(resolve_config_path(path)) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides))


def config_to_dict(cfg: Config) -> dict:
    """A plain mapping that `config_from_dict` turns back into an equal Config."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
