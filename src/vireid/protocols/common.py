"""What every protocol shares: the Protocol value, option checks, sample grouping, trial file names."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import check_option_names
from ..core import ConfigError, EvalTrial, Modality, Sample


@dataclass
class Protocol:
    """A named evaluation protocol over one dataset; `trials()` yields its EvalTrials in order."""

    dataset: str
    name: str  # e.g. "sysu/all/single/agw", also the key of its entry in results.json
    options: dict
    direction: str
    gallery_sampler: str
    rule: str
    cmc_kind: str
    build: Callable[[], list[EvalTrial]] = field(repr=False)
    notes: str = ""

    def trials(self) -> Iterator[EvalTrial]:
        """The protocol's trials, rebuilt from the seeds on every call (deterministic)."""
        yield from self.build()

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description for reports and results.json."""
        out = {
            "dataset": self.dataset, "protocol": self.name, "options": dict(self.options),
            "direction": self.direction, "gallery_sampler": self.gallery_sampler, "rule": self.rule,
            "cmc": self.cmc_kind,
        }
        if self.notes:
            out["notes"] = self.notes
        return out


def check_options(protocol: str, options: Mapping[str, Any], valid: Iterable[str] | type) -> None:
    """ConfigError naming every unknown protocol option and listing the valid ones (`config.check_option_names`)."""
    check_option_names(f"protocol {protocol!r}", options, valid)


def choose(protocol: str, option: str, value: Any, allowed: Sequence[Any]) -> Any:
    """`value` if it is one of `allowed`, else ConfigError listing them."""
    if value not in allowed:
        raise ConfigError(f"protocol {protocol!r}: option {option}={value!r} is not one of "
                          f"{', '.join(map(repr, allowed))}")
    return value


def positive_int(protocol: str, option: str, value: Any, upper: int | None = None) -> int:
    """An int in 1..upper from an int or a digit string; ConfigError otherwise."""
    try:
        out = int(value)
        if out != value and str(out) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"protocol {protocol!r}: option {option} must be an integer, got {value!r}") from None
    if out < 1 or (upper is not None and out > upper):
        rng = f"1..{upper}" if upper is not None else ">= 1"
        raise ConfigError(f"protocol {protocol!r}: option {option} must be {rng}, got {out}")
    return out


def file_key(s: Sample) -> tuple[int, int, str]:
    """Sort key: identity, camera, then file name (the order of the reference code)."""
    return (s.pid, s.camid, Path(s.path).name)


def of_modality(samples: Iterable[Sample], modality: Modality, cams: Sequence[int] | None = None) -> list[Sample]:
    """The samples of one modality (and cameras), sorted by identity, camera, file name."""
    keep = [s for s in samples if s.modality is modality and (cams is None or s.camid in cams)]
    return sorted(keep, key=file_key)


def group_by_pid_cam(samples: Iterable[Sample]) -> dict[tuple[int, int], list[Sample]]:
    """(pid, camid) -> that folder's samples sorted by file name."""
    groups: dict[tuple[int, int], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.pid, s.camid)].append(s)
    return {k: sorted(v, key=lambda s: Path(s.path).name) for k, v in groups.items()}


def sample_per_pid_cam(groups: dict[tuple[int, int], list[Sample]], pids: Sequence[int], cams: Sequence[int],
                       rng: random.Random, shots: int = 1) -> list[Sample]:
    """AGW draw: identities sorted, cameras in the given order, one rng.choice per existing folder.

    Multi-shot draws rng.sample(files, min(shots, n)) instead (no reference code has it,
    docs/reference/protocols.md#p4).
    Missing folders consume no random numbers, exactly as the reference loop.
    """
    out: list[Sample] = []
    for pid in sorted(pids):
        for cam in cams:
            files = groups.get((pid, cam))
            if not files:
                continue
            if shots == 1:
                out.append(rng.choice(files))
            else:
                out.extend(rng.sample(files, min(shots, len(files))))
    return out


_SAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def trial_file(root: str | Path, name: str) -> Path:
    """`root/<name>.txt` with each '/'-separated part of the trial name made file-system safe."""
    parts = [_SAFE.sub("_", p).strip(".") or "_" for p in name.split("/") if p]
    return Path(root).joinpath(*parts[:-1], parts[-1] + ".txt")
