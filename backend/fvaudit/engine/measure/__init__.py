"""Measuring what an attack changed (SPEC §3): Kendall-τ and τ-W on the scores, CLIP-δ and
CLIP-W on the top-k images' embeddings, top-k overlap, push-up success and accuracy; the
embedders that make the embeddings; the per-layer report; the measures of synthetic images.

The numeric measures are importable from here (``from fvaudit.engine.measure import
clip_delta``); the heavier pieces (embedders, report, synthetic) from their modules.
"""
from fvaudit.engine.measure.clip import clip_delta, clip_w, set_similarity
from fvaudit.engine.measure.kendall import (RowTop, kendall_row_top, kendall_tau, kendall_tau_matrix, kendall_tau_w,
                                            kendall_w_maxima, tau_upper_bound, tau_w_from_maxima)
from fvaudit.engine.measure.topk import accuracy, nan_aggregate, pushup_success, topk_overlap

__all__ = ["kendall_tau", "kendall_tau_matrix", "kendall_tau_w", "RowTop", "kendall_row_top", "kendall_w_maxima",
           "tau_w_from_maxima", "tau_upper_bound", "set_similarity", "clip_delta", "clip_w", "topk_overlap",
           "accuracy", "nan_aggregate", "pushup_success"]
