"""`vireid bench`: methods x datasets x seeds, each cell an ordinary run directory, and one leaderboard.

See docs/bench.md. Importing this package does not import torch.
"""

from .launch import print_commands, run_bench, write_leaderboard_only
from .layout import BenchDir
from .reported import Reported, read_reported, setting_of
from .spec import BenchSpec, Cell, load_spec
from .stats import bootstrap_ci, paired_comparison

__all__ = ["BenchDir", "BenchSpec", "Cell", "Reported", "bootstrap_ci", "load_spec", "paired_comparison",
           "print_commands", "read_reported", "run_bench", "setting_of", "write_leaderboard_only"]
