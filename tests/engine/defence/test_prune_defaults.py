"""The sweep's shared pieces (engine/defence/defaults.py): channel ranking, the scaled schedule, labels."""
from __future__ import annotations

from fvaudit.engine.defence.defaults import finetune_phases, label, top_channels


def test_top_channels_by_clip_delta_ties_by_index_unmeasured_last():
    delta = {0: 0.1, 1: 0.5, 2: None, 3: 0.5, 4: 0.3}
    assert top_channels(delta, 6, 2) == [1, 3]          # the two 0.5s
    assert top_channels(delta, 6, 3) == [1, 3, 4]
    assert top_channels(delta, 6, 5) == [0, 1, 2, 3, 4]  # then unmeasured units, lower index first (2 before 5)


def test_finetune_phases_scale_the_thesis_schedule():
    assert finetune_phases(8, 1e-4, 0.1) == [(4, 1e-4), (4, 1e-5)]
    assert finetune_phases(5, 1e-5, 0.1) == [(3, 1e-5), (2, 1e-6)]
    assert finetune_phases(1, 1e-4, 0.1) == [(1, 1e-4)]
    assert finetune_phases(0, 1e-4, 0.1) == []


def test_labels():
    assert label(None, None) == "unpruned"
    assert label("oto_filter", 0.125) == "OTO filter 12.5%"
    assert label("vulnerability", 0.875) == "vulnerability 87.5%"
