"""Pictures and reports: rank lists (`render_ranklist`) and self-contained HTML reports (`write_report`)."""

from .ranklist import CORRECT, QUERY, WRONG, RankRow, Tile, render_ranklist
from .report import Block, render_report, write_report

__all__ = ["CORRECT", "QUERY", "WRONG", "Block", "RankRow", "Tile", "render_ranklist", "render_report",
           "write_report"]
