"""The sweep's SVG curves (Figs. 4.1–4.4): every series drawn where its data says, valid XML."""
import xml.etree.ElementTree as ET

import pytest

from fvaudit.engine.defence.sweep_plot import H, LEFT, RIGHT, TOP, BOTTOM, W, curves_svg, nice_range, to_xy

NS = {"s": "http://www.w3.org/2000/svg"}
CURVES = {
    "norm": {"rate": [0.0, 0.5], "label": ["unpruned", "norm 50%"], "finetuned_acc": [92.0, 90.0],
             "clip_delta_push_down": [0.1, 0.3], "clip_delta_push_up": [0.2, None]},
    "oto_filter": {"rate": [0.0, 0.25], "label": ["unpruned", "x"], "finetuned_acc": [92.0, 60.0],
                   "clip_delta_push_down": [0.1, 0.05], "clip_delta_push_up": [0.2, 0.15]},
}


def test_nice_range_widens_to_round_steps():
    assert nice_range([90.0, 92.0]) == pytest.approx((90.0, 92.0))
    assert nice_range([0.03, 0.31]) == pytest.approx((0.0, 0.4))   # span 0.28 → step 0.1
    assert nice_range([5.0]) == pytest.approx((2.0, 8.0))
    assert nice_range([None, float("nan")]) == (0.0, 1.0)


def test_to_xy_maps_the_corners_of_a_panel():
    assert to_xy(0.0, 10.0, (0.0, 10.0)) == (LEFT, TOP)
    assert to_xy(1.0, 0.0, (0.0, 10.0)) == (W - RIGHT, H - BOTTOM)
    assert to_xy(0.5, 5.0, (0.0, 10.0), x0=W) == (W + LEFT + (W - LEFT - RIGHT) / 2, TOP + (H - TOP - BOTTOM) / 2)


def test_every_series_is_a_polyline_with_its_points():
    root = ET.fromstring(curves_svg(CURVES, title="demo"))
    groups = {g.get("data-label"): g for g in root.iter("{http://www.w3.org/2000/svg}g")}
    assert set(groups) == {"norm accuracy", "norm push_down", "norm push_up", "oto_filter accuracy",
                           "oto_filter push_down", "oto_filter push_up"}
    pts = groups["norm accuracy"].find("s:polyline", NS).get("points").split()
    lo, hi = nice_range([92.0, 90.0, 92.0, 60.0])
    assert pts == [f"{a},{b}" for a, b in (to_xy(0.0, 92.0, (lo, hi)), to_xy(0.5, 90.0, (lo, hi)))]
    # a missing value leaves its point out (norm push-up has one point)
    assert len(groups["norm push_up"].find("s:polyline", NS).get("points").split()) == 1
    # push-up dashed, push-down solid
    assert groups["oto_filter push_up"].find("s:polyline", NS).get("stroke-dasharray") == "6 4"
    assert groups["oto_filter push_down"].find("s:polyline", NS).get("stroke-dasharray") is None
