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
    widen_conv1_weight,
)
from .build import build_backbone
from .generative import (
    AdaIN2d,
    AdaINGenerator,
    AdaINMLP,
    CodeLayerNorm,
    ContentEncoder,
    ConvBlock,
    Decoder,
    LinearBlock,
    MultiScaleDiscriminator,
    ResBlock,
    ResBlocks,
    StyleEncoder,
    VAEGen,
    assign_adain_params,
    gaussian_init_,
    kaiming_init_,
    num_adain_params,
)
from .neck import BNNeck, Classifier
from .nonlocal_block import NonLocalBlock
from .pooling import GeM, GlobalAvgPool, build_pooling
from .pretrained import PretrainedReport, imagenet_cache_path, load_pretrained, read_state_dict_file

__all__ = [
    "ARCHS", "MODALITY_KEYS", "NON_LOCAL_COUNTS", "STAGES", "ModalitySpecific", "ResNetBackbone", "ResStage",
    "Stem", "widen_conv1_weight", "BNNeck", "Classifier", "NonLocalBlock", "GeM",
    "GlobalAvgPool", "build_backbone", "build_pooling", "load_pretrained", "PretrainedReport", "imagenet_cache_path",
    "read_state_dict_file",
    "AdaIN2d", "AdaINGenerator", "AdaINMLP", "CodeLayerNorm", "ConvBlock", "Decoder", "LinearBlock",
    "MultiScaleDiscriminator", "ResBlock", "ResBlocks", "StyleEncoder", "assign_adain_params", "gaussian_init_",
    "num_adain_params", "ContentEncoder", "VAEGen", "kaiming_init_",
]

