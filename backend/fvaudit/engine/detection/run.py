"""Running a detection end to end (SPEC §6): scan every model taking part, embed the top-k,
compute each layer's evidence, calibrate it against clean models, and give verdicts.

:mod:`fvaudit.engine.detection.evidence` holds the evidence measures, the calibration and the
verdict rules as pure array functions; this module feeds them from loaded models, so the
``detect`` job, ``bench/detection.py`` and a notebook run the same path. Torch, numpy and
the engine only: no DB, no web.

Two regimes (SPEC §6):

* **with a reference** (the model the suspect claims to derive from): per unit CLIP-δ,
  1 − Kendall-τ, 1 − top-k overlap (reference → suspect, SPEC §3) and the relative L2
  distance of the unit's filter; per layer the relative weight distance of the conv that
  produces the layer. The *population* here are benign fine-tunes of the reference
  (α = 0, other seeds): each is measured against the reference exactly like the suspect,
  and those values are the calibration ("ordinary fine-tuning does not raise a flag").
* **without a reference**: the *population* are clean models of the same family (other
  training seeds, other public checkpoints). Per layer, each class's share of unit
  majorities against the population's; per unit, how much of its top-k lies in the
  over-represented classes; calibrated leave-one-out over the population.

Why the suspect is never in its own calibration: the calibration values are what a clean
model gives; a flagged unit is one the clean models rarely reach.
"""
from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from fvaudit.engine.detection import envelope, evidence
from fvaudit.engine.scans.activations import LayerScan, scan
from fvaudit.engine.progress import NullReporter, Reporter, check_cancel

#: the per-unit measures of each regime (SPEC §6), in the order they are reported
REFERENCE_MEASURES = ("clip_delta", "tau_drop", "overlap_loss", "weight_distance", "synthetic_change")
POPULATION_MEASURES = ("class_share",)

#: the fewest clean models each regime's statistics need (see :func:`too_few_clean_models`)
MIN_CLEAN_MODELS = {"reference": 3, "population": 4}


def too_few_clean_models(regime: str, n_clean: int) -> str | None:
    """Why a population of ``n_clean`` clean models cannot support a verdict, else None.

    The minimum, and why. The calibration pools the units of the clean models as the
    benign distribution, and the layer's p-value is a binomial tail over units: both treat
    a clean suspect's units as exchangeable with the benign values. That holds only if the
    benign values already contain what makes one clean model differ from another: a
    fine-tune's seed and drift move *every* unit of that model together. With one clean
    model the benign values are one such draw, so a clean suspect that drifted a little
    further (another seed, a few more steps) has every unit beyond every benign value:
    every unit gets the same, maximal suspicion (n + ½)/(n + 1), and the binomial counts
    that one model-level difference as J independent ones (issue 19: 113/113 units
    flagged, p < 1e-15, from a single clean model). Model-to-model spread is first seen
    with two clean models, and the count test allows for it (issue 24): each clean model is
    scored against a calibration fitted on the *others* (leave-one-model-out), and how much
    their flagged counts vary beyond the binomial (a beta-binomial's overdispersion,
    :func:`~fvaudit.engine.detection.envelope.overdispersion`) widens the suspect's test. A
    spread needs two such counts, and each count a calibration of at least two models
    (with a reference, two sizes for the envelope's line), so

    * with a reference, benign fine-tunes of it measured against it: at least **3**;
    * without one, clean models of the family judged against each other: at least **4**
      (each leave-one-out calibration holds 3, and the class-share test's Student t has
      M − 1 ≥ 2 degrees of freedom: with 2 clean models of unequal training, 2 vs 6 epochs,
      a clean retrained seed read p ≈ 1e-9).

    Below that the detection says so (verdict :data:`~fvaudit.engine.detection.evidence.INCONCLUSIVE`,
    no p-value, no flags) instead of printing a p-value it cannot support. Even at the
    minimum, the p-value leans on units being exchangeable across models: a model-level
    rank among M clean models alone could not go below 1/(M + 1); more clean models make
    the calibration, and so the verdict, more trustworthy.
    """
    need = MIN_CLEAN_MODELS[regime]
    if n_clean >= need:
        return None
    what = ("benign fine-tunes of the reference" if regime == "reference" else "clean models of the family")
    return (f"inconclusive: {n_clean} clean model{'s' if n_clean != 1 else ''} in the population; this check needs "
            f"at least {need} {what} to tell a manipulation from the ordinary difference between two clean models "
            f"(with fewer, every unit that moved a little more than the one clean model looks alike). The units are "
            f"ranked by suspicion, but no p-value or flag is given: add clean models and run it again.")


EmbedTopK = Callable[[np.ndarray], np.ndarray]
EmbedImages = Callable[[list], np.ndarray]


@dataclass(frozen=True)
class SyntheticOptions:
    """Synthetic change (SPEC §4, §6): every unit of a layer is rendered with the same ``seeds``
    under the reference and under each other model, and the renders are embedded; a seed's
    image under two weights differs only by the weights, and the reference's own seed-to-seed
    spread is the noise floor (:func:`fvaudit.engine.detection.evidence.synthetic_change`)."""

    seeds: tuple[int, ...] = (0, 1)
    steps: int = 64

    def __post_init__(self):
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise DetectError(f"synthetic.seeds: need at least 2 distinct seeds (the noise floor), got {self.seeds}")
        if self.steps < 1:
            raise DetectError(f"synthetic.steps: must be ≥ 1, got {self.steps}")


class DetectError(ValueError):
    """A detection that cannot be run as asked (which argument, and why)."""


@dataclass
class Subject:
    """A model taking part in a detection: the suspect, the reference, or a population member."""

    name: str
    model: Any                                  # engine LoadedModel
    scans: dict[str, LayerScan] = field(default_factory=dict)
    synthetic: dict[str, np.ndarray] = field(default_factory=dict)    # layer → render embeddings [J, n, D]
    recipe: str | None = None                   # a benign fine-tune's recipe (what the calibration family spans)
    measured: dict = field(default_factory=dict)   # cache of :func:`measured` (values, size) per reference and layer


@dataclass
class LayerDetection:
    """One layer's outcome: the verdict, every unit's scores, and what they were computed from."""

    layer: str
    verdict: evidence.Verdict
    scores: evidence.UnitScores
    calibration: Any                            # envelopes per measure (reference) or a Calibration (population)
    dead_units: list[int]
    topk_suspect: np.ndarray                    # [J, k] image ids
    topk_reference: np.ndarray | None           # [J, k] (reference regime)
    class_evidence: evidence.ClassShareEvidence | None = None
    layer_values: dict[str, float] = field(default_factory=dict)    # raw layer-level evidence values
    benign_sizes: dict[str, int] = field(default_factory=dict)
    localisation: np.ndarray | None = None      # [J] suspicion with the suspect's model-level shift taken out
    overdispersion: Any = None                  # envelope.Overdispersion the unit count was tested with
    overdispersion_localised: Any = None        # the same for the count of localised units
    benign_points: list[dict] = field(default_factory=list)   # per benign model: recipe, size, median measures
    out_of_calibration: bool = False            # the suspect moved further than any benign model (its size > reach)

    def localised(self, unit: float, top: int = 10) -> list[dict]:
        """The units whose explanation moved beyond what the model's overall change explains
        (localisation above ``unit``), most localised first, at most ``top``."""
        if self.localisation is None:
            return []
        loc = self.localisation
        order = [int(j) for j in np.argsort(-np.where(np.isnan(loc), -np.inf, loc), kind="stable")
                 if not np.isnan(loc[j]) and loc[j] > unit]
        return [{"unit": j, "localisation": float(loc[j]), "suspicion": evidence._json_float(self.scores.suspicion[j]),
                 "driver": self.scores.driver[j]} for j in order[:top]]

    def calibration_summary(self) -> dict | None:
        """What the reference regime was calibrated with and how far it reaches (issue 24), JSON-ready:
        the family's recipes and sizes, each measure's envelope line, the suspect's size and point,
        the count test's overdispersion; None in the population regime."""
        if not isinstance(self.calibration, dict):
            return None
        size = self.layer_values.get("change_size")
        suspect_median = {m: evidence._json_float(float(np.nanmedian(v))) if np.isfinite(v).any() else None
                          for m, v in self.scores.values.items()}
        return {"recipes": sorted({p["recipe"] or "unnamed" for p in self.benign_points}),
                "benign": self.benign_points, "reach": self.layer_values.get("reach"),
                "reach_low": self.layer_values.get("reach_low"), "size": size,
                "out_of_calibration": self.out_of_calibration,
                "envelopes": {m: {**e.to_dict(), "expected_at_size": e.expected_value(size),
                                  "upper95_at_size": e.upper_value(size), "band": _band(e, size)}
                              for m, e in self.calibration.items()},
                "suspect_median": suspect_median,
                "overdispersion": None if self.overdispersion is None else self.overdispersion.to_dict(),
                "overdispersion_localised": (None if self.overdispersion_localised is None
                                             else self.overdispersion_localised.to_dict())}

    def units(self) -> list[dict]:
        """Per unit, JSON-ready: suspicion, the measure that drove it, each measure's value and suspicion."""
        s = self.scores
        dead = set(self.dead_units)
        out = []
        for j in range(len(s.suspicion)):
            out.append({
                "unit": j, "dead": j in dead,
                "suspicion": evidence._json_float(s.suspicion[j]),
                "localisation": (None if self.localisation is None
                                 else evidence._json_float(self.localisation[j])),
                "driver": s.driver[j],
                "measures": {m: {"value": evidence._json_float(s.values[m][j]),
                                 "suspicion": evidence._json_float(s.per_measure[m][j])} for m in s.values},
                "topk_suspect": [int(i) for i in self.topk_suspect[j]],
                "topk_reference": (None if self.topk_reference is None
                                   else [int(i) for i in self.topk_reference[j]]),
            })
        return out


@dataclass
class DetectionReport:
    """The whole detection: the model verdict, each layer's outcome, and how it was run."""

    regime: str
    verdict: evidence.Verdict
    layers: dict[str, LayerDetection]
    k: int
    k_clip: int
    population: list[str]
    thresholds: evidence.VerdictThresholds
    notes: list[str] = field(default_factory=list)
    #: what the reader must know before trusting the verdict (shown on the detection's page)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready verdicts (model and layers, with the evidence that drove them); no per-unit lists."""
        layers = {}
        for name, ld in self.layers.items():
            v = ld.verdict.to_dict()
            v.pop("layers", None)
            ce = ld.class_evidence
            layers[name] = {**v, "measures": list(ld.scores.values), "layer_values": ld.layer_values,
                            "benign_sizes": ld.benign_sizes, "dead_units": ld.dead_units,
                            "calibration": ld.calibration_summary(),
                            "localised_units": ld.localised(self.thresholds.localised),
                            "class_shares": None if ce is None else {
                                "suspect": ce.shares.tolist(), "population_mean": ce.pop_mean.tolist(),
                                "z": [evidence._json_float(x) for x in ce.z]}}
        model = self.verdict.to_dict()
        model.pop("layers", None)
        return {"regime": self.regime, "verdict": self.verdict.verdict, "p_value": self.verdict.p_value,
                "model": model, "layers": layers, "k": self.k, "k_clip": self.k_clip,
                "population": self.population, "notes": self.notes, "warnings": self.warnings,
                "thresholds": {"unit": self.thresholds.unit, "localised": self.thresholds.localised, "suspicious_p": self.thresholds.suspicious_p,
                               "manipulated_p": self.thresholds.manipulated_p}}

    def units(self) -> dict[str, list[dict]]:
        return {name: ld.units() for name, ld in self.layers.items()}


# =========================================================================== weights

def producer_weight(model: Any, layer: str) -> np.ndarray:
    """The weight of the conv/linear whose output channels are ``layer``'s units, unit first
    (:func:`fvaudit.engine.defence.methods.producing_layer`), as float64 numpy."""
    from fvaudit.engine.defence.methods import producing_layer

    name = producing_layer(model, layer)
    mod = dict(model.module.named_modules())[name]
    return mod.weight.detach().to("cpu", torch.float64).numpy()


def producer_params(model: Any, layer: str) -> list[np.ndarray]:
    """Weight and bias (when present) of the producing conv/linear: the layer-level weight distance."""
    from fvaudit.engine.defence.methods import producing_layer

    mod = dict(model.module.named_modules())[producing_layer(model, layer)]
    out = [mod.weight.detach().to("cpu", torch.float64).numpy()]
    if getattr(mod, "bias", None) is not None:
        out.append(mod.bias.detach().to("cpu", torch.float64).numpy())
    return out


# =========================================================================== scans

def scan_subjects(subjects: Sequence[Subject], images: Any, layers: Sequence[str], k: int, *,
                  batch_size: int = 256, device: str = "cpu", reporter: Reporter | None = None,
                  work_dir: str | Path | None = None, scan_fn: Callable | None = None) -> None:
    """Fill every subject's ``scans`` (one pass per model; the score matrices go under
    ``work_dir`` so an ImageNet-size matrix is memory-mapped, not held in RAM)."""
    reporter = reporter or NullReporter()
    scan_fn = scan_fn or scan
    for i, sub in enumerate(subjects):
        if sub.scans:
            continue
        check_cancel(reporter)
        reporter.stage(f"scan {sub.name} ({i + 1}/{len(subjects)})")
        # a fresh directory per scan: a caller that reuses subjects across detections (the
        # benchmark) keeps earlier subjects' memory-mapped score matrices intact
        out = None
        if work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            out = Path(tempfile.mkdtemp(prefix=f"scan-{i}-", dir=work_dir))
        res = scan_fn(sub.model, images, layers, k=k, batch_size=batch_size, device=device, out_dir=out,
                      reporter=reporter)
        sub.scans = {sub.model.layer(l).name: res.layers[sub.model.layer(l).name] for l in layers}


def synthetic_embeddings(sub: Subject, layer: str, opts: SyntheticOptions, embed_images: EmbedImages, *,
                         device: str = "cpu", reporter: Reporter | None = None) -> np.ndarray:
    """Embeddings [J, n, D] of every unit's synthetic images (n = len(opts.seeds)), cached on the subject."""
    if layer in sub.synthetic:
        return sub.synthetic[layer]
    from fvaudit.engine.synthesis.config import SynthesisConfig
    from fvaudit.engine.synthesis.render import synthesize_many

    reporter = reporter or NullReporter()
    check_cancel(reporter)
    res = synthesize_many(sub.model, layer, None, list(opts.seeds), SynthesisConfig(steps=opts.steps, device=device),
                          reporter)
    j, n = len(res[0].units), len(res)
    imgs = []
    for u in range(j):
        for r in res:
            im = r.images[u]
            imgs.append(im[..., 0] if im.ndim == 3 and im.shape[-1] == 1 else im)
    e = np.asarray(embed_images(imgs), dtype=np.float64)
    sub.synthetic[layer] = e.reshape(j, n, -1)
    return sub.synthetic[layer]


# =========================================================================== regimes

def _embed(embed_topk: EmbedTopK | None, ids: np.ndarray, k_clip: int) -> np.ndarray | None:
    return None if embed_topk is None else np.asarray(embed_topk(np.asarray(ids)[:, :k_clip]), dtype=np.float64)


def reference_values(ref: LayerScan, sus: LayerScan, ref_model: Any, sus_model: Any, layer: str, *,
                     k_clip: int, embed_topk: EmbedTopK | None, measures: Sequence[str],
                     synth_ref: np.ndarray | None = None, synth_sus: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The per-unit measures of one layer, reference → model (SPEC §6, with a reference)."""
    if ref.units != sus.units:
        raise DetectError(f"layer {layer}: the reference has {ref.units} units and the model {sus.units}; "
                          "a reference must have the suspect's architecture")
    e_ref, e_sus = _embed(embed_topk, ref.topk_ids, k_clip), _embed(embed_topk, sus.topk_ids, k_clip)
    if e_ref is None:                      # no embedder: CLIP-δ undefined, the rest still measured
        e_ref = e_sus = np.ones((ref.units, 1, 1))
    w = ("weight_distance" in measures)
    vals = evidence.reference_measures(ref.topk_ids[:, :k_clip], sus.topk_ids[:, :k_clip], e_ref, e_sus,
                                r_ref=np.asarray(ref.scores), r_sus=np.asarray(sus.scores),
                                w_ref=producer_weight(ref_model, layer) if w else None,
                                w_sus=producer_weight(sus_model, layer) if w else None,
                                synth_ref=synth_ref, synth_sus=synth_sus, dead_units=ref.dead_units)
    if embed_topk is None:
        vals.pop("clip_delta")
    return {m: vals[m] for m in measures if m in vals}


def cumulative_params(model: Any, layer: str) -> list[np.ndarray]:
    """Weights and biases of every conv/linear that runs up to and including ``layer``'s producer,
    in execution order, as float64 numpy: everything a unit's activation depends on (issue 24:
    the size of a layer's change is measured over all of them)."""
    from fvaudit.engine.defence.methods import _execution_order, producing_layer, prunable_layers

    module = model.module
    producer = producing_layer(model, layer)
    names = [n for n, _ in prunable_layers(module)]
    order = _execution_order(module, tuple(model.input_shape), names) if len(names) > 1 else names
    mods = dict(module.named_modules())
    out = []
    for n in order[:order.index(producer) + 1] if producer in order else [producer]:
        for pname in ("weight", "bias"):
            t = getattr(mods[n], pname, None)
            if t is not None:
                out.append(t.detach().to("cpu", torch.float64).numpy())
    return out


def change_size(ref_model: Any, model: Any, layer: str) -> float:
    """The size of ``model``'s change from ``ref_model`` as seen by ``layer`` (issue 24): the
    relative L2 distance of all the parameters that produce it (:func:`cumulative_params`)."""
    return evidence.layer_weight_distance({layer: cumulative_params(ref_model, layer)},
                                          {layer: cumulative_params(model, layer)})[layer]


def measured(reference: Subject, sub: Subject, layer: str, *, k_clip: int, embed_topk: EmbedTopK | None,
             measures: Sequence[str], synth: Callable[[Subject], np.ndarray] | None = None
             ) -> tuple[dict[str, np.ndarray], float]:
    """``sub``'s per-unit measures against ``reference`` on ``layer`` and the size of its change,
    cached on ``sub`` (a benchmark reuses them across calibrations)."""
    key = (reference.name, layer, k_clip, embed_topk is not None, tuple(measures), synth is not None)
    if key not in sub.measured:
        vals = reference_values(reference.scans[layer], sub.scans[layer], reference.model, sub.model, layer,
                                k_clip=k_clip, embed_topk=embed_topk, measures=measures,
                                synth_ref=synth(reference) if synth is not None else None,
                                synth_sus=synth(sub) if synth is not None else None)
        sub.measured[key] = (vals, change_size(reference.model, sub.model, layer))
    return sub.measured[key]


def label_flips(ref: LayerScan, sus: LayerScan, image_labels: np.ndarray, class_names: Sequence[str]) -> dict:
    """What an interpreter would now conclude (issue 22): the share of the layer's live units whose
    class-concept label (the most over-represented class of the top-k) differs between the
    reference and the suspect, and the class most units moved to."""
    from fvaudit.engine.measure.labels import class_concept_labels, label_flip_rate

    dead = list(ref.dead_units)
    before = class_concept_labels(ref.topk_ids, image_labels, class_names or None, dead=dead)
    after = class_concept_labels(sus.topk_ids, image_labels, class_names or None, dead=dead)
    out = {"label_flip_rate": label_flip_rate(before, after)["flip_rate"]}
    moved = [a.label for b, a in zip(before, after) if b.label is not None and a.label is not None and a.label != b.label]
    if moved:
        cls = int(np.bincount(moved).argmax())
        out["label_flip_to"] = cls
        out["label_flip_to_share"] = float(np.mean([m == cls for m in moved]))
    return out


def _band(env: envelope.Envelope, size: float, n: int = 24) -> list[dict]:
    """The envelope drawn: at ``n`` sizes spanning the benign family and the suspect (log
    spaced), the line (what a benign model's median unit moves) and the 95th percentile of
    benign units near that size: the plot the verdict page draws."""
    lo = min(float(env.sizes.min()), size if size > 0 else float(env.sizes.min())) / 1.5
    hi = max(float(env.sizes.max()), size) * 1.5
    return [{"size": float(x), "expected": env.expected_value(float(x)), "upper95": env.upper_value(float(x))}
            for x in np.exp(np.linspace(np.log(max(lo, envelope.MIN_SIZE)), np.log(hi), n))]


def _flag_count(scores: np.ndarray, unit: float) -> tuple[int, int]:
    live = ~np.isnan(scores)
    return int((scores[live] > unit).sum()), int(live.sum())


def _envelope_scores(envs: dict, values: dict[str, np.ndarray], size: float) -> evidence.UnitScores:
    return evidence.unit_scores(envelope.score_units(envs, values, size),
                                {m: np.asarray(values[m], dtype=np.float64) for m in envs})


def _detect_reference(suspect: Subject, reference: Subject, population: Sequence[Subject], layer: str, *,
                      k_clip: int, embed_topk: EmbedTopK | None, measures: Sequence[str],
                      thresholds: evidence.VerdictThresholds, synth: Callable[[Subject], np.ndarray] | None = None
                      ) -> LayerDetection:
    """One layer with a reference (issue 24): each measure's benign envelope over the family's
    sizes, the suspect's units scored by their excess at the suspect's own size, the count of
    flagged units tested against the family's own model-to-model spread (leave-one-model-out),
    "out of calibration" beyond the family's reach, and the units localised inside the suspect."""
    benign = [measured(reference, p, layer, k_clip=k_clip, embed_topk=embed_topk, measures=measures, synth=synth)
              for p in population]
    names = [m for m in measures if all(m in v for v, _ in benign)]
    sizes = [s for _, s in benign]

    def fit(idx: Sequence[int]) -> dict[str, envelope.Envelope]:
        return {m: envelope.fit_envelope(m, [sizes[i] for i in idx], [benign[i][0][m] for i in idx]) for m in names}

    envs = fit(range(len(benign)))
    # each benign model against an envelope fitted without it: its flagged units, and its
    # localised ones, are what a clean model of the family gives (their spread widens the tests)
    # (a model beyond the others' reach is left out, as such a suspect would be out of calibration)
    loo: list = [None] * len(benign)
    loo_loc: list = [None] * len(benign)
    if len(benign) >= 2:
        for i in range(len(benign)):
            others = [x for x in range(len(benign)) if x != i]
            if sizes[i] > envelope.reach([sizes[x] for x in others])[1]:
                continue
            envs_i = fit(others)
            sc = _envelope_scores(envs_i, benign[i][0], sizes[i])
            loo[i] = _flag_count(sc.suspicion, thresholds.unit)
            loo_loc[i] = _flag_count(evidence.combine(envelope.localise(envs_i, benign[i][0], sizes[i])),
                                     thresholds.localised)
    od = envelope.overdispersion([c for c in loo if c is not None], 1.0 - thresholds.unit)
    od_loc = envelope.overdispersion([c for c in loo_loc if c is not None], 1.0 - thresholds.localised)
    values, size = measured(reference, suspect, layer, k_clip=k_clip, embed_topk=embed_topk, measures=measures,
                            synth=synth)
    scores = _envelope_scores(envs, values, size)
    reach_lo, reach = envelope.reach(sizes)
    # a partial attack moves a few units far beyond the model's own shift: the count of
    # localised units, against the clean family's, is the second test of the layer (Šidák)
    loc = evidence.combine(envelope.localise(envs, values, size))
    n_loc, n_live = _flag_count(loc, thresholds.localised)
    p_loc = envelope.count_p_value(n_loc, n_live, od_loc)
    verdict = evidence.layer_verdict(layer, scores, overdispersion=od, thresholds=thresholds,
                                     layer_evidence={"localised_units": 1.0 - p_loc})
    out_of_cal = size > reach
    if out_of_cal and verdict.verdict != "no sign":
        verdict = evidence.out_of_calibration(verdict, size, reach)
    benign_points = [{"name": p.name, "recipe": p.recipe, "size": s,
                      "median": {m: float(np.nanmedian(v[m])) for m in names},
                      "q95": {m: float(np.nanquantile(v[m], 0.95)) for m in names},
                      "loo_flagged": list(c) if c else None, "loo_localised": list(cl) if cl else None}
                     for p, (v, s), c, cl in zip(population, benign, loo, loo_loc)]
    return LayerDetection(layer, verdict, scores, envs, list(reference.scans[layer].dead_units),
                          suspect.scans[layer].topk_ids, reference.scans[layer].topk_ids,
                          layer_values={"change_size": size, "reach": reach, "reach_low": reach_lo,
                                        "localised_units": n_loc,
                                        "producer_weight_distance": evidence.layer_weight_distance(
                                            {layer: producer_params(reference.model, layer)},
                                            {layer: producer_params(suspect.model, layer)})[layer]},
                          benign_sizes={m: int(e.residuals.size) for m, e in envs.items()},
                          localisation=loc, overdispersion=od, overdispersion_localised=od_loc,
                          benign_points=benign_points,
                          out_of_calibration=bool(out_of_cal))


def _detect_population(suspect: Subject, population: Sequence[Subject], layer: str, labels: np.ndarray,
                       n_classes: int, *, thresholds: evidence.VerdictThresholds) -> LayerDetection:
    pop_ids = [p.scans[layer].topk_ids for p in population]     # class shares over the whole top-k
    pop_dead = [p.scans[layer].dead_units for p in population]
    units = {p.scans[layer].units for p in population} | {suspect.scans[layer].units}
    if len(units) != 1:
        raise DetectError(f"layer {layer}: the models have different unit counts {sorted(units)}; "
                          "a population must share the suspect's architecture")
    per_model = evidence.population_class_evidence(pop_ids, labels, n_classes, pop_dead, per_model=True)
    cal = evidence.Calibration.fit({"class_share": np.concatenate(per_model)})
    # each clean model's flagged count against a calibration without it: the model-to-model
    # spread the count test must allow for (units of one model shift together)
    loo = []
    for i, v in enumerate(per_model):
        others = np.concatenate([x for j, x in enumerate(per_model) if j != i])
        if np.isfinite(others).any():
            sc = evidence.Calibration.fit({"class_share": others}).suspicion("class_share", v)
            loo.append(_flag_count(sc, thresholds.unit))
    od = envelope.overdispersion(loo, 1.0 - thresholds.unit)
    sus = suspect.scans[layer]
    maj = [evidence.majority_classes(t, labels, n_classes, d) for t, d in zip(pop_ids, pop_dead)]
    shares = np.stack([evidence.class_shares(m, n_classes) for m in maj])
    sus_maj = evidence.majority_classes(sus.topk_ids, labels, n_classes, sus.dead_units)
    ev = evidence.class_share_evidence(evidence.class_shares(sus_maj, n_classes), shares, int((sus_maj >= 0).sum()))
    values = {"class_share": evidence.unit_class_evidence(sus.topk_ids, labels, ev, sus.dead_units)}
    scores = cal.score(values)
    verdict = evidence.layer_verdict(layer, scores, class_evidence=ev, overdispersion=od, thresholds=thresholds)
    return LayerDetection(layer, verdict, scores, cal, list(sus.dead_units), sus.topk_ids, None, ev,
                          layer_values={"class_share_max_z": float(np.max(ev.z))},
                          benign_sizes={m: int(v.size) for m, v in cal.benign.items()}, overdispersion=od)


def detect(suspect: Subject, images: Any, layers: Sequence[str], *, reference: Subject | None = None,
           population: Sequence[Subject] = (), k: int = 10, k_clip: int = 5,
           embed_topk: EmbedTopK | None = None, measures: Sequence[str] | None = None,
           synthetic: SyntheticOptions | None = None, embed_images: EmbedImages | None = None,
           thresholds: evidence.VerdictThresholds = evidence.VerdictThresholds(), batch_size: int = 256,
           device: str = "cpu", reporter: Reporter | None = None,
           work_dir: str | Path | None = None) -> DetectionReport:
    """Check ``suspect`` on ``layers`` over ``images`` (SPEC §6) and give verdicts.

    ``reference`` given → the reference regime, ``population`` = benign fine-tunes of the
    reference (≥ 1); else the population regime, ``population`` = clean models of the
    family (≥ 2, for the leave-one-out calibration). ``embed_topk(ids [J, k_clip]) →
    [J, k_clip, E]`` embeds image ids (CLIP-δ; without it CLIP-δ is left out and said so).
    Subjects already scanned (``Subject.scans`` filled, e.g. by a caller that reuses
    scans across detections) are not scanned again. ``synthetic`` (reference regime, with
    ``embed_images(list of uint8 images) → [n, E]``) adds the synthetic-change measure:
    every unit rendered with the same seeds under every model (costly: a render per model
    and layer; renders are cached on the subjects like scans).
    """
    reporter = reporter or NullReporter()
    if not layers:
        raise DetectError("layers: give at least one layer")
    if reference is None and len(population) < 2:
        raise DetectError("population: without a reference, at least 2 clean models of the family are needed "
                          f"(the calibration leaves each out in turn); got {len(population)}")
    if reference is not None and len(population) < 1:
        raise DetectError("population: with a reference, at least 1 benign fine-tune of it is needed to calibrate")
    if not 0 < k_clip <= k:
        raise DetectError(f"k_clip: must lie in 1..k = {k}, got {k_clip}")
    regime = "reference" if reference is not None else "population"
    allowed = REFERENCE_MEASURES if regime == "reference" else POPULATION_MEASURES
    if synthetic is not None and (regime != "reference" or embed_images is None):
        raise DetectError("synthetic: synthetic change needs a reference and an image embedder (embed_images)")
    measures = list(measures or [m for m in allowed if m != "synthetic_change" or synthetic is not None])
    if "synthetic_change" in measures and synthetic is None:
        raise DetectError("measures: 'synthetic_change' needs synthetic options (seeds, steps)")
    for m in measures:
        if m not in allowed:
            raise DetectError(f"measures: {m!r} is not a measure of the {regime} regime (have {list(allowed)})")
    notes = []
    if regime == "reference" and "clip_delta" in measures and embed_topk is None:
        measures.remove("clip_delta")
        notes.append("no embedder: CLIP-δ left out")
    names = [suspect.model.layer(l).name for l in layers]
    subjects = [suspect] + ([reference] if reference is not None else []) + list(population)
    own_tmp = work_dir is None
    wd = Path(tempfile.mkdtemp(prefix="fvaudit-detect-")) if own_tmp else Path(work_dir)
    try:
        scan_subjects(subjects, images, names, k, batch_size=batch_size, device=device, reporter=reporter, work_dir=wd)
        labels = np.asarray(images.labels, dtype=np.int64)
        out: dict[str, LayerDetection] = {}
        reporter.stage("evidence", total=len(names))
        for i, layer in enumerate(names):
            check_cancel(reporter)
            if regime == "reference":
                synth = None if synthetic is None else functools.partial(
                    synthetic_embeddings, layer=layer, opts=synthetic, embed_images=embed_images, device=device,
                    reporter=reporter)
                out[layer] = _detect_reference(suspect, reference, population, layer, k_clip=k_clip,
                                               embed_topk=embed_topk, measures=measures, thresholds=thresholds,
                                               synth=synth)
                out[layer].layer_values.update(label_flips(reference.scans[layer], suspect.scans[layer], labels,
                                                           list(getattr(images, "class_names", []) or [])))
            else:
                out[layer] = _detect_population(suspect, population, layer, labels, len(images.class_names),
                                                thresholds=thresholds)
            if synthetic is not None:
                reporter.stage("evidence", total=len(names))      # the renders had stages of their own
            reporter.advance(i + 1, len(names))
    finally:
        if own_tmp:
            shutil.rmtree(wd, ignore_errors=True)
    verdict = evidence.model_verdict([ld.verdict for ld in out.values()], thresholds)
    warnings = []
    too_few = too_few_clean_models(regime, len(population))
    if too_few is not None:
        warnings.append(too_few)
        verdict = evidence.inconclusive(verdict)
        for ld in out.values():
            ld.verdict = evidence.inconclusive(ld.verdict)
    return DetectionReport(regime, verdict, out, k, k_clip, [p.name for p in population], thresholds, notes,
                           warnings)

