"""Checkpoints: atomic save, safe strict load with precise mismatch messages, RNG state for exact resume.

A checkpoint is read with `torch.load(..., weights_only=True)`: tensors and plain values only, so a file
someone hands you cannot run code when it is loaded. Everything vireid saves is such a value (the numpy
RNG state is stored as a tensor and plain numbers). Checkpoints of format 1 held the numpy state as a
numpy array; only the globals that rebuild a plain numpy array are allowed when reading those. Other code bases'
checkpoints (`read_foreign_weights`) may hold NumPy scalars and arrays of metrics beside the weights (AGW, CAJ and
LbA save cmc, mAP, mINP); with `numpy_values=True` exactly the globals that rebuild those are allowed too.
"""

from __future__ import annotations

import io
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import CheckpointError
from ..utils.atomic import atomic_path
from ..utils.state_dicts import key_problems, shape_mismatch

#: 1: numpy RNG state as a numpy array (vireid <= 0.2); 2: every value a tensor or a plain Python value.
FORMAT_VERSION = 2
#: What every vireid checkpoint holds (the trainer also needs RESUME_KEYS to continue a run).
REQUIRED_KEYS = ("model", "method", "num_classes", "config")
RESUME_KEYS = ("optimizers", "epoch", "global_step", "rng")


def _numpy_array_globals() -> list[Any]:
    """The globals a pickled plain numpy array needs (format-1 RNG states), under numpy 1 and 2 names."""
    try:
        reconstruct = np._core.multiarray._reconstruct  # type: ignore[attr-defined]  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1
        reconstruct = np.core.multiarray._reconstruct  # type: ignore[attr-defined]
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            np.dtypes.UInt32DType]


def _numpy_value_globals() -> list[Any]:
    """The globals pickled NumPy scalars and arrays of numbers need, under NumPy 1 and 2 names: what the official
    AGW, CAJ and LbA scripts save beside the weights (cmc: a float32 array; mAP, mINP: float64 scalars)."""
    try:
        scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1
        scalar = np.core.multiarray.scalar  # type: ignore[attr-defined]
    number_dtypes = [np.dtypes.Float16DType, np.dtypes.Float32DType, np.dtypes.Float64DType, np.dtypes.Int32DType,
                     np.dtypes.Int64DType]
    return [*_numpy_array_globals(), scalar, (scalar, "numpy.core.multiarray.scalar"), *number_dtypes]


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (plus the format version) to `path` atomically.

    The bytes are built in memory first and written through `atomic_path`, so a full disk is a
    StorageError naming `path` (torch.save to a file would raise a bare RuntimeError) and the previous
    file stays intact."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def _reason(exc: BaseException) -> str:
    """One line saying why torch.load failed (the unpickler's own words, not torch's advice around them)."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if found:
        return found.group(1).strip()
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def read_foreign_weights(path: str | Path, what: str, *, numpy_values: bool = False) -> Any:
    """Load a weights file another codebase saved (tensors and plain containers only; no code runs) on the CPU.

    `what` names the expected content in the errors ("the official JSIA-ReID weights model-0_649.pkl"): a missing
    file, a damaged one and one holding Python objects each raise CheckpointError naming the file. With
    `numpy_values`, NumPy scalars and arrays of numbers (metrics saved beside the weights) are read too, as NumPy
    values; nothing else is allowed, never `weights_only=False`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what}: {path} does not exist")
    allowed = _numpy_value_globals() if numpy_values else []
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        # an object's class named by the unpickler: a global it may not import, or a type it may not build
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", str(exc))
        if unsafe:
            name = unsafe.group(1) or unsafe.group(2)
            raise CheckpointError(f"cannot read {path} as {what}: it holds a Python object ({name}) and "
                                  "loading it could run code, so vireid refuses it; vireid loads tensors and plain "
                                  "values only") from None
        raise CheckpointError(f"cannot read {path} as {what} ({_reason(exc)}); vireid loads tensors and plain "
                              "values only") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a vireid checkpoint on the CPU (tensors and plain values only; no code runs).

    A damaged file, a file holding other Python objects (a pickle that would run code), a bare state dict
    and a dict without 'model', 'method', 'num_classes' and 'config' raise CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; pass a file written by vireid train "
                              "(<run>/checkpoints/last.pt or best.pt)")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"{path} is not a vireid checkpoint: it holds a Python object ({unsafe.group(1)}) and loading it "
                "could run code, so vireid refuses it; pass a checkpoint written by vireid train") from None
        raise CheckpointError(f"cannot read checkpoint {path} ({_reason(exc)}): the file is damaged (cut short?) or "
                              "not a vireid checkpoint (vireid loads tensors and plain values only); pass a checkpoint "
                              "written by vireid train") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a vireid checkpoint: it holds a {type(data).__name__}, expected a dict "
                              f"with {', '.join(map(repr, REQUIRED_KEYS))}; pass a checkpoint written by vireid train")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        hint = ""
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            hint = " (it looks like a bare state dict; a torchvision ResNet state dict goes to model.pretrained=PATH)"
        raise CheckpointError(f"{path} is not a vireid checkpoint: it has no {', '.join(map(repr, missing))}{hint}; "
                              "pass a checkpoint written by vireid train")
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version!r}, newer than this vireid reads "
                              f"({FORMAT_VERSION}); upgrade vireid to load it")
    return data


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str,
                     method: str | None = None, expected_method: str | None = None) -> None:
    """Load `state` into `model` strictly: other method, missing, unexpected or mis-shaped keys are refused."""
    if method is not None and expected_method is not None and method != expected_method:
        raise CheckpointError(f"{source} was trained with method {method!r}, but the model is {expected_method!r}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = key_problems(missing, unexpected, [shape_mismatch(k, state[k].shape, own[k].shape) for k in mismatched])
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems)
                              + ". Was it trained with another config or number of classes?")
    model.load_state_dict(state, strict=True)


def rng_state() -> dict[str, Any]:
    """Global RNG states (python, numpy, torch, cuda) for exact resume, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    numpy_state = {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved (also the format-1 numpy tuple)."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), int(numpy_state["pos"]),
                       int(numpy_state["has_gauss"]), float(numpy_state["cached_gaussian"]))
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
