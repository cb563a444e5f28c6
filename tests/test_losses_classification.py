"""Cross-entropy with optional label smoothing (JSIA's definition)."""

from __future__ import annotations

import math

import pytest
import torch

from vireid.losses import cross_entropy


def test_plain_cross_entropy_hand_value():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    expected = (-(2 - math.log(math.exp(2) + 2)) + math.log(3)) / 2
    assert cross_entropy(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_label_smoothing_is_jsia_formula():
    # JSIA: t = (1 - eps) onehot + eps / K ; loss = mean_i sum_k -t_ik log p_ik
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    eps, k = 0.1, 5
    target = (1 - eps) * torch.nn.functional.one_hot(labels, k).double() + eps / k
    expected = (-target * torch.log_softmax(logits, dim=1)).sum(1).mean()
    got = cross_entropy(logits, labels, label_smoothing=eps)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    assert got.item() != pytest.approx(cross_entropy(logits, labels).item(), rel=1e-3)


def test_cross_entropy_float32_under_autocast_and_bad_eps():
    logits = torch.randn(4, 7)
    labels = torch.tensor([1, 2, 3, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cross_entropy(logits.bfloat16(), labels)
    assert got.dtype == torch.float32
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(logits, labels, label_smoothing=1.5)
