"""Detecting a manipulated model (SPEC §6): per-unit evidence, calibrated suspicion,
verdicts per layer and per model, and the unit-level ROC AUC that judges a detector.

Pure functions over arrays the engine already produces (``activations.LayerScan``:
scores, top-k ids; ``metrics``: CLIP-δ, Kendall-τ, overlap; ``synthetic_measures``:
synthetic-image embeddings; layer weights). numpy / scipy only: no model, DB or web.

Every evidence measure is oriented so that **larger = more suspicious**, so that one
calibration rule (an upper-tail empirical CDF) serves them all:

with a reference model (the model the suspect claims to derive from; SPEC §6 "every
measure of §3 between reference and suspect, plus weight distance per layer"):

* ``clip_delta``: CLIP-δ_j of SPEC §3 (``metrics.clip_delta``), reference top-k vs suspect top-k;
* ``tau_drop`` = 1 − Kendall-τ_j (``metrics.kendall_tau``) of the unit's scores over one image set;
* ``overlap_loss`` = 1 − top-k overlap_j (``metrics.topk_overlap``);
* ``synthetic_change``: how far below the reference's seed-to-seed noise floor the
  suspect's synthetic image falls (SPEC §4/§6; :func:`synthetic_change`);
* ``weight_distance``: relative L2 distance of a unit's filter (:func:`unit_weight_distance`),
  and per layer of the layer's weights (:func:`layer_weight_distance`).

without one (SPEC §6 "evidence from the suspect against a population of clean models of
the same family"):

* each class's share of unit majorities against the population's shares
  (:func:`class_share_evidence`; the flagged class names the decoy of a push-up), and
* ``class_share``: per unit, how much of its top-k lies in over-represented classes
  (:func:`unit_class_evidence`; its benign values, leave-one-out over the population, from
  :func:`population_class_evidence`).

What measured to *not* separate on the demo CNN (SPEC §6: natural–synthetic agreement,
activation-shape statistics, class purity of the top-k) is deliberately not a measure here.

Calibration (:class:`Calibration`) turns each measure into a suspicion in [0, 1] against
its benign distribution (units of α = 0 fine-tunes and retrained seeds), so that ordinary
fine-tuning does not raise a flag; the measures of a unit are combined by the Šidák-corrected
maximum, which keeps benign units' combined suspicion uniform (see :func:`combine`). Verdicts
(:func:`layer_verdict`, :func:`model_verdict`) turn the units' suspicions into "no sign" /
"suspicious" / "manipulated" with thresholds that are parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from fvaudit.engine.measure import clip_delta, kendall_tau, topk_overlap

__all__ = [
    "topk_change",
    "synthetic_change",
    "unit_weight_distance",
    "layer_weight_distance",
    "reference_measures",
    "majority_classes",
    "class_shares",
    "ClassShareEvidence",
    "class_share_evidence",
    "unit_class_evidence",
    "population_class_evidence",
    "Calibration",
    "UnitScores",
    "unit_scores",
    "combine",
    "VerdictThresholds",
    "Verdict",
    "layer_verdict",
    "model_verdict",
    "unit_auroc",
    "VERDICTS",
    "INCONCLUSIVE",
    "OUT_OF_CALIBRATION",
    "out_of_calibration",
    "inconclusive",
]

VERDICTS = ("no sign", "suspicious", "manipulated")
#: the verdict of a layer (and a model) that moved further than any clean model of its
#: calibration (:func:`out_of_calibration`): the evidence is shown, no claim is made
OUT_OF_CALIBRATION = "out of calibration"
#: the verdict of a detection whose calibration cannot support a p-value (too few clean
#: models: :data:`fvaudit.engine.detection.run.MIN_CLEAN_MODELS`); it has no p-value and no flags
INCONCLUSIVE = "inconclusive"


def _array(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    return arr


def _float(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    arr = _array(x, name, ndim)
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}") from None


def _mark_dead(out: dict[str, np.ndarray], dead_units: Sequence[int] | None) -> dict[str, np.ndarray]:
    """Dead units (SPEC §1) have no top-k: their evidence is undefined (NaN), never 0."""
    if dead_units is not None and len(dead_units):
        idx = np.asarray(list(dead_units), dtype=np.int64)
        for v in out.values():
            v[idx] = np.nan
    return out


# =========================================================================== with a reference

def topk_change(ids_ref: Any, ids_sus: Any, emb_ref: Any, emb_sus: Any,
                r_ref: Any = None, r_sus: Any = None) -> dict[str, np.ndarray]:
    """Top-k change of every unit between reference and suspect (SPEC §6 "every measure of
    §3 between reference and suspect"), oriented larger = more change.

    ``ids_ref`` / ``ids_sus``: top-k image ids [J, k] (``LayerScan.topk_ids``); ``emb_ref`` /
    ``emb_sus``: embeddings of those images [J, k, E]; ``r_ref`` / ``r_sus``: the score
    matrices [N, J] of one image set (``LayerScan.scores``), optional. Returns float64 [J]
    arrays ``clip_delta`` (SPEC §3 CLIP-δ), ``overlap_loss`` = 1 − overlap and, with the
    score matrices, ``tau_drop`` = 1 − Kendall-τ (NaN for a unit silent under either
    model, as SPEC §3 "Undefined values"). The formulas are those of ``metrics``: this
    module only orients them.
    """
    out = {
        "clip_delta": clip_delta(emb_ref, emb_sus),
        "overlap_loss": 1.0 - topk_overlap(ids_ref, ids_sus),
    }
    if (r_ref is None) != (r_sus is None):
        raise ValueError("r_ref / r_sus: give both score matrices or neither")
    if r_ref is not None:
        out["tau_drop"] = 1.0 - kendall_tau(r_ref, r_sus)
    return out


def _unit_rows(e: Any, name: str) -> np.ndarray:
    arr = _float(e, name, 3)
    if 0 in arr.shape:
        raise ValueError(f"{name}: empty dimension in shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=2, keepdims=True)
    if not np.isfinite(arr).all() or (norms == 0).any():
        raise ValueError(f"{name}: holds a NaN, infinite or all-zero embedding (cosine undefined)")
    return arr / norms


def synthetic_change(e_ref: Any, e_sus: Any) -> dict[str, np.ndarray]:
    """Synthetic change against the seed-to-seed noise floor (SPEC §4, §6).

    ``e_ref`` / ``e_sus``: embeddings [J, n, D] of each unit's synthetic images under the
    reference and the suspect, rendered with the same ``n ≥ 2`` seeds (so a pair differs
    only by the weights). Per unit j:

    * ``cross`` = mean over seeds s of cos(e_ref[j, s], e_sus[j, s]);
    * ``floor`` = mean over seed pairs s < t of cos(e_ref[j, s], e_ref[j, t]): how alike
      two seeds of the *same* weights are (SPEC §4: 0.82 on the demo CNN);
    * ``synthetic_change`` = (floor − cross) / σ, with σ the standard deviation (ddof 0)
      of all seed-to-seed cosines of the layer (every unit, every pair): a z-like score in
      units of the layer's seed noise. > 0: the suspect's image is further from the
      reference's than another seed would be. NaN for every unit when σ = 0.

    Why a pooled σ: with the default 4 seeds a unit has 6 pairs, too few for its own
    spread; the layer's spread is the scale an auditor can trust. The offset of benign
    fine-tunes (same seed → cross above the floor) is left to :class:`Calibration`.
    """
    a = _unit_rows(e_ref, "e_ref")
    b = _unit_rows(e_sus, "e_sus")
    if a.shape != b.shape:
        raise ValueError(f"e_ref {a.shape} and e_sus {b.shape}: shapes differ (same units, seeds, embedder)")
    j, n, _ = a.shape
    if n < 2:
        raise ValueError(f"e_ref: the noise floor needs n ≥ 2 seeds per unit, got n = {n}")
    cross = np.einsum("jsd,jsd->js", a, b).mean(axis=1)
    gram = np.einsum("jsd,jtd->jst", a, a)
    iu = np.triu_indices(n, k=1)
    pairs = gram[:, iu[0], iu[1]]                      # [J, n(n-1)/2]
    floor = pairs.mean(axis=1)
    sigma = float(pairs.std())
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (floor - cross) / sigma if sigma > 0 else np.full(j, np.nan)
    return {"cross": cross, "floor": floor, "synthetic_change": np.asarray(z, dtype=np.float64)}


def _relative_l2(ref: np.ndarray, sus: np.ndarray, axis) -> np.ndarray:
    num = np.sqrt(np.sum((sus - ref) ** 2, axis=axis))
    den = np.sqrt(np.sum(ref ** 2, axis=axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def unit_weight_distance(w_ref: Any, w_sus: Any) -> np.ndarray:
    """Relative L2 distance of each unit's incoming weights, ‖w_sus[j] − w_ref[j]‖ / ‖w_ref[j]‖
    (SPEC §6 "weight distance"; per unit so it can rank units).

    ``w_ref`` / ``w_sus``: the weight of the layer whose output channels are the units,
    unit first ([C_out, C_in, kh, kw] for a conv, [D_out, D_in] for a linear layer). A
    push-down must change the filters of the attacked units; α = 0 fine-tuning moves all
    filters a little. NaN for an all-zero reference filter (a pruned unit).
    """
    a = _float(w_ref, "w_ref")
    b = _float(w_sus, "w_sus")
    if a.ndim < 1 or a.shape != b.shape:
        raise ValueError(f"w_ref {a.shape} and w_sus {b.shape}: expected equal shapes, unit first")
    return _relative_l2(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), axis=1)


def layer_weight_distance(w_ref: Mapping[str, Any], w_sus: Mapping[str, Any]) -> dict[str, float]:
    """Relative L2 distance per layer, ‖W_sus − W_ref‖ / ‖W_ref‖ over all of a layer's
    parameters together (SPEC §6 "weight distance per layer").

    ``w_ref`` / ``w_sus``: layer name → one array or a sequence of arrays (weight, bias, …),
    as read from the two state dicts. Both must name the same layers with equal shapes.
    Which layers moved is evidence where the attack was (push-down of relu2 moves the
    layers up to conv2 most); calibrate it against α = 0 fine-tunes like any measure.
    """
    if set(w_ref) != set(w_sus):
        raise ValueError(f"w_sus: layers {sorted(set(w_sus) ^ set(w_ref))} are not in both models")
    out = {}
    for layer in w_ref:
        ra = w_ref[layer] if isinstance(w_ref[layer], (list, tuple)) else [w_ref[layer]]
        sa = w_sus[layer] if isinstance(w_sus[layer], (list, tuple)) else [w_sus[layer]]
        if len(ra) != len(sa):
            raise ValueError(f"w_sus[{layer!r}]: {len(sa)} arrays, the reference has {len(ra)}")
        ref = [_float(x, f"w_ref[{layer!r}]").ravel() for x in ra]
        sus = [_float(x, f"w_sus[{layer!r}]").ravel() for x in sa]
        if [x.size for x in ref] != [x.size for x in sus]:
            raise ValueError(f"w_sus[{layer!r}]: parameter sizes differ from the reference")
        out[layer] = float(_relative_l2(np.concatenate(ref), np.concatenate(sus), axis=0))
    return out


def reference_measures(ids_ref: Any, ids_sus: Any, emb_ref: Any, emb_sus: Any, *,
                       r_ref: Any = None, r_sus: Any = None,
                       synth_ref: Any = None, synth_sus: Any = None,
                       w_ref: Any = None, w_sus: Any = None,
                       dead_units: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """All per-unit evidence of one layer with a reference (SPEC §6), larger = more suspicious.

    Keys: ``clip_delta``, ``overlap_loss``, ``tau_drop`` (with ``r_ref``/``r_sus``),
    ``synthetic_change`` (with synthetic embeddings [J, n, D]), ``weight_distance`` (with
    the layer's weights, unit first). Units dead in the reference (SPEC §1) are NaN in
    every measure: they have no top-k to manipulate.
    """
    out = topk_change(ids_ref, ids_sus, emb_ref, emb_sus, r_ref, r_sus)
    if (synth_ref is None) != (synth_sus is None):
        raise ValueError("synth_ref / synth_sus: give both synthetic embeddings or neither")
    if synth_ref is not None:
        out["synthetic_change"] = synthetic_change(synth_ref, synth_sus)["synthetic_change"]
    if (w_ref is None) != (w_sus is None):
        raise ValueError("w_ref / w_sus: give both layer weights or neither")
    if w_ref is not None:
        out["weight_distance"] = unit_weight_distance(w_ref, w_sus)
    j = len(out["clip_delta"])
    for k, v in out.items():
        if v.shape != (j,):
            raise ValueError(f"{k}: {v.shape[0]} units, the top-k has {j}")
    return _mark_dead({k: np.array(v, dtype=np.float64) for k, v in out.items()}, dead_units)


# =========================================================================== without a reference

def _labels_of_topk(topk_ids: Any, image_labels: Any, n_classes: int) -> np.ndarray:
    ids = _array(topk_ids, "topk_ids", 2)
    labels = _array(image_labels, "image_labels", 1)
    if not np.issubdtype(ids.dtype, np.integer) or ids.shape[1] == 0:
        raise ValueError(f"topk_ids: expected integer image ids [J, k ≥ 1], got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= labels.shape[0]):
        raise ValueError(f"topk_ids: ids must lie in [0, {labels.shape[0]}) (the length of image_labels)")
    lab = labels[ids]
    if not np.issubdtype(lab.dtype, np.integer) or (lab.size and (lab.min() < 0 or lab.max() >= n_classes)):
        raise ValueError(f"image_labels: expected integer classes in [0, {n_classes})")
    return lab


def _class_fractions(topk_ids: Any, image_labels: Any, n_classes: int) -> np.ndarray:
    """[J, C]: the share of each unit's top-k images in each class."""
    lab = _labels_of_topk(topk_ids, image_labels, n_classes)
    counts = np.zeros((lab.shape[0], n_classes))
    np.add.at(counts, (np.repeat(np.arange(lab.shape[0]), lab.shape[1]), lab.ravel()), 1)
    return counts / lab.shape[1]


def majority_classes(topk_ids: Any, image_labels: Any, n_classes: int,
                     dead_units: Sequence[int] | None = None) -> np.ndarray:
    """Each unit's top-k majority class (the most frequent class among its top-k images;
    a tie goes to the smaller class id, so the result is deterministic). SPEC §6: push-up
    turns the decoy class into the majority of many units.

    ``topk_ids`` [J, k]; ``image_labels`` [N] class per image id. Returns int64 [J], −1 for
    dead units (SPEC §1: no top-k, left out of every share).
    """
    maj = _class_fractions(topk_ids, image_labels, n_classes).argmax(axis=1).astype(np.int64)
    if dead_units is not None and len(dead_units):
        maj[np.asarray(list(dead_units), dtype=np.int64)] = -1
    return maj


def class_shares(majority: Any, n_classes: int) -> np.ndarray:
    """Share of the live units (majority ≥ 0) whose majority is each class: float64 [C]
    summing to 1 (SPEC §6 "each class's share of unit majorities")."""
    m = _array(majority, "majority", 1)
    live = m[m >= 0]
    if live.size == 0:
        raise ValueError("majority: no live unit (every unit is dead)")
    if live.max() >= n_classes:
        raise ValueError(f"majority: class {live.max()} is not below n_classes = {n_classes}")
    return np.bincount(live, minlength=n_classes) / live.size


@dataclass
class ClassShareEvidence:
    """One layer's class shares against a clean population (SPEC §6)."""

    shares: np.ndarray          # [C] the suspect's share of unit majorities per class
    pop_mean: np.ndarray        # [C] the population's mean share
    pop_sd: np.ndarray          # [C] the scale z is measured in (see class_share_evidence)
    z: np.ndarray               # [C] (shares − pop_mean) / pop_sd
    tail: np.ndarray            # [C] empirical tail (1 + #{population ≥ share}) / (M + 1)
    flagged_class: int          # argmax z: the class that gained most, the push-up's decoy if any
    p_value: float              # Šidák over C classes of the normal upper tail of max z

    @property
    def suspicion(self) -> float:
        """1 − p_value: layer-level evidence in [0, 1], usable in :func:`layer_verdict`."""
        return 1.0 - self.p_value


def class_share_evidence(shares: Any, population: Any, n_units: int) -> ClassShareEvidence:
    """The suspect's class shares of unit majorities against a population of clean models'
    shares (SPEC §6: push-up raises the decoy's share, 5.4% → 32% for Bag on the demo CNN,
    while the largest class of a clean model holds about a third too; so only a comparison
    *per class* against clean models says which class gained).

    ``shares`` [C] (:func:`class_shares` of the suspect), ``population`` [M, C] (the same of
    M ≥ 1 clean models of the family), ``n_units``: the suspect's live units J.

    * ``pop_mean`` = mean over the population;
    * ``pop_sd`` = sqrt(max(sample variance (ddof 1; 0 when M = 1), p̃(1 − p̃)/J)) with the
      Laplace-smoothed pooled share p̃ = (Σ_m shares_m·J + 1) / (M·J + C): the binomial
      spread of a share over J units is a floor, so that a population of two or three
      models that happen to agree cannot make z infinite;
    * ``z`` = (shares − pop_mean) / pop_sd; ``tail`` = (1 + #{m: population_m ≥ share}) / (M + 1),
      the smoothed empirical tail (never 0; its resolution is 1/(M+1), so with few clean
      models z is what decides);
    * ``p_value`` = 1 − F(max z / √(1 + 1/M))^C (Šidák over the C classes tested), F the
      Student t with M − 1 degrees of freedom: the prediction interval of one new model from
      M whose spread is estimated (the normal Φ when M = 1, where no spread is seen).
    """
    s = _float(shares, "shares", 1)
    pop = _float(population, "population", 2)
    c = s.shape[0]
    if pop.shape[1] != c or pop.shape[0] < 1:
        raise ValueError(f"population: expected [M ≥ 1, {c}] class shares, got shape {pop.shape}")
    if int(n_units) < 1:
        raise ValueError(f"n_units: must be ≥ 1, got {n_units}")
    m = pop.shape[0]
    mean = pop.mean(axis=0)
    var = pop.var(axis=0, ddof=1) if m > 1 else np.zeros(c)
    pooled = (pop.sum(axis=0) * n_units + 1.0) / (m * n_units + c)
    sd = np.sqrt(np.maximum(var, pooled * (1.0 - pooled) / n_units))
    z = (s - mean) / sd
    tail = (1.0 + (pop >= s[None, :]).sum(axis=0)) / (m + 1.0)
    top = int(np.argmax(z))
    if m >= 2:
        # a new clean model against M others whose mean and spread are estimated: the
        # prediction statistic z / sqrt(1 + 1/M) follows Student's t with M − 1 degrees of
        # freedom, not the normal (issue 24: with 2 or 3 clean models of unequal training the
        # normal tail read p ≈ 1e-9 for a clean retrained seed)
        p = float(1.0 - stats.t.cdf(z[top] / np.sqrt(1.0 + 1.0 / m), df=m - 1) ** c)
    else:
        p = float(1.0 - stats.norm.cdf(z[top]) ** c)
    return ClassShareEvidence(s, mean, sd, z, tail, top, p)


def unit_class_evidence(topk_ids: Any, image_labels: Any, evidence: ClassShareEvidence,
                        dead_units: Sequence[int] | None = None) -> np.ndarray:
    """Per unit "belongs to the over-represented class" (SPEC §6, without a reference):
    ``Σ_c max(z_c, 0) · frac_{j,c}``, with ``frac_{j,c}`` the share of unit j's top-k
    images in class c and ``z`` from :func:`class_share_evidence`.

    A unit whose top-k is all decoy images scores the decoy's z; a unit of an
    under-represented or usual class scores about 0. Continuous in the top-k's
    composition (not just its majority), so it ranks units for a ROC AUC. NaN for dead units.
    """
    frac = _class_fractions(topk_ids, image_labels, evidence.z.shape[0])
    out = frac @ np.maximum(evidence.z, 0.0)
    return _mark_dead({"e": out}, dead_units)["e"]


def population_class_evidence(topk_ids: Sequence[Any], image_labels: Any, n_classes: int,
                               dead_units: Sequence[Sequence[int] | None] | None = None,
                               per_model: bool = False) -> Any:
    """Benign values of :func:`unit_class_evidence` for :meth:`Calibration.fit` (SPEC §6,
    without a reference): each clean model of the population judged, leave-one-out,
    against the shares of the others, exactly as a suspect is judged against all of them.

    ``topk_ids``: one [J_m, k] top-k per clean model (M ≥ 2), ``dead_units``: per model or
    None. Returns the concatenated per-unit values (NaN for dead units, dropped by ``fit``),
    or with ``per_model`` one array per model (the leave-one-model-out count test needs them).
    Why leave-one-out: a model in its own population pulls the mean towards itself and
    would make benign values too small, so every suspect would look unusual.
    """
    m = len(topk_ids)
    if m < 2:
        raise ValueError(f"topk_ids: leave-one-out needs at least 2 clean models, got {m}")
    dead = list(dead_units) if dead_units is not None else [None] * m
    if len(dead) != m:
        raise ValueError(f"dead_units: {len(dead)} entries for {m} models")
    maj = [majority_classes(t, image_labels, n_classes, d) for t, d in zip(topk_ids, dead)]
    shares = np.stack([class_shares(x, n_classes) for x in maj])
    out = []
    for i in range(m):
        ev = class_share_evidence(shares[i], np.delete(shares, i, axis=0), int((maj[i] >= 0).sum()))
        out.append(unit_class_evidence(topk_ids[i], image_labels, ev, dead[i]))
    return out if per_model else np.concatenate(out)


# =========================================================================== calibration

@dataclass
class UnitScores:
    """Suspicion of each unit of one layer, with what drove it."""

    suspicion: np.ndarray                 # [J] combined, in [0, 1]; NaN where no measure is defined
    per_measure: dict[str, np.ndarray]    # measure → [J] calibrated suspicion
    values: dict[str, np.ndarray]         # measure → [J] raw value
    driver: list[str | None]              # per unit: the measure with the highest suspicion


def combine(per_measure: Mapping[str, Any]) -> np.ndarray:
    """Combined suspicion of a unit from its measures' suspicions: the Šidák-corrected
    maximum, ``s = (max_i s_i)^m`` over the m measures defined for that unit (NaN skipped;
    NaN when none is defined).

    Why this rule: in p-value terms (p_i = 1 − s_i) it is Šidák's ``1 − (1 − min p)^m``. If
    a benign unit's m calibrated suspicions are independent and uniform, P(max ≤ u^{1/m})
    = u, so its combined suspicion is exactly uniform: a threshold t flags a fraction
    1 − t of benign units whatever m is. Correlated measures (CLIP-δ, τ and overlap move
    together) make it conservative (benign units score lower), never anti-conservative,
    unlike Fisher's method, which assumes independence and over-flags correlated
    evidence. One strong measure is enough to flag (an 8-unit push-down may move only
    the top-k), which a mean would dilute.
    """
    if not per_measure:
        raise ValueError("per_measure: no measure given")
    arrs = [_float(v, f"per_measure[{k!r}]", 1) for k, v in per_measure.items()]
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"per_measure: measures have different unit counts {[a.shape[0] for a in arrs]}")
    stack = np.stack(arrs)                               # [m, J]
    defined = ~np.isnan(stack)
    m = defined.sum(axis=0)
    mx = np.max(np.where(defined, stack, -np.inf), axis=0)
    with np.errstate(invalid="ignore"):
        out = np.where(m > 0, np.maximum(mx, 0.0) ** m, np.nan)
    return out


def unit_scores(per_measure: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray]) -> UnitScores:
    """Each unit's combined suspicion (:func:`combine`) and the measure that drove it (its highest
    suspicion), from per-measure suspicions [J] however they were calibrated (pooled benign values,
    or the benign envelope of :mod:`fvaudit.engine.detection.envelope`)."""
    names = list(per_measure)
    stack = np.stack([per_measure[k] for k in names])
    driver = [None if np.isnan(stack[:, j]).all() else names[int(np.nanargmax(stack[:, j]))]
              for j in range(stack.shape[1])]
    return UnitScores(combine(per_measure), dict(per_measure), dict(values), driver)


@dataclass
class Calibration:
    """Per evidence measure, the benign distribution its values are judged against (SPEC §6:
    "calibrated against benign fine-tunes (α = 0, several seeds) so that ordinary
    fine-tuning does not raise a flag").

    ``benign[measure]`` holds the sorted finite benign values: the units of α = 0
    fine-tunes against their reference (with a reference), or of clean models against the
    rest of the population (without one).
    """

    benign: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, benign_values: Mapping[str, Any]) -> "Calibration":
        """Store each measure's benign values (any shape, raveled; NaN — dead units,
        undefined τ — dropped). Every measure needs at least one finite value."""
        benign = {}
        for name, vals in benign_values.items():
            v = _float(vals, f"benign_values[{name!r}]").ravel()
            v = v[~np.isnan(v)]
            if v.size == 0:
                raise ValueError(f"benign_values[{name!r}]: no finite benign value to calibrate against")
            benign[name] = np.sort(v)
        if not benign:
            raise ValueError("benign_values: no measure given")
        return cls(benign)

    def suspicion(self, measure: str, values: Any) -> np.ndarray:
        """Calibrated suspicion of ``values`` of one measure: the smoothed mid-rank
        empirical CDF of the n benign values,

            F(v) = (#{b < v} + ½·#{b = v} + ½) / (n + 1),

        NaN for NaN. Why this form: it is the upper-tail permutation p-value turned around
        (1 − F(v) = (#{b > v} + ½#{b = v} + ½)/(n + 1)); a value beyond every benign one
        scores (n + ½)/(n + 1) < 1 and one below every benign one ½/(n + 1) > 0, so no
        finite calibration set makes anything certain; and a benign value exchangeable
        with the n calibration values takes each of the n + 1 levels (i + ½)/(n + 1) with
        equal probability (no ties): uniform, mean ½. Monotone non-decreasing in v.
        """
        if measure not in self.benign:
            raise ValueError(f"measure: {measure!r} is not calibrated (have {sorted(self.benign)})")
        b = self.benign[measure]
        v = _float(values, "values")
        below = np.searchsorted(b, v, side="left")
        at_or_below = np.searchsorted(b, v, side="right")
        f = (below + 0.5 * (at_or_below - below) + 0.5) / (b.size + 1.0)
        return np.where(np.isnan(v), np.nan, f)

    def score(self, measures: Mapping[str, Any]) -> UnitScores:
        """Suspicion of every unit of one layer from its measures (keys must be calibrated;
        arrays [J]): each measure calibrated by :meth:`suspicion`, combined by :func:`combine`."""
        if not measures:
            raise ValueError("measures: no measure given")
        values = {k: _float(v, f"measures[{k!r}]", 1) for k, v in measures.items()}
        return unit_scores({k: self.suspicion(k, v) for k, v in values.items()}, values)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form (a job stores the calibration it used next to its verdicts)."""
        return {k: v.tolist() for k, v in self.benign.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> "Calibration":
        return cls.fit(d)


# =========================================================================== verdicts

@dataclass(frozen=True)
class VerdictThresholds:
    """Thresholds of :func:`layer_verdict` / :func:`model_verdict` (SPEC §6).

    The defaults are conventional statistical levels, **not fitted to any benchmark
    variant**: a unit counts as flagged above suspicion 0.95 (1 in 20 benign units is
    expected to), and as localised above localisation 0.99 (the stricter level of a unit test
    read on every unit of a layer: 1 in 100 benign units); a layer or model is "suspicious"
    below p = 0.05 and "manipulated" below p = 0.001.
    """

    unit: float = 0.95
    localised: float = 0.99
    suspicious_p: float = 0.05
    manipulated_p: float = 0.001
    top_units: int = 10

    def __post_init__(self):
        if not 0.0 < self.unit < 1.0:
            raise ValueError(f"unit: must lie in (0, 1), got {self.unit}")
        if not 0.0 < self.localised < 1.0:
            raise ValueError(f"localised: must lie in (0, 1), got {self.localised}")
        if not 0.0 < self.manipulated_p <= self.suspicious_p < 1.0:
            raise ValueError("manipulated_p / suspicious_p: need 0 < manipulated_p ≤ suspicious_p < 1, "
                             f"got {self.manipulated_p} / {self.suspicious_p}")
        if self.top_units < 0:
            raise ValueError(f"top_units: must be ≥ 0, got {self.top_units}")

    def level(self, p: float) -> str:
        if p < self.manipulated_p:
            return "manipulated"
        if p < self.suspicious_p:
            return "suspicious"
        return "no sign"


@dataclass
class Verdict:
    """A verdict and the evidence that drove it (SPEC §6 "with the evidence that drove it")."""

    name: str                   # layer name, or "model"
    verdict: str                # one of VERDICTS, or INCONCLUSIVE
    p_value: float | None       # combined p-value the thresholds were applied to (None: inconclusive)
    n_units: int                # units with a defined suspicion
    n_flagged: int | None       # of those, suspicion > thresholds.unit (None: inconclusive)
    expected_flagged: float | None  # n_units · (1 − thresholds.unit): what benign units give
    p_units: float | None       # binomial tail of n_flagged (None: inconclusive)
    layer_evidence: dict[str, float] = field(default_factory=dict)   # name → suspicion
    top_units: list[dict] = field(default_factory=list)
    flagged_class: int | None = None       # the over-represented class (push-up decoy), if that evidence was given
    layers: list["Verdict"] = field(default_factory=list)            # model verdict: its layers

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "verdict", "p_value", "n_units", "n_flagged",
                                            "expected_flagged", "p_units", "layer_evidence",
                                            "top_units", "flagged_class")}
        d["layers"] = [v.to_dict() for v in self.layers]
        return d


def _sidak(p: Sequence[float]) -> float:
    """Šidák-corrected minimum of m p-values: 1 − (1 − min p)^m (see :func:`combine`)."""
    p = [x for x in p if not np.isnan(x)]
    if not p:
        return 1.0
    return float(1.0 - (1.0 - min(p)) ** len(p))


def _json_float(x: float) -> float | None:
    """An undefined measure (NaN) is ``None`` in the evidence, so it serialises as JSON null."""
    return None if np.isnan(x) else float(x)


def layer_verdict(name: str, scores: UnitScores, *, layer_evidence: Mapping[str, float] | None = None,
                  class_evidence: ClassShareEvidence | None = None, overdispersion: Any = None,
                  thresholds: VerdictThresholds = VerdictThresholds()) -> Verdict:
    """Verdict of one layer (SPEC §6) from its units' suspicions and layer-level evidence.

    Units: under no manipulation a unit's suspicion is ≈ uniform (:func:`combine`), so the
    number of units above ``thresholds.unit`` is Binomial(J, 1 − unit); ``p_units`` is its
    upper tail at the observed count. This catches an all-channel attack (many units a
    little above) and a few-unit attack (a handful far above) with one rule.
    Layer-level evidence (each a suspicion in [0, 1], e.g. the calibrated
    ``layer_weight_distance``; ``class_evidence.suspicion`` is added as ``class_share``)
    gives p = 1 − s each. The layer's p-value is the Šidák-corrected minimum over all of
    them; ``thresholds.level`` names the verdict. With ``overdispersion``
    (:class:`~fvaudit.engine.detection.envelope.Overdispersion`, fitted on clean models'
    leave-one-out counts) the count is tested with its beta-binomial instead: units of one
    model share that model's shift, so they are not independent draws. ``top_units``: the most suspicious units
    with each measure's value and suspicion and the measure that drove them.
    """
    s = scores.suspicion
    live = ~np.isnan(s)
    n = int(live.sum())
    flagged = int((s[live] > thresholds.unit).sum())
    rate = 1.0 - thresholds.unit
    if overdispersion is not None:
        from fvaudit.engine.detection.envelope import count_p_value

        p_units = count_p_value(flagged, n, overdispersion)
        rate = overdispersion.rate
    else:
        p_units = float(stats.binom.sf(flagged - 1, n, rate)) if n else 1.0
    ev = {k: float(v) for k, v in (layer_evidence or {}).items()}
    if class_evidence is not None:
        ev["class_share"] = class_evidence.suspicion
    for k, v in ev.items():
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"layer_evidence[{k!r}]: a suspicion must lie in [0, 1], got {v}")
    p = _sidak([p_units] + [1.0 - v for v in ev.values()])
    order = [int(j) for j in np.argsort(-np.where(live, s, -np.inf), kind="stable") if live[j]]
    top = [{
        "unit": j,
        "suspicion": float(s[j]),
        "driver": scores.driver[j],
        "measures": {k: {"value": _json_float(scores.values[k][j]),
                         "suspicion": _json_float(scores.per_measure[k][j])} for k in scores.values},
    } for j in order[:thresholds.top_units]]
    return Verdict(name, thresholds.level(p), p, n, flagged, n * rate, p_units, ev, top,
                   class_evidence.flagged_class if class_evidence is not None else None)


def model_verdict(layers: Sequence[Verdict], thresholds: VerdictThresholds = VerdictThresholds()) -> Verdict:
    """Verdict of the model (SPEC §6): the Šidák-corrected minimum of its layers' p-values,
    so that auditing more layers does not by itself raise a flag. Its evidence is the layer
    that drove it (its top units and flagged class); every layer's verdict is kept. Layers
    "out of calibration" are left out of the p-value: a model whose judged layers show
    something keeps that verdict; one whose judged layers show nothing, or that has none, is
    "out of calibration" itself (it cannot be cleared where it could not be judged)."""
    if not layers:
        raise ValueError("layers: no layer verdict given")
    judged = [v for v in layers if v.verdict != OUT_OF_CALIBRATION]
    if not judged:                       # every layer moved beyond the calibration's reach
        worst = min(layers, key=lambda v: v.p_value)
        return Verdict("model", OUT_OF_CALIBRATION, None, sum(v.n_units for v in layers),
                       sum(v.n_flagged for v in layers), sum(v.expected_flagged for v in layers), worst.p_units,
                       {f"{worst.name}:{k}": v for k, v in worst.layer_evidence.items()},
                       [dict(u, layer=worst.name) for u in worst.top_units], worst.flagged_class, list(layers))
    p = _sidak([v.p_value for v in judged])
    worst = min(judged, key=lambda v: v.p_value)
    level = thresholds.level(p)
    if level == "no sign" and len(judged) < len(layers):
        level = OUT_OF_CALIBRATION        # the layers that could be judged show nothing; the others cannot be
    return Verdict("model", level, p, sum(v.n_units for v in layers),
                   sum(v.n_flagged for v in layers), sum(v.expected_flagged for v in layers), worst.p_units,
                   {f"{worst.name}:{k}": v for k, v in worst.layer_evidence.items()},
                   [dict(u, layer=worst.name) for u in worst.top_units], worst.flagged_class, list(layers))


def out_of_calibration(v: Verdict, size: float, reach: float) -> Verdict:
    """``v`` when the suspect moved further than any clean model of the calibration did
    (``size`` > ``reach``): its evidence is kept, but the verdict is :data:`OUT_OF_CALIBRATION`,
    not "suspicious" or "manipulated". Why: the benign envelope is known only up to the
    family's reach; beyond it, a flag may be an honest but bigger fine-tune (issue 24)."""
    return Verdict(v.name, OUT_OF_CALIBRATION, v.p_value, v.n_units, v.n_flagged, v.expected_flagged, v.p_units,
                   {**v.layer_evidence}, list(v.top_units), v.flagged_class, list(v.layers))


def inconclusive(v: Verdict) -> Verdict:
    """``v`` without the claims its calibration cannot support: verdict :data:`INCONCLUSIVE`,
    no p-value, no flag counts (its layers too). The units keep their order (``top_units``):
    which units moved most against the clean models is still worth looking at, but not
    how unlikely that is."""
    return Verdict(v.name, INCONCLUSIVE, None, v.n_units, None, None, None, dict(v.layer_evidence),
                   list(v.top_units), v.flagged_class, [inconclusive(x) for x in v.layers])


# =========================================================================== evaluation

def unit_auroc(scores: Any, labels: Any) -> float:
    """Unit-level ROC AUC (SPEC §6 evaluation protocol): the Mann–Whitney U of the positive
    (attacked) units' scores against the negative ones, divided by n_pos·n_neg, ties counted
    one half. Equals the probability that a random attacked unit outscores a random clean
    one. ``scores`` [n] finite (leave dead units out before calling), ``labels`` [n] bool /
    0-1 with both classes present.
    """
    x = _float(scores, "scores", 1)
    y = _array(labels, "labels", 1)
    if y.shape != x.shape:
        raise ValueError(f"labels: {y.shape[0]} labels for {x.shape[0]} scores")
    if not np.isfinite(x).all():
        raise ValueError("scores: holds NaN or infinite values (leave undefined units out first)")
    if not np.isin(y, [0, 1]).all():
        raise ValueError("labels: expected 0/1 or booleans")
    pos = y.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels: need both positives and negatives, got {n_pos} / {n_neg}")
    ranks = stats.rankdata(x)                     # average ranks: a tie counts one half
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
