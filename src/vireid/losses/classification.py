"""Identity classification loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._precision import float32_math


@float32_math
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """mean_i sum_k -t_ik log softmax(logits_i)_k, t_i = (1 - eps) onehot(y_i) + eps / K.

    logits (B, K), labels (B,) long -> scalar. eps = 0 is plain softmax CE; eps = 0.1 is JSIA-ReID's
    label smoothing, which is exactly torch's `label_smoothing` (eps/K spread over all K classes,
    the true one included).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return F.cross_entropy(logits, labels.long(), label_smoothing=float(label_smoothing))
