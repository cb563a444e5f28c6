"""vireid.models: building blocks only (backbones, pooling, BN-neck, non-local); no losses, no training."""

from .backbone import (
    ARCHS,
    MODALITY_KEYS,
    NON_LOCAL_COUNTS,
    STAGES,
    ModalitySpecific,
    ResNetBackbone,
    ResStage,
    Stem,
    modality_codes_of,
    widen_conv1_weight,
)
from .neck import BNNeck, Classifier
from .nonlocal_block import NonLocalBlock
from .pooling import GeM, GlobalAvgPool, build_pooling

__all__ = [
    "ARCHS", "MODALITY_KEYS", "NON_LOCAL_COUNTS", "STAGES", "ModalitySpecific", "ResNetBackbone", "ResStage",
    "Stem", "modality_codes_of", "widen_conv1_weight", "BNNeck", "Classifier", "NonLocalBlock", "GeM",
    "GlobalAvgPool", "build_pooling", "load_pretrained",
]


def __getattr__(name: str):
    # pretrained.py is imported lazily: it is only needed when weights are loaded.
    if name == "load_pretrained":
        from .pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'vireid.models' has no attribute {name!r}")
