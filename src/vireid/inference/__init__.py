"""Inference: the one path from a trained run and images to features (evaluation, extraction, export, demo)."""

from .embed import embed_images, embed_items, make_extractor, preprocess
from .extractor import FeatureExtractor, as_image_list, as_modalities
from .model import load_trained

__all__ = ["FeatureExtractor", "as_image_list", "as_modalities", "embed_images", "embed_items", "load_trained",
           "make_extractor", "preprocess"]
