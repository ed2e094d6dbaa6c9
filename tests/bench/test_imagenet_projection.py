"""bench/imagenet_projection.py (issue 23): the projection is arithmetic on measured rates
(checked on hand-given rates), and the bench runs every stage on tiny settings."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _projection import STAGES, AuditPlan, Rates, fit_metric_seconds, hms, project  # noqa: E402

PLAN = AuditPlan(n_train=1000, n_val=100, scans=3, epochs=2, batch=100, eval_every=5, eval_size=50,
                 confirm_share=0.5, final_full_evals=3, metric_states=2, k_clip=5, embed_states=3, synth_steps=10,
                 synth_states=2)


def test_plan_counts():
    assert PLAN.steps == 20                       # 2 epochs × ⌈1000 / 100⌉
    assert PLAN.evaluations == 4                  # ⌈20 / 5⌉
    assert PLAN.eval_images == 4 * 50 + (4 * 0.5 + 3) * 100 == 700
    assert PLAN.scan_images == 3 * 1100
    full = AuditPlan()
    assert full.steps == 5 * 5005                 # ⌈1 281 167 / 256⌉ = 5005 steps an epoch
    assert full.evaluations == 251


def test_projection_on_hand_given_rates():
    rates = Rates(units=10, scan_img_s=110.0, attack_steps_s=2.0, attack_batch=50, eval_img_s=70.0, embed_img_s=15.0,
                  synth_batch=4, synth_s_per_batch_step=0.25, metric_s_by_j={10: 2.5})
    p = project(rates, PLAN)
    assert p["seconds"] == {
        "scans": 3300 / 110,                      # 30 s
        "attack": 20 * (1 / 2.0) * (100 / 50),    # 20 steps × 1 s: measured at batch 50, scaled to 100
        "evaluations": 700 / 70,                  # 10 s
        "metrics": 2 * 2.5,                       # 5 s
        "embedding": 3 * 10 * 5 / 15,             # 10 s
        "synthesis": 2 * 3 * 10 * 0.25,           # ⌈10 / 4⌉ = 3 batches: 15 s
    }
    assert list(p["seconds"]) == list(STAGES)
    assert p["total_s"] == pytest.approx(90.0)
    assert p["dominant"] == "scans" and p["dominant_share"] == pytest.approx(30 / 90)
    assert "measured at batch 50, × 100/50" in p["how"]["attack"]
    # at the plan's own batch nothing is scaled
    same = project(Rates(**{**rates.__dict__, "attack_batch": 100}), PLAN)
    assert same["seconds"]["attack"] == 10.0 and "measured at batch" not in same["how"]["attack"]
    # each evaluation's fixed cost: 4 readings + 4 × 0.5 confirmations + 3 final ones = 9 evaluations
    assert PLAN.eval_calls == 9
    fixed = project(Rates(**{**rates.__dict__, "eval_fixed_s": 2.0}), PLAN)
    assert fixed["seconds"]["evaluations"] == 10.0 + 9 * 2.0 and "9 evaluations × 2 s" in fixed["how"]["evaluations"]


def test_metric_fit_is_exact_at_measured_points():
    # t(J) = 1·J + 0.5·J²: t(2) = 4, t(4) = 12 → t(8) = 40, t(6) = 24
    pts = {2: 4.0, 4: 12.0}
    assert fit_metric_seconds(pts, 4) == (12.0, "measured")
    assert fit_metric_seconds(pts, 8)[0] == pytest.approx(40.0)
    assert fit_metric_seconds(pts, 6)[0] == pytest.approx(24.0)
    assert "fit" in fit_metric_seconds(pts, 8)[1]
    # a fit with a negative quadratic term (noisy tiny timings) falls back to J² growth
    assert fit_metric_seconds({2: 4.0, 4: 4.0}, 8) == (16.0, "scaled as J² from J = 4 (the fit through J = 2, 4 has b < 0)")
    with pytest.raises(ValueError, match="cannot fit J = 8"):
        fit_metric_seconds({2: 4.0}, 8)


def test_hms():
    assert [hms(s) for s in (45, 750, 3 * 3600, 5 * 86400)] == ["45 s", "12.5 min", "3.0 h", "5.0 d"]
    assert hms(float("inf")) == "n/a"


def test_bench_runs_every_stage_on_tiny_settings(tmp_path):
    out = tmp_path / "projection.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "imagenet_projection.py"), "--tiny", "--models",
                           "alexnet", "--device", "cpu", "--workers", "1", "--folder", str(tmp_path / "jpegs"),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device_type"] == "cpu" and res["tiny"] is True
    assert res["jpegs"]["source"] in ("photos", "spectrum") and res["jpegs"]["n"] >= 16
    (m,) = res["models"]
    assert (m["model"], m["layer"], m["units"]) == ("alexnet", "features.11", 256)
    for stage in ("decode_ceiling", "forward_ceiling", "scan", "plain_finetune", "push_down", "evaluation"):
        assert m[stage]["rate"] > 0 and math.isfinite(m[stage]["rate"]), stage
        assert m[stage]["calls"] >= 1, stage
    assert m["synthesis"]["s_per_batch_step"] > 0 and m["synthesis"]["batch"] >= 1
    assert res["embedding"]["embed"]["rate"] > 0
    # τ and τ-W: identical to scipy on the sampled pairs and the whole units checked
    assert {(v["kind"], v["J"]) for v in res["metrics"].values()} == {("relu", 12), ("relu", 24)}
    for v in res["metrics"].values():
        assert v["max_abs_diff_pairs"] <= 1e-12 and v["max_abs_diff_tau_w_units"] <= 1e-12 and v["nan_agree"]
    # the projection is the arithmetic of _projection on the rates the bench measured
    again = project(Rates(units=256, scan_img_s=m["scan"]["rate"], attack_steps_s=m["push_down"]["rate"],
                          attack_batch=m["attack_batch"], eval_img_s=m["evaluation"]["rate"],
                          embed_img_s=res["embedding"]["embed"]["rate"], synth_batch=m["synthesis"]["batch"],
                          synth_s_per_batch_step=m["synthesis"]["s_per_batch_step"],
                          eval_fixed_s=m["evaluation"]["fixed_s"],
                          metric_s_by_j={int(k): v for k, v in m["metric_s_by_j"].items()}),
                    AuditPlan(**{k: v for k, v in res["plan"].items() if k in AuditPlan.__dataclass_fields__}))
    assert m["projection"]["seconds"] == pytest.approx(again["seconds"], rel=1e-12)
    assert set(m["projection"]["seconds"]) == set(STAGES)
    assert all(s > 0 and math.isfinite(s) for s in m["projection"]["seconds"].values())
    md = out.with_suffix(".md").read_text()
    assert "| alexnet | features.11 (256) |" in md and m["projection"]["dominant"] in md
    assert "Projected wall time" in proc.stdout and "dominant" in proc.stdout
