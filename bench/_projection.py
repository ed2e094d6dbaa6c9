"""The arithmetic of bench/imagenet_projection.py: measured rates → the wall time of a whole audit.

Kept apart from the measuring (and free of torch) so that the projection can be checked on
hand-given rates (tests/bench/test_projection.py) and re-run on the rates of a stored result.

The audit projected is the thesis' conv5 audit as ``engine.audit.run_audit`` runs it, stage
by stage (every count is a field of :class:`AuditPlan`, printed with the result):

* **scans**: θ_init, the selected state and the final state, each over the training set
  and the validation set (``run_audit`` scans both splits of every state it measures), at
  the measured scan rate. At ImageNet size a pass does not fit the decode cache's bound
  (1.33M images × ~200 KB at 224 px ≫ 4 GiB), so every pass decodes its JPEGs again.
* **attack**: ``epochs`` × ⌈N_train / batch⌉ push-down steps at the measured step rate.
  A rate measured at a smaller batch than the plan's (a CPU cannot run batch 256 of
  ResNet-50 often enough to time it) is scaled by measured_batch / batch: a step's work is
  linear in its batch, which holds on a CPU and under-states a GPU (it gets faster per
  image with the batch), so a GPU projection should be measured at the plan's batch.
* **evaluations**: ⌈steps / eval_every⌉ readings on ``eval_size`` images that drive α,
  plus the budget selector's confirmations on the full validation set (SPEC §2; a share
  ``confirm_share`` of the readings say "within" and are confirmed at once) and the final
  selection (θ_init, selected and final states on the full set), at the measured
  evaluation rate, plus each evaluation's fixed cost (its loader's start, measured).
* **metrics**: Kendall-τ and τ-W of every unit over D_τ = the validation set, for the
  selected and the final state, at the time measured for the layer's J units (or, for a J
  not measured, the fit t(J) = a·J + b·J² through the measured J: per-unit ranking is
  linear in J, the pairs of τ-W quadratic); the CLIP embedding of every unit's top-k for
  θ_init and both states, at the measured embedding rate.
* **synthesis**: every unit of the layer rendered for ``synth_steps`` steps, for θ_init and
  θ_final, in batches of the render's batch size, at the measured time per batch-step.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

#: The stages in the order the audit runs them (the keys of :func:`project`'s result).
STAGES = ("scans", "attack", "evaluations", "metrics", "embedding", "synthesis")


@dataclass(frozen=True)
class AuditPlan:
    """What the thesis' audit does (SPEC §2 defaults; the project's evaluation cadence)."""

    n_train: int = 1_281_167          # ImageNet-1k training images
    n_val: int = 50_000               # ImageNet-1k validation images (D_τ, and the full-set budget judge)
    scans: int = 3                    # θ_init, selected, final: each over train + val
    epochs: int = 5
    batch: int = 256
    eval_every: int = 100             # ATTACK_DEFAULTS["eval_every"]
    eval_size: int = 10_000           # ATTACK_DEFAULTS["eval_size"]
    confirm_share: float = 0.5        # readings the subset calls "within", confirmed on the full set at once
    final_full_evals: int = 3         # θ_init, the selected and the final state on the full set
    metric_states: int = 2            # τ and τ-W for the selected and the final state
    k_clip: int = 5                   # top-k images embedded per unit and state
    embed_states: int = 3             # θ_init, selected, final
    synth_steps: int = 256
    synth_states: int = 2             # θ_init and θ_final renders of every unit

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.n_train / self.batch)

    @property
    def evaluations(self) -> int:
        return math.ceil(self.steps / self.eval_every)

    @property
    def eval_images(self) -> float:
        return (self.evaluations * self.eval_size
                + (self.evaluations * self.confirm_share + self.final_full_evals) * self.n_val)

    @property
    def eval_calls(self) -> float:
        """Evaluations run: readings, confirmations and the final full-set ones."""
        return self.evaluations * (1 + self.confirm_share) + self.final_full_evals

    @property
    def scan_images(self) -> int:
        return self.scans * (self.n_train + self.n_val)

    def as_dict(self) -> dict:
        return {**asdict(self), "steps": self.steps, "evaluations": self.evaluations,
                "eval_images": self.eval_images, "eval_calls": self.eval_calls, "scan_images": self.scan_images}


@dataclass
class Rates:
    """One model's measured rates (every one from the same run of the bench)."""

    units: int                        # J: the audited layer's units
    scan_img_s: float
    attack_steps_s: float             # push-down steps/s at ``attack_batch``
    attack_batch: int
    eval_img_s: float
    embed_img_s: float
    synth_batch: int                  # images optimised together by the render
    synth_s_per_batch_step: float
    eval_fixed_s: float = 0.0         # seconds of one evaluation beyond its images (the loader's start)
    #: seconds of τ + τ-W over the plan's n_val images, by J (measured points)
    metric_s_by_j: dict[int, float] = field(default_factory=dict)


def fit_metric_seconds(points: dict[int, float], j: int) -> tuple[float, str]:
    """Seconds of τ + τ-W for ``j`` units: the measured value, or the fit a·J + b·J² through
    two measured points (exact at both). Returns (seconds, how)."""
    if j in points:
        return float(points[j]), "measured"
    if len(points) < 2:
        raise ValueError(f"metrics measured at J = {sorted(points)} only: cannot fit J = {j}")
    (j1, t1), (j2, t2) = sorted(points.items())[-2:]
    # t = a·J + b·J²  →  t/J = a + b·J: a line through (j1, t1/j1), (j2, t2/j2)
    b = (t2 / j2 - t1 / j1) / (j2 - j1)
    a = t1 / j1 - b * j1
    if b < 0 or a * j + b * j * j <= 0:
        # timings too small or too noisy for the fit (tiny settings): the pair count's growth
        return t2 * (j / j2) ** 2, f"scaled as J² from J = {j2} (the fit through J = {j1}, {j2} has b < 0)"
    return a * j + b * j * j, f"fit a·J + b·J² through J = {j1}, {j2}"


def project(rates: Rates, plan: AuditPlan = AuditPlan()) -> dict:
    """Seconds per stage of the whole audit, the total, the dominating stage and how each
    number was extrapolated."""
    step_s = (1.0 / rates.attack_steps_s) * (plan.batch / rates.attack_batch)
    metric_s, metric_how = fit_metric_seconds(rates.metric_s_by_j, rates.units)
    synth_batches = math.ceil(rates.units / rates.synth_batch)
    seconds = {
        "scans": plan.scan_images / rates.scan_img_s,
        "attack": plan.steps * step_s,
        "evaluations": plan.eval_images / rates.eval_img_s + plan.eval_calls * rates.eval_fixed_s,
        "metrics": plan.metric_states * metric_s,
        "embedding": plan.embed_states * rates.units * plan.k_clip / rates.embed_img_s,
        "synthesis": plan.synth_states * synth_batches * plan.synth_steps * rates.synth_s_per_batch_step,
    }
    total = sum(seconds.values())
    dominant = max(seconds, key=seconds.get)
    how = {
        "scans": f"{plan.scans} scans × {plan.n_train + plan.n_val:,} images ÷ {rates.scan_img_s:.4g} images/s",
        "attack": (f"{plan.steps:,} steps × {step_s:.4g} s/step"
                   + (f" (measured at batch {rates.attack_batch}, × {plan.batch}/{rates.attack_batch})"
                      if rates.attack_batch != plan.batch else "")),
        "evaluations": (f"{plan.evaluations:,} readings × {plan.eval_size:,} + "
                        f"({plan.evaluations:,} × {plan.confirm_share:g} + {plan.final_full_evals}) full sets × "
                        f"{plan.n_val:,} = {plan.eval_images:,.0f} images ÷ {rates.eval_img_s:.4g} images/s"
                        + (f" + {plan.eval_calls:,.0f} evaluations × {rates.eval_fixed_s:.3g} s"
                           if rates.eval_fixed_s else "")),
        "metrics": f"{plan.metric_states} states × {metric_s:.4g} s (J = {rates.units}, {metric_how})",
        "embedding": (f"{plan.embed_states} states × {rates.units} units × {plan.k_clip} images ÷ "
                      f"{rates.embed_img_s:.4g} images/s"),
        "synthesis": (f"{plan.synth_states} states × {synth_batches} batches of {rates.synth_batch} × "
                      f"{plan.synth_steps} steps × {rates.synth_s_per_batch_step:.4g} s"),
    }
    return {"seconds": seconds, "total_s": total, "dominant": dominant,
            "dominant_share": seconds[dominant] / total if total > 0 else float("nan"), "how": how}


def hms(seconds: float) -> str:
    """A wall time a person reads: 45 s, 12.5 min, 3.2 h, 4.1 d."""
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
