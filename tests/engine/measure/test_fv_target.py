"""The measures of a synthetic-visualization manipulation (SPEC §8.1) on hand-checkable inputs,
and against scipy where it defines the reference."""
import numpy as np
import pytest
from scipy import stats

from fvaudit.engine.measure.fv_target import (SSIM_K1, SSIM_K2, auroc, cosine, cross_check, pixel_mse, ssim,
                                              top_class, toward_target, unit_class_auroc)


def test_ssim_of_an_image_with_itself_is_one_and_of_constants_is_the_luminance_term():
    x = np.random.default_rng(0).random((20, 24))
    assert ssim(x, x) == pytest.approx(1.0)
    # two constant images a, b: every local variance is 0, so SSIM = (2ab + C1) / (a² + b² + C1)
    a, b = 0.2, 0.7
    c1 = (SSIM_K1 * 1.0) ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(want, rel=1e-9)
    assert SSIM_K2 == 0.03


def test_ssim_reads_uint8_hwc_like_floats_and_averages_channels():
    rng = np.random.default_rng(1)
    x8 = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    y8 = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    xf, yf = x8.transpose(2, 0, 1) / 255.0, y8.transpose(2, 0, 1) / 255.0
    assert ssim(x8, y8) == pytest.approx(np.mean([ssim(xf[c], yf[c]) for c in range(3)]))
    assert ssim(x8, y8) < 0.2                       # independent noise: little structure in common
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(np.zeros((4, 4)), np.zeros((4, 5)))


def test_ssim_falls_with_noise_and_pixel_mse_by_hand():
    rng = np.random.default_rng(2)
    x = rng.random((32, 32))
    small = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    big = np.clip(x + 0.3 * rng.standard_normal(x.shape), 0, 1)
    assert 1.0 > ssim(x, small) > ssim(x, big)
    assert pixel_mse(np.zeros((2, 2)), np.full((2, 2), 0.5)) == pytest.approx(0.25)
    assert pixel_mse(np.zeros((2, 2, 1), np.uint8), np.full((2, 2, 1), 255, np.uint8)) == pytest.approx(1.0)


def test_auroc_is_mann_whitney_u_over_the_pairs_with_ties_half():
    # by hand: positives {3, 2}, negatives {1, 2}: pairs (3>1, 3>2, 2>1, 2=2) → (1 + 1 + 1 + ½) / 4
    assert auroc(np.array([3.0, 2.0, 1.0, 2.0]), np.array([True, True, False, False])) == pytest.approx(3.5 / 4)
    rng = np.random.default_rng(3)
    s = rng.integers(0, 5, 200).astype(float)       # many ties
    pos = rng.random(200) < 0.3
    u = stats.mannwhitneyu(s[pos], s[~pos], alternative="two-sided").statistic
    assert auroc(s, pos) == pytest.approx(u / (pos.sum() * (~pos).sum()))
    assert np.isnan(auroc(s, np.zeros(200, bool)))


def test_unit_class_auroc_and_top_class():
    labels = np.array([0, 0, 1, 1, 2])
    scores = np.array([[5, 0], [4, 0], [1, 3], [0, 2], [0, 1]], dtype=float)
    got = unit_class_auroc(scores, labels, [0, 1])
    assert got.tolist() == [1.0, 1.0]
    assert top_class(np.array([[2, 2, 1], [0, 1, 1], [-1, 3, 3]])).tolist() == [2, 1, 3]
    assert top_class(np.array([[4, 1]])).tolist() == [1]       # tie → the smaller class


def test_moved_cosine_and_cross_check():
    assert toward_target(np.array([0.9, 0.2]), np.array([0.5, 0.6])).tolist() == [True, False]
    assert cosine(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]))[0] == pytest.approx(1 / np.sqrt(2))
    assert cross_check(1.3) == "agree" and cross_check(0.8) == "disagree" and cross_check(float("nan")) == "unknown"
    assert cross_check(np.array([1.2, 1.0])).tolist() == ["agree", "disagree"]
