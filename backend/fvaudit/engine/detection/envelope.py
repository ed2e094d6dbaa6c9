"""The benign envelope (issue 24, SPEC §6/§8.5): how far honest fine-tuning moves a unit's
explanation *for how far it moved the model*, and a suspect's excess over that.

Why: calibrating each measure against the pooled values of a few benign fine-tunes says
"benign = moved no more than those did". An honest vendor's hotter or longer fine-tune moves
every unit's top-k further and is then indistinguishable from an attack (every unit beyond
every benign value). What separates a manipulation is different: it changes the dataset
examples far more than an honest fine-tune that moved the model *as much*. So each measure is
modelled against the size of the model's change, over a benign family that spans recipes:

* the **size** of a layer's change is the relative L2 distance of all the parameters that
  produce it (every conv/linear up to and including the layer's producer,
  :func:`fvaudit.engine.detection.run.cumulative_params`): the layer's activations depend on
  all of them, and an honest fine-tune's size says how far its units may drift;
* the **envelope** of a measure (:func:`fit_envelope`): with ``v`` per unit and
  ``x = log(size)`` per model, a line ``v = a + b·x`` through the benign models' per-model
  medians (least squares over models, ``b ≥ 0``: a bigger change never promises a smaller
  drift), and each benign model's residuals around it. A suspect unit's **excess** is its
  residual at the suspect's own size; its suspicion is the residual's mid-rank empirical CDF
  among the residuals of the benign models *of about the suspect's size* (a Gaussian kernel
  in log size, :meth:`Envelope.rank`), because how widely units scatter grows with the size.
* the **reach** of the family (:func:`reach`) is the range of sizes with at least one benign
  model near (kernel weights summed ≥ :data:`MIN_NEAR`): a suspect outside it is *out of
  calibration* (the envelope would be extrapolated); the detection says so instead of
  calling it manipulated.

A model-level shift (every unit a little more than the line says) is common to all units of
one model, so units of one model are not independent draws: :func:`overdispersion` fits how
much the benign models' flagged counts vary beyond the binomial (leave-one-model-out), and
:func:`count_p_value` tests a suspect's count with that beta-binomial, not the binomial that
read p ≈ 1e-6 from 20 of 114 units moving in a gentle cross-entropy fine-tune.

**Localisation** (:func:`localise`): inside one suspect, a unit's residual against the
suspect's own median residual: which units moved beyond what the model's overall change
explains, so a partial attack is found unit by unit.

Pure numpy / scipy; no model, DB or web.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

#: the measures that cannot be negative, and so the floor the line is clamped to (a unit
#: that did not move has 0: CLIP-δ, τ-drop, overlap loss, filter distance all start there).
#: Measures not listed (``synthetic_change``, a z-like score) have no floor.
FLOORS: dict[str, float] = {"clip_delta": 0.0, "tau_drop": 0.0, "overlap_loss": 0.0, "weight_distance": 0.0}
#: the smallest size a model change is taken to have (an identical model has size 0; log needs > 0)
MIN_SIZE = 1e-6


class EnvelopeError(ValueError):
    """An envelope that cannot be fitted or used as asked (which argument, and why)."""


def transform(measure: str, values: Any) -> np.ndarray:
    """The values a measure's envelope is fitted on: the measure itself, as float64. (A log
    transform was tried on the tuning variants and dropped: it spreads the many near-zero values
    of a gentle fine-tune, 0 vs 0.03 CLIP-δ, as widely as 0.03 vs 1, and hid a push-down's
    0.42 median CLIP-δ among them: 40 of 114 units flagged against 78 without it.)"""
    return np.asarray(values, dtype=np.float64)


def _log_size(size: Any) -> np.ndarray:
    s = np.asarray(size, dtype=np.float64)
    if np.isnan(s).any() or (s < 0).any():
        raise EnvelopeError(f"size: a model change's size must be a number ≥ 0, got {size}")
    return np.log(np.maximum(s, MIN_SIZE))


#: the bandwidth of the size kernel, in log size: benign models a factor 2 larger or smaller
#: than the suspect weigh exp(−½) ≈ 0.61, a factor 4 ≈ 0.14 (see :meth:`Envelope.weights`)
BANDWIDTH = float(np.log(2.0))
#: the fewest benign models (kernel weights summed) near a suspect's size for a judgement
MIN_NEAR = 1.0


@dataclass
class Envelope:
    """One measure's benign envelope on one layer (see the module docstring).

    Residuals are kept per benign model: a suspect is compared with the benign models of
    about its own size (:meth:`weights`), because how widely units scatter around the line
    depends on the size too (a gentle fine-tune leaves most top-k unchanged, at 0; a hot one
    spreads them)."""

    measure: str
    intercept: float
    slope: float
    by_model: list[np.ndarray]       # per benign model, its units' sorted residuals
    sizes: np.ndarray                # the benign models' sizes
    medians: np.ndarray              # the benign models' median transformed value (the line was fitted to them)

    @property
    def residuals(self) -> np.ndarray:
        """Every benign unit's residual, sorted."""
        return np.sort(np.concatenate(self.by_model))

    @property
    def reach(self) -> float:
        """The largest model change the family holds."""
        return float(self.sizes.max())

    def weights(self, size: float) -> np.ndarray:
        """Each benign model's weight for a suspect of ``size``: a Gaussian kernel in log size,
        ``exp(−½ ((log size − log size_i) / BANDWIDTH)²)``. A suspect smaller than every benign
        model is weighed as one of the smallest's size: units scatter less after a smaller
        change, so the smallest benign models' scatter is a generous bound (no false alarm),
        while the line, lower there, still expects little change (a small change that moved
        the explanations a lot stands out)."""
        ls = np.log(np.maximum(self.sizes, MIN_SIZE))
        d = (max(float(_log_size(size)), float(ls.min())) - ls) / BANDWIDTH
        return np.exp(-0.5 * d ** 2)

    def near(self, size: float) -> float:
        """How many benign models lie near ``size`` (the kernel weights summed): below
        :data:`MIN_NEAR` the family says nothing about a change of that size."""
        return float(self.weights(size).sum())

    def expected(self, size: float) -> float:
        """The transformed value the line gives at ``size`` (a benign model's median unit), never
        below the measure's floor (:data:`FLOORS`: a unit that did not move): extrapolated to a
        tiny change the line would otherwise expect less than nothing, and flag unchanged units."""
        y = float(self.intercept + self.slope * _log_size(size))
        floor = FLOORS.get(self.measure)
        return y if floor is None else max(y, floor)

    def expected_value(self, size: float) -> float:
        """The line at ``size`` in the measure's own units (the median benign unit's value)."""
        return self.expected(size)

    def upper_value(self, size: float, q: float = 0.95) -> float:
        """The ``q`` quantile of benign units near ``size`` in the measure's own units (the envelope's top)."""
        return self.expected(size) + self.residual_quantile(size, q)

    def residual_quantile(self, size: float, q: float) -> float:
        """The ``q`` quantile of the benign residuals near ``size``: kernel weights as in :meth:`rank`,
        each model's units sharing its weight; the mean of the lower and upper weighted quantiles, so
        equal weights give the ordinary median at q = ½."""
        w = self.weights(size)
        res = np.concatenate(self.by_model)
        ww = np.concatenate([np.full(r.size, wi / r.size) for r, wi in zip(self.by_model, w)])
        order = np.argsort(res, kind="stable")
        cum = np.cumsum(ww[order])
        at, tol = q * cum[-1], 1e-12 * cum[-1]
        lo = min(int(np.searchsorted(cum, at - tol, side="left")), res.size - 1)
        hi = min(int(np.searchsorted(cum, at + tol, side="right")), res.size - 1)
        return float(0.5 * (res[order][lo] + res[order][hi]))

    def residual(self, values: Any, size: float) -> np.ndarray:
        """Each unit's excess over the line at the model's size (NaN stays NaN)."""
        return transform(self.measure, values) - self.expected(size)

    def rank(self, residuals: Any, size: float) -> np.ndarray:
        """The kernel-weighted, smoothed mid-rank CDF of ``residuals`` among the benign ones:
        ``F(r) = (Σ_i w_i·(#{b_i < r} + ½·#{b_i = r}) / n_i · n̄ + ½) / (Σ_i w_i · n̄ + 1)`` over
        benign models i (n_i units, weight w_i at ``size``, n̄ their mean unit count). With equal
        weights this is :meth:`~fvaudit.engine.detection.evidence.Calibration.suspicion`'s rule
        over the pooled residuals; beyond every benign residual it stays below 1."""
        r = np.asarray(residuals, dtype=np.float64)
        w = self.weights(size)
        nbar = float(np.mean([b.size for b in self.by_model]))
        num = np.zeros_like(r)
        for b, wi in zip(self.by_model, w):
            below = np.searchsorted(b, r, side="left")
            at = np.searchsorted(b, r, side="right") - below
            num += wi * (below + 0.5 * at) / b.size * nbar
        f = (num + 0.5) / (w.sum() * nbar + 1.0)
        return np.where(np.isnan(r), np.nan, f)

    def suspicion(self, values: Any, size: float) -> np.ndarray:
        """Calibrated suspicion of each unit's excess: its residual's rank among the benign
        residuals of models near ``size`` (:meth:`rank`)."""
        return self.rank(self.residual(values, size), size)

    def to_dict(self) -> dict:
        res = self.residuals
        return {"measure": self.measure, "intercept": self.intercept, "slope": self.slope,
                "floor": FLOORS.get(self.measure), "sizes": self.sizes.tolist(), "medians": self.medians.tolist(),
                "residual_quantiles": {str(q): float(np.quantile(res, q)) for q in (0.5, 0.95, 0.99)},
                "n_residuals": int(res.size)}


def fit_envelope(measure: str, sizes: Sequence[float], values: Sequence[Any]) -> Envelope:
    """Fit one measure's envelope over benign models: ``sizes[i]`` the size of model i's
    change, ``values[i]`` its units' values [J_i] (NaN for dead units or undefined values,
    dropped). The line goes through the per-model medians of ``transform(values)`` against
    ``log(size)`` by least squares over models; with fewer than two distinct sizes, or a
    negative fitted slope, the slope is 0 and the line is their mean. Each benign model's
    residuals around the line are kept (sorted) for :meth:`Envelope.suspicion`.
    """
    if len(sizes) != len(values):
        raise EnvelopeError(f"sizes: {len(sizes)} sizes for {len(values)} models")
    if len(sizes) < 1:
        raise EnvelopeError("values: no benign model to fit the envelope to")
    x = _log_size(sizes)
    ys = [transform(measure, v).ravel() for v in values]
    ys = [y[~np.isnan(y)] for y in ys]
    keep = [i for i, y in enumerate(ys) if y.size]
    if not keep:
        raise EnvelopeError(f"values[{measure!r}]: no finite benign value to fit the envelope to")
    x, ys = x[keep], [ys[i] for i in keep]
    med = np.array([np.median(y) for y in ys])
    slope = 0.0
    if np.unique(x).size >= 2:
        xc = x - x.mean()
        slope = max(float((xc * (med - med.mean())).sum() / (xc ** 2).sum()), 0.0)
    intercept = float(med.mean() - slope * x.mean())
    by_model = [np.sort(y - (intercept + slope * xi)) for y, xi in zip(ys, x)]
    return Envelope(measure, intercept, slope, by_model, np.exp(x), med)


def reach(sizes: Sequence[float]) -> tuple[float, float]:
    """The family's calibrated range: from its smallest size up to the largest size with at
    least :data:`MIN_NEAR` benign models near (kernel weights summed, on a grid in log size;
    the largest benign size when no size has that many). Only the upper end bounds a judgement: a suspect below the range is weighed as the
    smallest benign models (:meth:`Envelope.weights`)."""
    ls = np.log(np.maximum(np.asarray(sizes, dtype=np.float64), MIN_SIZE))
    grid = np.linspace(ls.min(), ls.max() + 4 * BANDWIDTH, 2001)
    near = np.exp(-0.5 * ((grid[:, None] - ls[None, :]) / BANDWIDTH) ** 2).sum(axis=1)
    ok = grid[near >= MIN_NEAR]
    if ok.size == 0:
        return float(np.exp(ls.min())), float(np.exp(ls.max()))
    return float(np.exp(ls.min())), float(np.exp(max(ok.max(), ls.max())))


def score_units(envelopes: Mapping[str, Envelope], values: Mapping[str, Any], size: float) -> dict[str, np.ndarray]:
    """Per measure, each unit's suspicion against its envelope at ``size``."""
    missing = set(envelopes) - set(values)
    if missing:
        raise EnvelopeError(f"values: no value for the measures {sorted(missing)}")
    return {m: env.suspicion(values[m], size) for m, env in envelopes.items()}


# =========================================================================== model-level shifts

@dataclass(frozen=True)
class Overdispersion:
    """How much a benign model's share of flagged units varies from model to model (beta-binomial).

    ``rate``: the mean share of flagged units among benign models (at least the nominal
    ``1 − unit threshold``); ``rho``: the intra-model correlation (0 = the binomial: units
    independent). Fitted by :func:`overdispersion` on leave-one-model-out counts.
    """

    rate: float
    rho: float
    n_models: int

    def to_dict(self) -> dict:
        return {"rate": self.rate, "rho": self.rho, "n_models": self.n_models}


def overdispersion(counts: Sequence[tuple[int, int]], nominal: float) -> Overdispersion:
    """Fit the beta-binomial of benign flagged counts ``(flagged, units)`` per model by the
    method of moments: ``rate = max(Σ flagged / Σ units, nominal)``; ``rho`` from the excess of
    the rates' sample variance (ddof 1) over the binomial's ``rate(1 − rate)/n̄``:
    ``rho = (var − rate(1−rate)/n̄) / (rate(1−rate)(1 − 1/n̄))`` clipped to [0, 0.95].
    With fewer than 2 models ``rho`` is 0 (no spread can be seen)."""
    if not 0.0 < nominal < 1.0:
        raise EnvelopeError(f"nominal: must lie in (0, 1), got {nominal}")
    c = np.array([x[0] for x in counts], dtype=np.float64)
    n = np.array([x[1] for x in counts], dtype=np.float64)
    if (n <= 0).any() or (c < 0).any() or (c > n).any():
        raise EnvelopeError(f"counts: each (flagged, units) needs 0 ≤ flagged ≤ units and units > 0, got {counts}")
    if c.size == 0:
        return Overdispersion(nominal, 0.0, 0)
    rate = max(float(c.sum() / n.sum()), nominal)
    rho = 0.0
    if c.size >= 2:
        nbar = float(n.mean())
        var = float(np.var(c / n, ddof=1))
        base = rate * (1.0 - rate)
        rho = (var - base / nbar) / (base * (1.0 - 1.0 / nbar)) if nbar > 1 else 0.0
        rho = float(min(max(rho, 0.0), 0.95))
    return Overdispersion(rate, rho, int(c.size))


def count_p_value(flagged: int, n: int, od: Overdispersion) -> float:
    """P(≥ flagged of n units flagged) for a benign model: beta-binomial with ``od`` (binomial when rho = 0)."""
    if n <= 0:
        return 1.0
    if flagged <= 0:
        return 1.0
    if od.rho <= 0.0:
        return float(stats.binom.sf(flagged - 1, n, od.rate))
    ab = (1.0 - od.rho) / od.rho
    return float(stats.betabinom.sf(flagged - 1, n, od.rate * ab, (1.0 - od.rate) * ab))


# =========================================================================== localisation

def localise(envelopes: Mapping[str, Envelope], values: Mapping[str, Any], size: float) -> dict[str, np.ndarray]:
    """Per measure, each unit's suspicion after the suspect's own model-level shift is taken out:
    its residual minus the median residual of the suspect's live units, plus the benign residuals'
    median, ranked among the benign residuals. A unit scores high when it moved beyond what the
    model's overall change explains (a partial attack's units), whatever the whole model did."""
    out = {}
    for m, env in envelopes.items():
        r = env.residual(values[m], size)
        if np.isnan(r).all():
            out[m] = r
            continue
        shifted = r - np.nanmedian(r) + env.residual_quantile(size, 0.5)
        out[m] = env.rank(shifted, size)
    return out
