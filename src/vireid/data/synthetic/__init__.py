"""The synthetic cross-modality person dataset (SynthVI)."""
