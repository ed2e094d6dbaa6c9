"""Unit labels and interpretability scores (issue 22): the class-concept labeller and its
hypergeometric enrichment against scipy and by hand, the flip rate, and SemanticLens'
clarity / polysemanticity / redundancy on hand-made embeddings."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import hypergeom

from fvaudit.engine.measure.labels import (UnitLabel, clarity, class_concept_labels, label_flip_rate, polysemanticity,
                                           redundancy)

# 10 images: classes 0,0,0,0,1,1,1,2,2,2
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
NAMES = ["T-shirt", "Trouser", "Bag"]


def test_the_label_is_the_most_enriched_class_with_scipys_tail_probability():
    # unit 0: top-3 = three class-2 images (3 of 3 Bags out of 3 in the set); unit 1: two of class 0, one of class 1
    topk = np.array([[7, 8, 9], [0, 1, 4]])
    got = class_concept_labels(topk, LABELS, NAMES)
    assert [g.label for g in got] == [2, 0] and got[0].name == "Bag"
    # P(X ≥ 3) drawing 3 from 10 with 3 Bags = C(3,3)/C(10,3) = 1/120, by hand and by scipy
    assert got[0].p_value == pytest.approx(1 / 120, rel=1e-12)
    assert got[0].p_value == pytest.approx(hypergeom.sf(2, 10, 3, 3), rel=1e-12)
    assert got[0].share == 1.0
    # unit 1: class 0 has 2 of 3 (P(X ≥ 2), K=4) against class 1's 1 of 3 (P(X ≥ 1), K=3)
    p0 = (math.comb(4, 2) * math.comb(6, 1) + math.comb(4, 3)) / math.comb(10, 3)
    assert got[1].p_value == pytest.approx(p0, rel=1e-12) and got[1].share == pytest.approx(2 / 3)


def test_a_frequent_class_needs_more_than_its_base_rate_and_ties_go_to_the_larger_count_then_the_lower_index():
    # 1 of each class: every class at p = P(X ≥ 1); the rarer classes (K = 3) are the more enriched
    got = class_concept_labels(np.array([[0, 4, 7]]), LABELS)[0]
    assert got.label == 1 and got.p_value == pytest.approx(hypergeom.sf(0, 10, 3, 3))
    # two classes of equal size and equal count tie exactly: the lower class index wins
    got = class_concept_labels(np.array([[4, 7]]), LABELS)[0]
    assert got.label == 1


def test_dead_units_get_no_label_and_bad_input_names_the_argument():
    got = class_concept_labels(np.array([[7, 8], [0, 1]]), LABELS, units=[0, 1], dead=[1])
    assert got[1] == UnitLabel(1, None)
    with pytest.raises(ValueError, match="topk_ids"):
        class_concept_labels(np.array([[0, 99]]), LABELS)
    with pytest.raises(ValueError, match="image_labels"):
        class_concept_labels(np.array([[0]]), np.array([-1, 0]))


def test_flip_rate_and_decoy_rate_count_the_units_labelled_in_both_states():
    before = [UnitLabel(0, 0), UnitLabel(1, 1), UnitLabel(2, 2), UnitLabel(3, None)]
    after = [UnitLabel(0, 2), UnitLabel(1, 1), UnitLabel(2, 2), UnitLabel(3, 2)]
    r = label_flip_rate(before, after, decoy_class=2)
    assert r == {"n_units": 3, "flipped": 1, "flip_rate": 1 / 3, "decoy_class": 2, "decoy_rate": 2 / 3,
                 "decoy_rate_before": 1 / 3}
    assert label_flip_rate([], [])["flip_rate"] is None


def test_clarity_is_one_for_identical_examples_and_zero_for_orthogonal_ones():
    same = np.tile([[3.0, 4.0]], (4, 1))                      # one concept (any scale)
    ortho = np.eye(4)                                         # four unrelated examples
    np.testing.assert_allclose(clarity(np.stack([same, np.eye(2).repeat(2, axis=0)]))[0], 1.0)
    np.testing.assert_allclose(clarity(ortho[None]), 0.0, atol=1e-12)
    # two pairs at 90°: ‖mean‖² = 1/2, n = 4 → (1/2 − 1/4)·4/3 = 1/3
    pairs = np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    np.testing.assert_allclose(clarity(pairs), [1 / 3])


def test_polysemanticity_is_one_minus_the_cosine_of_the_two_concepts():
    one = np.tile([[1.0, 0.0]], (4, 1))
    two = np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])       # two concepts at 90°
    opposite = np.array([[1.0, 0], [1.0, 0], [-1.0, 0], [-1.0, 0]])
    np.testing.assert_allclose(polysemanticity(np.stack([one, two, opposite])), [0.0, 1.0, 2.0], atol=1e-12)


def test_redundancy_is_the_nearest_other_units_mean_cosine():
    a = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    b = np.array([[1.0, 1.0, 0], [1.0, 1.0, 0]])                   # 45° from a
    c = np.array([[0, 0, 1.0], [0, 0, 1.0]])                       # orthogonal to both
    np.testing.assert_allclose(redundancy(np.stack([a, b, c])), [math.sqrt(0.5), math.sqrt(0.5), 0.0], atol=1e-12)
    assert np.isnan(redundancy(a[None])).all()
    with pytest.raises(ValueError, match="non-zero"):
        clarity(np.zeros((1, 2, 3)))
