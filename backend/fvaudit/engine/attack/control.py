"""The α controller and the budget selector (SPEC §2): α follows the accuracy drop on the
evaluation subset; which state is "within budget" is decided on the full validation set.

The subset that drives α is noise, not truth, so :class:`BudgetSelector` confirms a subset
"within" on the full set at once and keeps the states the subset called "over" as
candidates, re-evaluated on the full set (latest first) at the end.
"""
from __future__ import annotations

from dataclasses import dataclass


import torch

@dataclass
class AlphaEvent:
    """One evaluation point (SPEC §2). ``accuracy``/``drop_pp`` are what the α controller read, on
    ``n_images`` images (the evaluation subset); ``full_*`` are the same state on the full
    validation set, None when that state was never measured there (it could not be selected)."""

    step: int
    alpha_before: float
    alpha_after: float
    accuracy: float
    drop_pp: float
    within_budget: bool                  # the controller's reading (subset)
    n_images: int = 0
    full_accuracy: float | None = None
    full_drop_pp: float | None = None
    full_n_images: int | None = None


class AlphaController:
    """Dynamic α (SPEC §2, after Davari et al. 2022): when the measured drop exceeds the budget,
    α ← α / factor, otherwise α ← min(factor · α, α_max). The threshold is the budget itself
    (``acc_budget_pp``), never a second constant. A fixed α (``fixed`` not None) never moves."""

    def __init__(self, budget_pp: float, alpha_max: float, factor: float = 2.0, fixed: float | None = None):
        self.budget_pp, self.alpha_max, self.factor, self.fixed = budget_pp, alpha_max, factor, fixed

    def update(self, alpha: float, drop_pp: float) -> float:
        if self.fixed is not None:
            return alpha
        return alpha / self.factor if drop_pp > self.budget_pp + 1e-9 else min(self.factor * alpha, self.alpha_max)


Weights = dict  # str -> torch.Tensor, on the CPU


class BudgetSelector:
    """Which evaluated state is "within budget" (SPEC §2): decided on the full validation set.

    ``observe`` is called at each evaluation with the controller's (subset) reading:

    * subset says within → the state is measured on the full set now; within there → it
      becomes the selection (older candidates can no longer be the latest within: dropped);
      over there → it is not selectable (the case a subset-only rule gets wrong);
    * subset says over → the state may still be within on the full set: its weights are kept
      as a candidate (at most ``max_candidates``, the oldest dropped first).

    ``finish`` re-evaluates the candidates newer than the selection, latest first, and
    selects the first within budget. ``full_accuracy(weights)`` measures a state on the full
    set; when the subset *is* the full set, readings are used as they are (no re-evaluation).
    """

    def __init__(self, acc_init_full: float, budget_pp: float, full_accuracy, subset_is_full: bool,
                 n_full: int, max_candidates: int = 8):
        self.acc_init_full, self.budget_pp = acc_init_full, budget_pp
        self.full_accuracy, self.subset_is_full, self.n_full = full_accuracy, subset_is_full, n_full
        self.max_candidates = max_candidates
        self.selected_step, self.selected_acc = 0, acc_init_full
        self.selected_weights: Weights | None = None      # None = θ_init
        self.candidates: dict[int, Weights] = {}          # step -> weights, subset said over
        self.full_evaluations = 0

    def _measure(self, ev: AlphaEvent, weights: Weights) -> bool:
        if self.subset_is_full:
            acc = ev.accuracy
        else:
            acc = self.full_accuracy(weights)
            self.full_evaluations += 1
        ev.full_accuracy, ev.full_drop_pp, ev.full_n_images = acc, self.acc_init_full - acc, self.n_full
        return ev.full_drop_pp <= self.budget_pp + 1e-9

    def _select(self, ev: AlphaEvent, weights: Weights) -> None:
        self.selected_step, self.selected_acc, self.selected_weights = ev.step, ev.full_accuracy, weights
        self.candidates = {s: w for s, w in self.candidates.items() if s > ev.step}

    def observe(self, ev: AlphaEvent, weights: Weights) -> list[int]:
        """Record one evaluation; returns the candidate steps dropped for the size bound."""
        if ev.within_budget or self.subset_is_full:
            if self._measure(ev, weights):
                self._select(ev, weights)
            return []
        self.candidates[ev.step] = weights
        dropped = []
        while len(self.candidates) > self.max_candidates:
            oldest = min(self.candidates)
            dropped.append(oldest)
            del self.candidates[oldest]
        return dropped

    def finish(self, trajectory: list[AlphaEvent]) -> None:
        by_step = {e.step: e for e in trajectory}
        for step in sorted(self.candidates, reverse=True):
            if step <= self.selected_step:
                break
            ev = by_step[step]
            if ev.full_accuracy is None and self._measure(ev, self.candidates[step]):
                self._select(ev, self.candidates[step])
                break
        self.candidates = {}


def weights_of(module: torch.nn.Module) -> Weights:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
