"""vireid.losses: every loss as a function with its formula in the docstring (float32 math inside)."""

from .classification import cross_entropy
from .distance import pairwise_euclidean
from .generative import (
    l1_reconstruction,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    nsgan_discriminator_loss,
    nsgan_generator_loss,
    one_way_kl,
    symmetric_kl,
    unit_kl,
)
from .triplet import (
    batch_hard_triplet,
    caj_triplet,
    cross_modality_triplet,
    hard_example_mining,
    weighted_pair_distances,
    weighted_regularized_triplet,
)

__all__ = [
    "cross_entropy", "pairwise_euclidean", "batch_hard_triplet", "caj_triplet", "cross_modality_triplet",
    "hard_example_mining", "weighted_pair_distances", "weighted_regularized_triplet",
    "lsgan_discriminator_loss", "lsgan_generator_loss", "l1_reconstruction", "symmetric_kl", "one_way_kl",
    "nsgan_discriminator_loss", "nsgan_generator_loss", "unit_kl",
]
