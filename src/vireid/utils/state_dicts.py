"""The one wording of a state dict that does not fit a model: missing, unexpected and mis-shaped keys."""

from __future__ import annotations

from collections.abc import Sequence

SHOWN = 5  # items listed before "(+N more)"


def listing(items: Sequence[str], shown: int = SHOWN) -> str:
    """'a, b, c (+N more)': the first `shown` items, then how many were left out."""
    items = list(items)
    return ", ".join(items[:shown]) + (f" (+{len(items) - shown} more)" if len(items) > shown else "")


def shape_mismatch(key: str, found: Sequence[int], wanted: Sequence[int]) -> str:
    """'key (checkpoint (4, 512) vs model (5, 512))': one entry of a shape-mismatch list."""
    return f"{key} (checkpoint {tuple(found)} vs model {tuple(wanted)})"


def key_problems(missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mismatched: Sequence[str] = ()) -> list[str]:
    """'N missing key(s): ...', 'N unexpected key(s): ...', 'N shape mismatch(es): ...' for each non-empty list.

    `mismatched` holds `shape_mismatch` entries; join the result with '; ' into one line of an error message.
    """
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {listing(mismatched)}")
    return problems
