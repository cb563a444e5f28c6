"""Run directories: the `RunDir` layout value, checkpoints, metrics logs."""

from .checkpoint import load_model_state, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .run_dir import MetricsLog, RunDir, environment, git_revision, training_time

__all__ = ["MetricsLog", "RunDir", "environment", "git_revision", "load_model_state", "read_checkpoint",
           "rng_state", "save_checkpoint", "set_rng_state", "training_time"]
