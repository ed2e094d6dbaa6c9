import numpy as np
import pytest
from scipy.stats import kendalltau

from fvaudit.engine.measure.report import TableRow, format_table, measure_layer


def _scores(seed=0, n=60, j=5):
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, j)), 0).astype(np.float32) * 10


def test_unchanged_model_scores_identity_values():
    a = _scores()
    table = np.abs(np.random.default_rng(9).normal(size=(60, 8))).astype(np.float32)  # positive cosines
    emb = lambda ids: table[ids]
    lm = measure_layer("l", a, a.copy(), attacked=[0, 1, 2, 3, 4], embed_topk=emb, embedder_id="fixed")
    for u in lm.units:
        assert lm.per_unit["kendall_tau"][u] == pytest.approx(1.0)
        assert lm.per_unit["topk_overlap"][u] == 1.0
        assert lm.per_unit["clip_delta"][u] == 0.0
    assert lm.aggregates["kendall_tau"]["mean"] == pytest.approx(1.0)
    assert lm.embedder == "fixed"


def test_whack_a_mole_swap_is_detected_by_tau_w():
    """Units 0 and 1 swap their rankings: τ_0 drops, but τ-W_0 > 1 shows unit 1 took over."""
    a = _scores(1)
    b = a.copy()
    b[:, [0, 1]] = a[:, [1, 0]]
    lm = measure_layer("l", a, b, attacked=[0, 1])
    t0 = lm.per_unit["kendall_tau"][0]
    assert t0 == pytest.approx(kendalltau(a[:, 0], a[:, 1]).statistic, abs=1e-9)
    num = 1.0  # τ(R_init,0, R_final,1) = τ(a0, a0)
    den = max(kendalltau(a[:, 0], a[:, i]).statistic for i in range(1, 5))
    assert lm.per_unit["kendall_tau_w"][0] == pytest.approx(num / den, abs=1e-9)
    assert lm.per_unit["kendall_tau_w"][0] > 1
    assert lm.nearest[0]["by_tau_final"][0]["unit"] == 1
    # the untouched units keep τ = 1 and are not in the attacked aggregate
    assert lm.per_unit["kendall_tau"][3] == pytest.approx(1.0)
    assert lm.aggregates["kendall_tau"]["n"] == 2


def test_dead_units_left_out_and_nan_counted():
    a = _scores(2)
    a[:, 2] = 0  # dead on D_τ
    b = a.copy()
    lm = measure_layer("l", a, b, attacked=[0, 1, 2])
    assert lm.dead == [2] and 2 not in lm.units and lm.attacked == [0, 1]
    # unit silent on D_τ but declared live (dead list from the training set): τ is NaN, counted
    lm2 = measure_layer("l", a, b, attacked=[0, 1, 2], dead=[])
    assert np.isnan(lm2.per_unit["kendall_tau"][2])
    assert lm2.aggregates["kendall_tau"]["n_nan"] == 1 and lm2.aggregates["kendall_tau"]["n"] == 2


def test_skipped_images_rows_are_dropped_before_ranking():
    a = _scores(3)
    b = a.copy()
    a[5] = np.nan
    lm = measure_layer("l", a, b, attacked=[0])
    assert lm.extra["n_skipped_rows"] == 1
    assert lm.per_unit["kendall_tau"][0] == pytest.approx(1.0)


def test_format_table_prints_values_and_dashes():
    row = TableRow("conv5 push-down", {"clip_delta": 0.2941, "kendall_tau": 0.351, "clip_w": None,
                                       "kendall_tau_w": float("nan"), "topk_overlap": 0.1}, 56.1, -0.47, 12.0)
    text = format_table([row])
    assert "conv5 push-down" in text and "0.294" in text and "-0.47" in text and "—" in text
    assert text.splitlines()[0].startswith("Layer/Attack")
