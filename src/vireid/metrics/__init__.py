"""Ranking metrics (CMC, mAP, mINP) under the VI-ReID filter rules, re-ranking and flip fusion."""

from .flip import FLIP_STYLES, fuse_flip
from .ranking import REPORT_RANKS, RankingMetrics, evaluate_ranking, rank_queries, require_valid_query, summarize
from .rerank import k_reciprocal_rerank, k_reciprocal_sets

__all__ = [
    "FLIP_STYLES", "REPORT_RANKS", "RankingMetrics", "evaluate_ranking", "fuse_flip", "k_reciprocal_rerank",
    "k_reciprocal_sets", "rank_queries", "require_valid_query", "summarize",
]
