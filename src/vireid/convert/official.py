"""Convert the authors' released checkpoints (AGW, CAJ, MPANet, LbA, JSIA-ReID) into vireid run directories.

A converted run is an ordinary run: config.yaml (the shipped preset of the dataset, the architecture read from the
weights' shapes, the official test-time settings), checkpoints/last.pt in vireid's format and env.json recording the
source file(s), their sha256 and the converter. docs/official-weights.md lists the name mappings and the settings.

Loading never runs code: files are read with `weights_only=True`; the NumPy metrics AGW, CAJ and LbA save beside the
weights are allowed through an allow-list of exactly the NumPy globals they need (`read_foreign_weights`). Loading is
strict: a tensor the official network has and vireid's does not (or the reverse), or a shape that differs, stops the
conversion with one line naming the tensors, before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..config import Config, config_to_dict, dump_config, load_config, shipped_configs
from ..core import CheckpointError, ConfigError
from ..methods import Method, build_method
from ..models.backbone import NON_LOCAL_COUNTS
from ..runs.checkpoint import REQUIRED_KEYS, load_model_state, read_foreign_weights, save_checkpoint
from ..runs.run_dir import RunDir, environment, git_revision
from ..utils.atomic import storage_errors, write_json, write_text
from ..utils.state_dicts import key_problems, listing, shape_mismatch
from .sources import DATASETS, SOURCES, OfficialSource

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

#: Keys under which the official scripts (or a re-save) keep the state dict inside a dict container.
CONTAINER_KEYS = ("net", "state_dict", "model")
_PREFIX = "module."  # DataParallel's
# Tensors the official forward pass never reads, dropped knowingly (and listed in env.json): the two-stream code
# wraps three whole ResNets but runs only the stems of the visible / thermal ones and layer1..4 of the shared one;
# MPANet's optional center loss (center: true) keeps its class centres in the model, unused at test time.
_UNUSED = {
    "two_stream": re.compile(r"^(visible_module\.visible|thermal_module\.thermal)\.(layer[1-4]|fc)\.|"
                             r"^base_resnet\.base\.(conv1|bn1|fc)\."),
    "mpanet": re.compile(r"^center_loss\."),
}
# Tensors that say which code base saved a state dict (for "it looks like ..." in the errors).
_SIGNATURES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("mod_invar_enc.resnet_conv1.0.weight",), "a JSIA-ReID generator file (--from jsia)"),
    (("cnns.0.0.conv.weight",), "a JSIA-ReID discriminator file (--from jsia)"),
    (("backbone.conv1.weight", "bn_neck.weight"), "an MPANet checkpoint (--from mpanet)"),
    (("visible_module.visible.conv1.weight", "NL_2.0.g.0.weight"),
     "an AGW / CAJ checkpoint with non-local blocks (--from agw or --from caj)"),
    (("visible_module.visible.conv1.weight", "bottleneck.weight"),
     "an LbA checkpoint or the AGW code's --method base network (--from lba, or --from agw --set "
     "method.variant=base)"),
    (("backbone.stem.visible.conv1.weight",), "a vireid state dict"),
    (("backbone.stem.conv1.weight",), "a vireid state dict"),
)
_REQUIRED = {  # tensors every official checkpoint of the source has
    "agw": ("visible_module.visible.conv1.weight", "thermal_module.thermal.conv1.weight",
            "base_resnet.base.layer1.0.conv1.weight", "bottleneck.weight", "classifier.weight"),
    "mpanet": ("backbone.conv1.weight", "backbone.layer1.0.conv1.weight", "bn_neck.weight", "classifier.weight"),
    "jsia": ("mod_invar_enc.resnet_conv1.0.weight", "mod_invar_enc.classifier.classifier.weight",
             "mod_spec_enc.classifier.weight"),
}
_REQUIRED["caj"] = _REQUIRED["lba"] = _REQUIRED["agw"]
_CLASSIFIER = {"agw": "classifier.weight", "caj": "classifier.weight", "lba": "classifier.weight",
               "mpanet": "classifier.weight", "jsia": "mod_invar_enc.classifier.classifier.weight"}
_JSIA_FILE = re.compile(r"^model-([0-3])_(\d+)\.pkl$")
_JSIA_ENCODER = "mod_invar_enc."


@dataclass
class ConvertedRun:
    """What `convert_official` wrote: the run, the model it holds and what happened to each official tensor."""

    path: Path
    source: str
    method: str
    num_classes: int
    config: Config
    files: dict[str, str]  # source file -> its sha256
    loaded: int  # vireid tensors filled from the official file(s)
    filled: list[str] = field(default_factory=list)  # BatchNorm counters the file lacked (old PyTorch saves)
    ignored: list[str] = field(default_factory=list)  # official tensors the official forward never reads
    metadata: dict[str, Any] = field(default_factory=dict)  # the file's other values (epoch, its own mAP, ...)

    def describe(self) -> str:
        """A few lines for the command line."""
        src = SOURCES[self.source]
        t = self.config.eval
        lines = [f"converted {src.title} weights ({', '.join(Path(f).name for f in self.files)}) into {self.path}",
                 f"  vireid {self.method}: {self.config.model.arch}, {self.num_classes} identities, "
                 f"{self.loaded} tensors loaded" + (f", {len(self.filled)} BatchNorm counters added" if self.filled
                                                    else ""),
                 f"  test time: {self.config.data.height}x{self.config.data.width}, feature {t.features[0]}, flip "
                 f"{'on' if t.flip else 'off'}, {t.distance}, {t.protocol} {dict(t.options)}"]
        if self.ignored:
            shown = self.ignored if self.source == "jsia" else _prefixes(self.ignored)
            lines.append(f"  left out, never read by the official forward: {listing(shown, 4)}")
        lines.append(f"  evaluate: vireid eval {self.path} --data-root DATASET_ROOT")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- reading


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _prefixes(keys: Sequence[str]) -> list[str]:
    """'visible_module.visible.layer1.*' for every key under it (three dotted levels), in first-seen order."""
    return list(dict.fromkeys(".".join(k.split(".")[:3]) + ".*" for k in keys))


def _plain(value: Any) -> Any:
    """A JSON value for an official file's metadata entry (NumPy numbers become floats, arrays lists)."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass, and pickles as NumPy
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (np.ndarray, torch.Tensor)):
        flat = np.asarray(value).reshape(-1)[:20]
        return [float(x) for x in flat]
    return type(value).__name__


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def unwrap_state_dict(data: Any, path: Path, source: OfficialSource) -> tuple[StateDict, dict[str, Any]]:
    """(state dict, the container's other values) of what an official script saved: a bare state dict or a dict
    holding one under 'net' / 'state_dict' / 'model'; DataParallel's 'module.' prefix is removed."""
    if _is_state_dict(data):
        state, meta = dict(data), {}
    elif isinstance(data, Mapping):
        if all(k in data for k in REQUIRED_KEYS):
            raise CheckpointError(f"{path} is already a vireid checkpoint (it has {', '.join(REQUIRED_KEYS)}); use "
                                  "it directly: vireid eval RUN_DIR, or copy it to RUN_DIR/checkpoints/last.pt")
        inner = next((k for k in CONTAINER_KEYS if _is_state_dict(data.get(k))), None)
        if inner is None:
            keys = ", ".join(repr(k) for k in list(data)[:8])
            raise CheckpointError(f"{path} holds a dict with keys {keys} but no state dict under "
                                  f"{' / '.join(map(repr, CONTAINER_KEYS))}; the official {source.title} code saves "
                                  f"{source.container}")
        state = dict(data[inner])
        meta = {str(k): _plain(v) for k, v in data.items() if k != inner}
    else:
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state dict; the official {source.title} "
                              f"code saves {source.container}")
    prefixed = [k for k in state if k.startswith(_PREFIX)]
    if prefixed and len(prefixed) == len(state):
        state = {k[len(_PREFIX):]: v for k, v in state.items()}
    elif prefixed:
        raise CheckpointError(f"{path}: some tensors carry DataParallel's 'module.' prefix and some do not "
                              f"({listing(prefixed, 3)}); re-save the state dict of one model")
    return state, meta


def _guess(state: Mapping[str, Any]) -> str:
    """'it looks like ...' for a state dict another code base saved (empty when unknown)."""
    for keys, what in _SIGNATURES:
        if all(k in state for k in keys):
            return f"; it holds {', '.join(keys)}: it looks like {what}"
    return ""


def _check_source(state: Mapping[str, Any], path: Path, source: OfficialSource) -> None:
    """CheckpointError naming the tensors the source's official network always has and this file lacks."""
    missing = [k for k in _REQUIRED[source.name] if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not an official {source.title} checkpoint: it has no {', '.join(missing)}"
                              f"{_guess(state)}")


# -------------------------------------------------------------------------------------- architecture from shapes


def _block_count(state: Mapping[str, Any], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0


def resnet_arch(state: Mapping[str, Any], layers: Sequence[str], path: Path) -> str:
    """resnet50 or resnet18 from the blocks under the four layer prefixes (CheckpointError for other ResNets)."""
    counts = tuple(_block_count(state, p) for p in layers)
    bottleneck = any(k.startswith(f"{layers[0]}0.conv3.") for k in state)
    if bottleneck and counts == (3, 4, 6, 3):
        return "resnet50"
    if not bottleneck and counts == (2, 2, 2, 2):
        return "resnet18"
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    raise CheckpointError(f"{path}: its ResNet has {counts} {kind} blocks under {layers[0]}..{layers[-1]}; vireid "
                          "builds ResNet-50 (3, 4, 6, 3 Bottleneck) and ResNet-18 (2, 2, 2, 2 BasicBlock) only")


def _non_local_options(state: Mapping[str, Any], arch: str, path: Path) -> list[str]:
    """model.non_local / non_local_inter (or model.non_local_reduction) of AGW's NL_1..NL_4 blocks."""
    channels = {"resnet50": (256, 512, 1024, 2048), "resnet18": (64, 128, 256, 512)}[arch]
    blocks = {"resnet50": (3, 4, 6, 3), "resnet18": (2, 2, 2, 2)}[arch]
    widths: dict[str, int] = {}
    for i in range(1, 5):
        stage = f"layer{i}"
        count = _block_count(state, f"NL_{i}.")
        want = min(NON_LOCAL_COUNTS.get(stage, 0), blocks[i - 1])
        if count != want:
            raise CheckpointError(f"{path}: it has {count} non-local blocks NL_{i}.* after {stage}, vireid's AGW "
                                  f"network {want} (after the last {want} blocks of layer2 and layer3 only)")
        for j in range(count):
            widths[f"NL_{i}.{j}.g.0.weight"] = int(state[f"NL_{i}.{j}.g.0.weight"].shape[0])
    first = next(iter(widths.values()))
    if all(w == first for w in widths.values()):
        return ["model.non_local=true", f"model.non_local_inter={first}", "model.non_local_reduction=0"]
    reductions = {channels[int(k[3]) - 1] / w for k, w in widths.items()}
    if len(reductions) == 1 and float(next(iter(reductions))).is_integer():
        return ["model.non_local=true", f"model.non_local_reduction={int(next(iter(reductions)))}"]
    raise CheckpointError(f"{path}: its non-local blocks have widths {widths}; vireid builds one width for every "
                          "block (model.non_local_inter) or channels // r (model.non_local_reduction)")


def infer_options(source: OfficialSource, state: Mapping[str, Any], path: Path) -> tuple[list[str], int]:
    """(config overrides for the architecture the weights' shapes show, the number of identities)."""
    classifier = _CLASSIFIER[source.name]
    num_classes = int(state[classifier].shape[0])
    if source.name in ("agw", "caj", "lba"):
        arch = resnet_arch(state, [f"base_resnet.base.layer{i}." for i in range(1, 5)], path)
        out = [f"model.arch={arch}", "model.modality_specific=[stem]", "model.last_stride=1"]
        has_nl = any(k.startswith("NL_") for k in state)
        if source.name == "lba":
            if has_nl:
                nl = listing(sorted(k for k in state if k.startswith("NL_")), 3)
                raise CheckpointError(f"{path} is not an official LbA checkpoint: it holds non-local blocks ({nl}), "
                                      "which LbA's network does not have; it looks like an AGW / CAJ checkpoint "
                                      "(--from agw or --from caj)")
            return [*out, "model.non_local=false", "model.pooling=gem", "model.gem_p=3.0"], num_classes
        variant = "agw" if source.name == "agw" else "caj"
        if has_nl:  # embed_net(no_local='on', gm_pool='on'): the AGW network
            return [*out, *_non_local_options(state, arch, path), "model.pooling=gem", "model.gem_p=3.0",
                    f"method.variant={variant}"], num_classes
        # embed_net(no_local='off', gm_pool='off'): the code's --method base (average pooling); the variant is
        # left for the user to confirm (an LbA checkpoint has the same tensors)
        return [*out, "model.non_local=false", "model.pooling=avg", f"method.variant={variant}"], num_classes
    if source.name == "mpanet":
        arch = resnet_arch(state, [f"backbone.layer{i}." for i in range(1, 5)], path)
        mam = [s for s, k in (("layer3", "backbone.MAM3."), ("layer4", "backbone.MAM4.")) if any(
            x.startswith(k) for x in state)]
        reductions = sorted({int(state[f"backbone.MAM{s[-1]}.channel_attention.2.weight"].shape[0]
                                 // state[f"backbone.MAM{s[-1]}.channel_attention.0.weight"].shape[0]) for s in mam})
        if len(reductions) > 1:
            raise CheckpointError(f"{path}: its MAM blocks reduce by {reductions}; vireid builds one "
                                  "method.mam_reduction for both")
        parts = int(state["spatial_attention.weight"].shape[0]) if "spatial_attention.weight" in state else 0
        out = [f"model.arch={arch}", "model.modality_specific=[]", f"method.mam_stages=[{', '.join(mam)}]",
               f"method.num_parts={parts}"]
        return out + ([f"method.mam_reduction={reductions[0]}"] if reductions else []), num_classes
    # jsia: the encoder inside the first generator file
    enc = _JSIA_ENCODER
    arch = resnet_arch(state, [f"{enc}resnet_conv1.3.", f"{enc}resnet_conv2.0.", f"{enc}resnet_conv2.1.",
                               f"{enc}resnet_conv2.2."], path)
    style_classes = int(state["mod_spec_enc.classifier.weight"].shape[0])
    return [f"model.arch={arch}", "model.modality_specific=[]", f"method.style_classes={style_classes}"], num_classes


# ------------------------------------------------------------------------------------------- name mappings


def _two_stream_key(key: str, non_local: Mapping[str, list[str]]) -> str | None:
    """The official AGW / CAJ / LbA name of a vireid baseline or LbA tensor (None: the official network lacks it)."""
    parts = key.split(".")
    if parts[0] == "backbone":
        stage = parts[1]
        if stage == "stem":
            if len(parts) < 4 or parts[2] not in ("visible", "infrared") or parts[3] not in ("conv1", "bn1"):
                return None
            stream = "visible_module.visible" if parts[2] == "visible" else "thermal_module.thermal"
            return f"{stream}.{'.'.join(parts[3:])}"
        if parts[2] == "blocks":
            return f"base_resnet.base.{stage}.{'.'.join(parts[3:])}"
        if parts[2] == "non_local":
            j = non_local[stage].index(parts[3])
            inner = "g.0" if parts[4] == "g" else parts[4]
            return f"NL_{stage[-1]}.{j}.{inner}.{'.'.join(parts[5:])}"
        return None
    if parts[0] == "neck" and parts[1] == "bn":
        return "bottleneck." + ".".join(parts[2:])
    if key == "classifier.fc.weight":
        return "classifier.weight"
    return None


_MPANET_HEADS = {"classifier.fc.weight": "classifier.weight", "classifier_v.fc.weight": "visible_classifier.weight",
                 "classifier_r.fc.weight": "infrared_classifier.weight",
                 "mean_weight_v": "visible_classifier_.weight", "mean_weight_r": "infrared_classifier_.weight"}


def _mpanet_key(key: str) -> str | None:
    """The official MPANet name of a vireid MPANet tensor (None: the official network lacks it)."""
    if key in _MPANET_HEADS:
        return _MPANET_HEADS[key]
    parts = key.split(".")
    rest = ".".join(parts[2:])
    if parts[0] == "backbone":
        if parts[1] == "stem" and parts[2] in ("conv1", "bn1"):
            return "backbone." + rest
        if parts[2] == "blocks":
            return f"backbone.{parts[1]}.{'.'.join(parts[3:])}"
        return None
    if parts[0] == "mam":
        return f"backbone.MAM{parts[1][-1]}.{rest}"
    if parts[0] == "pam" and parts[1] == "spatial_attention":
        return "spatial_attention." + rest
    if parts[0] == "neck" and parts[1] == "bn":
        return "bn_neck." + rest
    return None


def official_key_map(source: str, method: Method) -> dict[str, str]:
    """vireid key -> official key for every entry of `method.state_dict()` (AGW, CAJ, LbA, MPANet; JSIA-ReID's
    four-file map is `vireid.methods.jsia.official_key_map`). A vireid tensor the official network lacks (another
    config) raises CheckpointError naming it."""
    if source not in ("agw", "caj", "lba", "mpanet"):
        raise ValueError(f"official_key_map covers agw, caj, lba and mpanet, got {source!r}")
    non_local: dict[str, list[str]] = {}
    backbone = getattr(method, "backbone", None)
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        module = getattr(backbone, stage, None)
        keys = getattr(module, "non_local", {}) if module is not None else {}
        non_local[stage] = sorted(keys, key=int)
    out: dict[str, str] = {}
    for key in method.state_dict():
        official = _mpanet_key(key) if source == "mpanet" else _two_stream_key(key, non_local)
        if official is None:
            raise CheckpointError(f"vireid's {method.cfg.method.name} built from this config has {key!r}, which the "
                                  f"official {SOURCES[source].title} network does not have; official weights load "
                                  "into the architecture the converter sets up (leave model.* and method.* as "
                                  "they are)")
        out[key] = official
    return out


def _assemble(method: Method, source: OfficialSource, official: StateDict, path: Path, num_classes: int,
              inferred_classes: int) -> tuple[StateDict, list[str], list[str]]:
    """(vireid state dict, BatchNorm counters filled in, official tensors left out as unused); CheckpointError naming
    every missing, unexpected or mis-shaped tensor."""
    mapping = official_key_map(source.name, method)
    own = method.state_dict()
    state: StateDict = {}
    filled: list[str] = []
    missing: list[str] = []
    mismatched: list[str] = []
    used: set[str] = set()
    for key, name in mapping.items():
        if name in official:
            used.add(name)
            if tuple(official[name].shape) != tuple(own[key].shape):
                mismatched.append(shape_mismatch(name, official[name].shape, own[key].shape))
            state[key] = official[name]
        elif key.endswith("num_batches_tracked"):  # PyTorch < 0.4.1 saved no counter
            state[key] = own[key]
            filled.append(name)
        else:
            missing.append(name)
    unused = _UNUSED["mpanet" if source.name == "mpanet" else "two_stream"]
    ignored = [k for k in official if k not in used and unused.search(k)]
    unexpected = [k for k in official if k not in used and not unused.search(k)]
    problems = key_problems(missing, unexpected, mismatched)
    if problems:
        hint = ""
        if num_classes != inferred_classes:
            hint = (f" The checkpoint's classifier has {inferred_classes} identities, {num_classes} were asked for: "
                    f"pass the checkpoint trained on that many, or num_classes={inferred_classes}.")
        raise CheckpointError(f"{path} does not match the official {source.title} network vireid built from it: "
                              + "; ".join(problems) + "." + (hint or _guess_hint(unexpected, official)))
    return state, filled, ignored


def _guess_hint(unexpected: Sequence[str], official: Mapping[str, Any]) -> str:
    guess = _guess(official)[2:]
    return f" {guess[0].upper()}{guess[1:]}." if unexpected and guess else ""


# --------------------------------------------------------------------------------------------- JSIA-ReID files


def jsia_files(checkpoint: str | Path, epoch: int | None = None) -> list[Path]:
    """The four official JSIA-ReID files model-0_<epoch>.pkl .. model-3_<epoch>.pkl from their folder (with `epoch`
    when it holds several) or from one of them."""
    path = Path(checkpoint).expanduser()
    if path.is_file():
        found = _JSIA_FILE.match(path.name)
        if found is None:
            guess = ""
            try:
                state, _ = unwrap_state_dict(read_foreign_weights(path, "a weights file", numpy_values=True), path,
                                             SOURCES["jsia"])
                guess = _guess(state)
            except CheckpointError:
                pass
            raise CheckpointError(f"{path} is not one of JSIA-ReID's files{guess}; the official code saves four, "
                                  "model-0_<epoch>.pkl .. model-3_<epoch>.pkl: pass their folder or one of them")
        if epoch is not None and int(found.group(2)) != int(epoch):
            raise CheckpointError(f"{path} is epoch {found.group(2)}, but epoch {epoch} was asked for")
        folder, epoch = path.parent, int(found.group(2))
    elif path.is_dir():
        epochs = sorted({int(m.group(2)) for f in path.iterdir() if (m := _JSIA_FILE.match(f.name))})
        if epoch is None:
            if not epochs:
                raise CheckpointError(f"{path} holds no JSIA-ReID files (model-<i>_<epoch>.pkl); download all four "
                                      "files of the released model into one folder")
            if len(epochs) > 1:
                raise CheckpointError(f"{path} holds the JSIA-ReID files of epochs {epochs}; pass the epoch "
                                      "(--epoch N; the released model is 649) or one of the files")
            epoch = epochs[0]
        folder = path
    else:
        raise CheckpointError(f"official JSIA-ReID weights: {path} does not exist")
    return [folder / f"model-{i}_{epoch}.pkl" for i in range(4)]


@contextlib.contextmanager
def _with_module_prefix(paths: list[Path], first_prefixed: bool) -> Iterator[list[str | Path]]:
    """The four files as `load_official_weights` reads them: DataParallel names (module.*). The official code saves
    them so; files re-saved without the prefix are copied with it into a temporary folder first."""
    if first_prefixed:
        yield [*paths]
        return
    with tempfile.TemporaryDirectory(prefix="vireid-jsia-") as tmp:
        copies: list[str | Path] = []
        for path in paths:
            state, _ = unwrap_state_dict(read_foreign_weights(path, "an official JSIA-ReID file"), path,
                                         SOURCES["jsia"])
            copy = Path(tmp) / path.name
            torch.save({_PREFIX + k: v for k, v in state.items()}, copy)
            copies.append(copy)
        yield copies


# ------------------------------------------------------------------------------------------------ the converter


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; a converted run gets a new run "
                          "directory: choose another --out or remove that one")


def _build_config(source: OfficialSource, dataset: str, inferred: Sequence[str], overrides: Sequence[str],
                  path: Path) -> Config:
    preset = shipped_configs().joinpath(*Path(source.config_name(dataset)).parts[1:])
    cfg = load_config(preset, ["model.pretrained=none", *source.overrides(dataset), *inferred, *overrides])
    if source.name in ("agw", "caj") and not cfg.model.non_local and cfg.method.variant != "base":
        raise CheckpointError(f"{path} has no non-local blocks (NL_2.*, NL_3.*), which the {source.title} network "
                              "has; it looks like an LbA checkpoint (--from lba) or the AGW code's --method base "
                              "network (add --set method.variant=base)")
    if source.name in ("agw", "caj") and cfg.method.variant == "base" and cfg.model.non_local:
        raise CheckpointError(f"{path} has non-local blocks (NL_2.*, NL_3.*), which the AGW code's --method base "
                              "network does not have; leave method.variant as the converter sets it")
    return cfg


def _write_run(out: Path, cfg: Config, payload: dict[str, Any], converted_from: dict[str, Any]) -> None:
    """Write config.yaml, env.json and checkpoints/last.pt into a temporary folder beside `out`, then rename it to
    `out`: an interrupted or failed conversion leaves no half-written run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with storage_errors(out):
            run = RunDir(tmp)
            write_text(run.config, dump_config(cfg))
            env = environment()
            env["git_revision"] = git_revision()
            env["converted_from"] = converted_from
            write_json(run.env, env)
            save_checkpoint(run.checkpoint("last"), payload)
            _check_out(out)
            if out.is_dir():
                out.rmdir()  # empty, checked above
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def convert_official(source: str, checkpoint: str | Path, out: str | Path, *, dataset: str = "sysu",
                     overrides: Sequence[str] = (), num_classes: int | None = None,
                     epoch: int | None = None) -> ConvertedRun:
    """Write a vireid run directory at `out` from an official checkpoint of `source` (agw, caj, mpanet, lba, jsia).

    Args:
        checkpoint: the file the official code saved; for jsia the folder of its four files (`epoch` picks one
            epoch when it holds several) or one of them.
        dataset: sysu | regdb | llcm: the shipped preset and the official test-time settings the run gets.
        overrides: dotted config overrides applied last (data.root=..., eval.options=...).
        num_classes: the identities the model must have; CheckpointError naming the classifier tensors when the
            checkpoint's differ (default: the checkpoint's own count).

    Nothing is written unless every tensor finds its place; `out` must not exist (or be an empty folder).
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown official source {source!r}: expected one of {', '.join(SOURCES)}")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r} for a converted run: expected one of {', '.join(DATASETS)}")
    src = SOURCES[source]
    out = Path(out).expanduser()
    _check_out(out)
    what = f"an official {src.title} checkpoint"
    first_prefixed = True
    if source == "jsia":
        paths = jsia_files(checkpoint, epoch)
        raw = read_foreign_weights(paths[0], what)
        first_prefixed = _is_state_dict(raw) and all(str(k).startswith(_PREFIX) for k in raw)
        state, meta = unwrap_state_dict(raw, paths[0], src)
    else:
        paths = [Path(checkpoint).expanduser()]
        state, meta = unwrap_state_dict(read_foreign_weights(paths[0], what, numpy_values=True), paths[0], src)
    _check_source(state, paths[0], src)
    inferred, inferred_classes = infer_options(src, state, paths[0])
    classes = int(num_classes) if num_classes is not None else inferred_classes
    cfg = _build_config(src, dataset, inferred, overrides, paths[0])
    method = build_method(cfg, classes, pretrained=False)
    filled: list[str] = []
    ignored: list[str] = []
    if source == "jsia":
        from ..methods.jsia import JSIA, load_official_weights

        assert isinstance(method, JSIA)  # the jsia preset builds JSIA
        del state, raw  # load_official_weights reads the four files itself
        with _with_module_prefix(paths, first_prefixed) as four:
            load_official_weights(method, four)
        loaded = len(method.state_dict())
        ignored = [f"{paths[1].name}: {_JSIA_ENCODER}* (the second copy of the shared encoder)"]
    else:
        weights, filled, ignored = _assemble(method, src, state, paths[0], classes, inferred_classes)
        load_model_state(method, weights, source=str(paths[0]))
        loaded = len(weights) - len(filled)
    files = {str(p.resolve()): sha256_of(p) for p in paths}
    converted_from = {"source": source, "title": src.title, "repository": f"https://github.com/{src.repo}",
                      "files": [{"path": p, "sha256": h} for p, h in files.items()],
                      "converter": f"vireid.convert.official (vireid {__version__})", "dataset": dataset,
                      "num_classes": classes, "tensors_loaded": loaded, "batchnorm_counters_added": filled,
                      "left_out_unused": ignored, "official_metadata": meta}
    payload = {"model": method.state_dict(), "method": cfg.method.name, "num_classes": classes,
               "config": config_to_dict(cfg), "converted_from": converted_from}
    _write_run(out, cfg, payload, converted_from)
    result = ConvertedRun(out, source, cfg.method.name, classes, cfg, files, loaded, filled, ignored, meta)
    log.debug("%s", result.describe())
    return result
