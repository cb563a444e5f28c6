"""A method a user registers at run time, defined only here (no preset config), passes the same contract suite
as the built-in methods: the contract tests are imported and run with this module's `method_name`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import tiny_config
from tests.test_method_contract import (  # noqa: F401  (collected here, with this module's method_name)
    test_embed_is_normalised_with_documented_dims,
    test_save_load_round_trip_reproduces_embed,
    test_training_step_is_finite_and_updates,
    test_wrong_number_of_classes_is_refused,
)
from vireid import register_method
from vireid.core import Batch, Modality
from vireid.losses import cross_entropy
from vireid.methods import Method, MethodOptions, Stepper, available_methods
from vireid.models import BNNeck, Classifier
from vireid.utils.tensors import modality_codes

NAME = "toy_user_method"


@dataclass
class ToyOptions(MethodOptions):
    """A user's options: every field has a default, so no preset is needed."""

    name: str = NAME
    width: int = 8


@register_method(NAME)
class ToyMethod(Method):
    """Two tiny conv stems (one per modality), average pooling, BN-neck, CE."""

    Options = ToyOptions

    def __init__(self, cfg, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        w = cfg.method.width
        self.stems = nn.ModuleList([nn.Conv2d(3, w, 3, padding=1) for _ in Modality])
        self.neck = BNNeck(w, bias_frozen=True, weight_init="kaiming")
        self.classifier = Classifier(w, num_classes, bias=False, init_std=0.001)
        self.dim = w

    def head_parameters(self):
        return list(self.neck.parameters()) + list(self.classifier.parameters())

    def forward(self, images: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = torch.stack([stem(images) for stem in self.stems])  # (2, B, w, H, W)
        pooled = maps[codes.long(), torch.arange(images.shape[0])].mean(dim=(2, 3))
        return pooled, self.neck(pooled)

    def training_step(self, batch: Batch, step: Stepper) -> dict[str, float]:
        _, feat = self(batch.images, batch.modalities)
        loss = cross_entropy(self.classifier(feat), batch.labels)
        step(loss, "main", parts={"ce": loss})
        return {"loss": loss.item()}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality) -> dict[str, torch.Tensor]:
        pooled, feat = self(images, modality_codes(modality, images.shape[0], images.device))
        return {"bn": F.normalize(feat, dim=1), "pool": F.normalize(pooled, dim=1)}

    def feature_dims(self) -> dict[str, int]:
        return {"bn": self.dim, "pool": self.dim}


@pytest.fixture
def method_name() -> str:
    return NAME


def test_the_user_method_is_registered_and_has_no_preset():
    assert NAME in available_methods()
    cfg = tiny_config(NAME)
    assert cfg.method == ToyOptions() and cfg.model.arch == "resnet18"  # defaults, shrunk like every method
