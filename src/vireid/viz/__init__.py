"""Pictures and reports: rank lists (`render_ranklist`), translated images (`render_translations`) and
self-contained HTML reports (`write_report`)."""

from .ranklist import CORRECT, QUERY, WRONG, RankRow, Tile, render_ranklist
from .report import Block, render_report, write_report
from .translations import render_translations, translation_rows

__all__ = ["CORRECT", "QUERY", "WRONG", "Block", "RankRow", "Tile", "render_ranklist", "render_report",
           "render_translations", "translation_rows", "write_report"]
