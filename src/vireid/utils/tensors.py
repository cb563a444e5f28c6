"""The one conversion of modalities to the integer codes used inside tensors (0 visible, 1 infrared)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core import Modality


def modality_codes(modality: Modality | str | torch.Tensor | Sequence[Modality | int], n: int,
                   device: torch.device | str | None = None, *, dtype: torch.dtype = torch.long,
                   per_item: bool = False, what: str = "") -> torch.Tensor:
    """A (n,) tensor of `Modality.code`s: one Modality (or name) broadcast to n, or one code/Modality per item.

    `per_item=True` refuses a single Modality (a loss that compares items across modalities); `what`
    names the items in the count-mismatch error (default "n images").
    """
    what = what or f"{n} images"
    if isinstance(modality, (Modality, str)):
        if per_item:
            raise ValueError(f"need one modality code per item of {what} (a (B,) tensor), got the single "
                             f"modality {modality}")
        return torch.full((n,), Modality.parse(modality).code, dtype=dtype, device=device)
    if isinstance(modality, (list, tuple)):
        values: Any = [m.code if isinstance(m, Modality) else Modality.from_code(int(m)).code for m in modality]
        codes = torch.tensor(values, dtype=dtype, device=device)
    else:
        codes = torch.as_tensor(modality, device=device).reshape(-1).to(dtype)
    if codes.numel() != n:
        raise ValueError(f"got {codes.numel()} modality codes for {what}")
    return codes
