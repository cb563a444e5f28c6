"""The synthetic cross-modality person dataset (SynthVI): `generate(layout, out, ...)`.

See docs/synthetic.md. Importing this package does not import torch.
"""

from .generator import (
    GENERATOR,
    LAYOUTS,
    MANIFEST,
    VERSION,
    SynthResult,
    generate,
    read_manifest,
    render_shot,
    resolve_arguments,
    shot_scene,
    synthesize,
)
from .layouts import DEFAULTS

__all__ = [
    "DEFAULTS", "GENERATOR", "LAYOUTS", "MANIFEST", "VERSION", "SynthResult", "generate", "read_manifest",
    "render_shot", "resolve_arguments", "shot_scene", "synthesize",
]
