"""The benign envelope (issue 24) on hand-made numbers: the line through the benign models'
medians, the residual ranks, the reach, the beta-binomial count test (scipy is the reference)
and the localisation that takes a model's own shift out."""
import math

import numpy as np
import pytest
from scipy import stats

from fvaudit.engine.detection import envelope, evidence


def test_line_through_medians_and_residual_ranks():
    # identity transform (synthetic_change is not logged); log sizes 0 and 1
    env = envelope.fit_envelope("synthetic_change", [1.0, math.e], [[0.0, 2.0], [2.0, 4.0]])
    assert env.slope == pytest.approx(2.0) and env.intercept == pytest.approx(1.0)
    assert env.residuals.tolist() == pytest.approx([-1.0, -1.0, 1.0, 1.0])
    assert env.reach == pytest.approx(math.e)
    # at log size 0.5 the line says 2: residuals 0 and 3; mid-rank CDF (2 + 0 + ½)/5 and (4 + ½)/5
    assert env.residual([2.0, 5.0], math.exp(0.5)).tolist() == pytest.approx([0.0, 3.0])
    # kernel-weighted mid-rank CDF: both models weigh w at log size ½; 0 sits mid-rank in each
    # model ([-1, 1]), 3 beyond both: (Σ w·(rank)·n̄/n_i + ½) / (Σ w·n̄ + 1) with n̄ = 2
    w = math.exp(-0.5 * (0.5 / math.log(2)) ** 2)
    assert env.suspicion([2.0, 5.0, np.nan], math.exp(0.5))[:2].tolist() == pytest.approx(
        [(2 * w + 0.5) / (4 * w + 1), (4 * w + 0.5) / (4 * w + 1)])
    assert np.isnan(env.suspicion([np.nan], 1.0)[0])


def test_same_excess_at_a_bigger_size_is_not_more_suspicious():
    env = envelope.fit_envelope("synthetic_change", [1.0, math.e], [[0.0, 2.0], [2.0, 4.0]])
    # a unit at value 4 is unusual for a small change, ordinary for a large one
    assert env.suspicion([4.0], 1.0)[0] > env.suspicion([4.0], math.e)[0]
    # residual 1 at log size 1: each model ranks it (1 + ½)/2; weights exp(−½(1/ln 2)²) and 1, n̄ = 2
    w = math.exp(-0.5 * (1 / math.log(2)) ** 2)
    assert env.suspicion([4.0], math.e)[0] == pytest.approx(((w + 1) * 0.75 * 2 + 0.5) / ((w + 1) * 2 + 1))


def test_kernel_weights_compare_a_suspect_with_models_of_its_own_size():
    # a small model whose units barely scatter, a large one whose units scatter widely (flat line: medians 0)
    env = envelope.fit_envelope("synthetic_change", [0.01, 1.0], [[-0.1, 0.0, 0.1], [-3.0, 0.0, 3.0]])
    assert env.slope == pytest.approx(0.0) and env.intercept == pytest.approx(0.0)
    # a unit 2 above the line is far out for a small change, ordinary for a large one
    # small model: 2 lies beyond all 3 of its residuals, (3 + ½)/(3 + 1) with the large model's weight ≈ 0;
    # large model: 2 lies above 2 of its 3, (2 + ½)/(3 + 1)
    assert env.suspicion([2.0], 0.01)[0] == pytest.approx(3.5 / 4, abs=1e-3)
    assert env.suspicion([2.0], 1.0)[0] == pytest.approx(2.5 / 4, abs=1e-3)
    # smaller than every benign model: weighed as the smallest (its scatter bounds a smaller change's)
    assert env.weights(1e-4).tolist() == pytest.approx(env.weights(0.01).tolist())
    assert env.weights(0.01).tolist() == pytest.approx([1.0, math.exp(-0.5 * (math.log(100) / math.log(2)) ** 2)])
    assert env.near(0.01) == pytest.approx(sum(env.weights(0.01)))
    lo, hi = envelope.reach([0.01, 1.0])
    # one model alone has weight 1 only at its own size: the range ends at the largest model
    assert lo == pytest.approx(0.01) and hi == pytest.approx(1.0, rel=0.01)
    lo2, hi2 = envelope.reach([0.1, 0.1, 0.1])       # three models at one size reach a factor 2^√(2 ln 3) up
    assert lo2 == pytest.approx(0.1) and hi2 == pytest.approx(0.1 * 2 ** math.sqrt(2 * math.log(3)), rel=0.01)


def test_slope_never_negative_and_one_size_gives_a_flat_line():
    env = envelope.fit_envelope("synthetic_change", [1.0, math.e], [[3.0, 3.0], [1.0, 1.0]])
    assert env.slope == 0.0 and env.intercept == pytest.approx(2.0)
    flat = envelope.fit_envelope("synthetic_change", [0.5, 0.5], [[1.0], [3.0]])
    assert flat.slope == 0.0 and flat.intercept == pytest.approx(2.0)


def test_floor_and_dead_units():
    env = envelope.fit_envelope("clip_delta", [0.1, 1.0], [[0.01, np.nan, 0.03], [0.2, 0.4]])
    # medians 0.02 and 0.3 at log sizes ln 0.1 and 0: slope 0.28 / ln 10 per unit of log size
    assert env.slope == pytest.approx(0.28 / math.log(10)) and env.intercept == pytest.approx(0.3)
    # extrapolated to a tiny change the line would go below 0: a non-negative measure's floor holds it
    assert env.expected(1e-4) == 0.0 and env.expected(1.0) == pytest.approx(0.3)
    assert sum(r.size for r in env.by_model) == 4                       # the dead unit's NaN dropped
    with pytest.raises(envelope.EnvelopeError, match="no finite benign value"):
        envelope.fit_envelope("clip_delta", [0.1], [[np.nan]])
    with pytest.raises(envelope.EnvelopeError, match="size"):
        envelope.fit_envelope("clip_delta", [-1.0], [[0.1]])


def test_overdispersion_by_moments():
    od = envelope.overdispersion([(5, 100), (5, 100)], 0.05)
    assert (od.rate, od.rho) == (pytest.approx(0.05), 0.0)
    od = envelope.overdispersion([(0, 100), (20, 100)], 0.05)
    assert od.rate == pytest.approx(0.1)
    assert od.rho == pytest.approx((0.02 - 0.09 / 100) / (0.09 * 0.99))
    # the nominal rate is a floor: clean models that flag fewer units than chance do not lower it
    assert envelope.overdispersion([(0, 100), (1, 100)], 0.05).rate == 0.05
    assert envelope.overdispersion([(3, 50)], 0.05).rho == 0.0          # one model shows no spread


def test_count_p_value_matches_scipy():
    od0 = envelope.Overdispersion(0.05, 0.0, 3)
    assert envelope.count_p_value(20, 114, od0) == pytest.approx(stats.binom.sf(19, 114, 0.05))
    od = envelope.Overdispersion(0.1, 0.2, 3)
    a, b = 0.1 * 4.0, 0.9 * 4.0
    assert envelope.count_p_value(20, 114, od) == pytest.approx(stats.betabinom.sf(19, 114, a, b))
    # 20 of 114 units: extreme for independent units, ordinary when models shift as wholes
    assert envelope.count_p_value(20, 114, od0) < 1e-5 < 0.05 < envelope.count_p_value(20, 114, od)
    assert envelope.count_p_value(0, 114, od) == 1.0


def test_localise_takes_the_models_own_shift_out():
    env = envelope.fit_envelope("synthetic_change", [1.0, math.e], [[0.0, 2.0], [2.0, 4.0]])
    # the suspect sits 5 above the line everywhere, one unit 8 above: only that unit is localised
    vals = np.array([2.0, 2.0, 2.0, 5.0]) + 5.0
    loc = envelope.localise({"synthetic_change": env}, {"synthetic_change": vals}, math.exp(0.5))
    w = math.exp(-0.5 * (0.5 / math.log(2)) ** 2)
    mid, top = (2 * w + 0.5) / (4 * w + 1), (4 * w + 0.5) / (4 * w + 1)
    # shifted by the suspect's median residual (5) back to the benign median (0): 0, 0, 0, 3
    assert loc["synthetic_change"].tolist() == pytest.approx([mid, mid, mid, top])
    assert env.suspicion(vals, math.exp(0.5)).tolist() == pytest.approx([top] * 4)


def test_layer_verdict_uses_the_overdispersed_count_and_out_of_calibration():
    s = np.r_[np.full(20, 0.99), np.full(94, 0.5)]
    scores = evidence.UnitScores(s, {"m": s}, {"m": s}, ["m"] * 114)
    plain = evidence.layer_verdict("relu3", scores)
    od = envelope.Overdispersion(0.1, 0.2, 4)
    wide = evidence.layer_verdict("relu3", scores, overdispersion=od)
    assert plain.verdict == "manipulated" and wide.verdict == "no sign"
    assert wide.p_units == pytest.approx(envelope.count_p_value(20, 114, od))
    assert wide.expected_flagged == pytest.approx(11.4)
    oc = evidence.out_of_calibration(plain, 0.3, 0.2)
    assert oc.verdict == evidence.OUT_OF_CALIBRATION and oc.n_flagged == 20
    # a model whose only layer is out of calibration is out of calibration; a judged layer that
    # shows manipulation keeps the model's verdict; judged layers that show nothing do not clear it
    assert evidence.model_verdict([oc]).verdict == evidence.OUT_OF_CALIBRATION
    assert evidence.model_verdict([oc, plain]).verdict == "manipulated"
    assert evidence.model_verdict([oc, wide]).verdict == evidence.OUT_OF_CALIBRATION
    assert evidence.model_verdict([wide]).verdict == "no sign"
