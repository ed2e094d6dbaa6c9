// What the detection pages (SPEC §6, "check this model") share: the API's shapes named for
// the dashboard (the verdicts in `result` are free-form in the generated schema: typed here
// with the backend's field names, engine/detector.py DetectionReport.summary),
// the verdict badge, the suspicion bar, measure names and the live progress of a running job.
import { useQueryClient } from "@tanstack/react-query";
import { useEffect } from "react";
import { isLive, isTerminal, type Schemas } from "../../api/client";
import { DASH, num, progressText } from "../../lib/format";
import { enc } from "../../lib/share";
import { useJobEvents } from "../../lib/sse";
import "./detections.css";

export type DetectionItem = Schemas["DetectionItem"];
export type DetectionDetail = Schemas["DetectionDetail"];
/**
 * `localisation` (issue 24, reference regime): the unit's suspicion with the suspect's
 * model-level shift taken out; null for a dead unit or the population regime, absent in
 * older results.
 */
export type DetectUnit = Schemas["DetectUnitOut"] & { localisation?: number | null };
export type DetectUnitDetail = Schemas["DetectUnitDetail"] & { localisation?: number | null };
/** `recipe`: how a clean model of the calibration was made (absent in older results). */
export type DetectModel = Schemas["DetectModelOut"] & { recipe?: string | null };
export type MeasureValue = Schemas["MeasureOut"];
export type Verdict = NonNullable<DetectionItem["verdict"]>;
export type Regime = DetectionItem["regime"];

/** One of the most suspicious units a verdict names (the model verdict's also names its layer). */
export type TopUnit = { unit: number; suspicion: number; driver: string | null; measures: Record<string, MeasureValue>; layer?: string };

/** A verdict with the evidence that drove it (engine/detection.py Verdict.to_dict). */
export type VerdictEvidence = {
  name: string;
  verdict: Verdict;
  /** null when inconclusive (too few clean models to calibrate: no p-value, no flags) */
  p_value: number | null;
  n_units: number;
  n_flagged: number | null;
  expected_flagged: number | null;
  p_units: number | null;
  layer_evidence: Record<string, number>;
  top_units: TopUnit[];
  flagged_class: number | null;
};

export type ClassShares = { suspect: number[]; population_mean: number[]; z: (number | null)[] };

/** One clean model of the calibration family (issue 24): its change and its units' median and 95th percentile per measure. */
export type BenignPoint = {
  name: string;
  recipe: string | null;
  /** relative L2 weight distance of every parameter producing the layer, reference → this model */
  size: number;
  median: Record<string, number | null>;
  q95: Record<string, number | null>;
  /** [flagged, units] of this model against an envelope fitted without it; null when left out (beyond the others' reach) */
  loo_flagged: [number, number] | null;
  loo_localised: [number, number] | null;
};

/** A point of a measure's benign envelope: what the family moves at that size (expected) and its 95th percentile. */
export type EnvelopeBandPoint = { size: number; expected: number; upper95: number };

/** A measure's benign envelope (engine/detection/envelope.py Envelope.to_dict), with its band for the plot. */
export type Envelope = {
  measure: string;
  intercept: number;
  slope: number;
  floor: number;
  sizes: number[];
  medians: number[];
  residual_quantiles: Record<string, number>;
  n_residuals: number;
  expected_at_size: number | null;
  upper95_at_size: number | null;
  band: EnvelopeBandPoint[];
};

/** The model-to-model spread of a count test: clean models flag about rate·n units, with overdispersion rho (beta-binomial). */
export type Overdispersion = { rate: number; rho: number; n_models: number };

/** What a reference-regime layer was calibrated with and how far it reaches (issue 24); null in the population regime. */
export type Calibration = {
  recipes: string[];
  benign: BenignPoint[];
  /** the largest model change the family covers */
  reach: number | null;
  /** its smallest */
  reach_low: number | null;
  /** the suspect's change for this layer */
  size: number | null;
  out_of_calibration: boolean;
  envelopes: Record<string, Envelope>;
  suspect_median: Record<string, number | null>;
  overdispersion: Overdispersion | null;
  overdispersion_localised: Overdispersion | null;
};

/** A unit whose explanation moved beyond what the model's overall change explains. */
export type LocalisedUnit = { unit: number; localisation: number; suspicion: number | null; driver: string | null };

export type LayerResult = VerdictEvidence & {
  measures: string[];
  layer_values: Record<string, number>;
  benign_sizes: Record<string, number>;
  dead_units: number[];
  class_shares: ClassShares | null;
  /** absent in results from before issue 24 */
  calibration?: Calibration | null;
  /** most localised first; absent in results from before issue 24 */
  localised_units?: LocalisedUnit[];
};

/** `localised`: a unit is localised above it (issue 24; absent in older results). */
export type DetectThresholds = { unit: number; localised?: number; suspicious_p: number; manipulated_p: number };

/** `DetectionDetail.result` of a succeeded detection. */
export type DetectResult = {
  regime: Regime;
  verdict: Verdict;
  p_value: number | null;
  /** what to know before trusting the verdict (too few clean models: inconclusive); older results have none */
  warnings?: string[];
  model: VerdictEvidence;
  layers: Record<string, LayerResult>;
  k: number;
  k_clip: number;
  population: string[];
  notes: string[];
  thresholds: DetectThresholds;
  models: Record<string, DetectModel>;
  classes: string[];
  embedder: string | null;
  embedder_warning: string | null;
  image_set_id: number;
};

export const detectResult = (d: DetectionDetail): DetectResult | null => (d.result ? (d.result as unknown as DetectResult) : null);

export const detectionsPath = "/detections";
export const detectionPath = (id: number) => `/detections/${id}`;
export const detectionUnitPath = (id: number, layer: string, unit: number) => `/detections/${id}/layers/${enc(layer)}/units/${unit}`;

/** The per-unit measures of both regimes (SPEC §6), as the pages name them. */
export const MEASURES: Record<string, { label: string; help: string }> = {
  clip_delta: { label: "CLIP-δ", help: "semantic change of the unit's top-k, reference → suspect (0 = the same images' meaning)" },
  tau_drop: { label: "1 − Kendall-τ", help: "how much the unit's ranking of the images changed, reference → suspect" },
  overlap_loss: { label: "1 − top-k overlap", help: "share of the reference's top-k images missing from the suspect's" },
  weight_distance: { label: "weight distance", help: "relative L2 change of the unit's filter, reference → suspect" },
  synthetic_change: { label: "synthetic change", help: "semantic change of the unit's synthetic image (feature visualisation), reference → suspect" },
  class_share: { label: "class share", help: "how much of the unit's top-k lies in classes over-represented against the clean models" },
};

/** Layer-level evidence (a suspicion each), by the name the backend gives it. */
export const LAYER_EVIDENCE: Record<string, string> = {
  layer_weight_distance: "weight distance of the whole layer",
  localised_units: "localised units, against the clean family's count",
  class_share: "class shares of the layer's units",
  class_share_max_z: "largest class-share z-score",
};

export const measureLabel = (name: string | null | undefined) => (name ? (MEASURES[name]?.label ?? name) : DASH);

/** "relu3:layer_weight_distance" (model evidence) or "layer_weight_distance" → words. */
export function evidenceLabel(key: string): string {
  const at = key.lastIndexOf(":");
  const [layer, name] = at >= 0 ? [key.slice(0, at), key.slice(at + 1)] : ["", key];
  const words = LAYER_EVIDENCE[name] ?? MEASURES[name]?.label ?? name;
  return layer ? `${layer}: ${words}` : words;
}

/** A p-value as people read it: 2 significant digits, scientific below 0.001 ("3.4e−7"). */
export function pValue(p: number | null | undefined): string {
  if (p == null || Number.isNaN(p)) return DASH;
  if (p > 0 && p < 1e-3) return p.toExponential(1).replace("-", "−");
  return String(Number(p.toPrecision(2)));
}

/**
 * "p = 0.012", or "p < 1e−15" for a p-value of 0: a combined (Šidák) p-value is 0 in floating
 * point once the smallest p it combines is below about 1e−16, not because it is exactly 0.
 */
export function pText(p: number | null | undefined): string {
  if (p == null || Number.isNaN(p)) return "no p-value";
  return p === 0 ? "p < 1e−15" : `p = ${pValue(p)}`;
}

/**
 * "16 of 128 units flagged, 6.4 expected by chance"; an inconclusive verdict flags
 * nothing (its counts are null): "128 units ranked, none flagged".
 */
export function flaggedText(v: { n_flagged?: number | null; n_units?: number | null; expected_flagged?: number | null }): string {
  const units = `${v.n_units ?? DASH} unit${v.n_units === 1 ? "" : "s"}`;
  if (v.n_flagged == null) return `${units} ranked, none flagged (too few clean models to calibrate a flag)`;
  return `${v.n_flagged} of ${units} flagged, ${num(v.expected_flagged, 1)} expected by chance`;
}

const VERDICT_HELP: Record<string, string> = {
  "no sign": "no sign of manipulation: the evidence is within what clean models show",
  suspicious: "suspicious: more evidence than clean models show, below the 'suspicious' p-value",
  manipulated: "manipulated: far more evidence than clean models show, below the 'manipulated' p-value",
  inconclusive: "inconclusive: too few clean models in the population to tell a manipulation from the ordinary difference between clean models",
  "out of calibration": "out of calibration: the model moved further (relative weight distance) than any clean model of the calibration, so no claim is made; its evidence is still shown",
};

export const OUT_OF_CALIBRATION = "out of calibration";

/** What "out of calibration" means and what to do about it, in one line. */
export const OUT_OF_CALIBRATION_TEXT = "moved further than any clean model of the calibration: add clean fine-tunes of that size to judge it";

/**
 * A verdict that makes no claim from its p-value: "inconclusive", or one without a p-value
 * that is not "out of calibration" (which keeps its evidence, flags included).
 */
export const isInconclusive = (v: { verdict: Verdict | string; p_value: number | null }) =>
  v.verdict === "inconclusive" || (v.p_value == null && v.verdict !== OUT_OF_CALIBRATION);

/** A verdict; one this page does not know (a newer server) is shown as it is, not dropped. */
export function VerdictBadge({ verdict, p, big }: { verdict: Verdict | string | null | undefined; p?: number | null; big?: boolean }) {
  if (!verdict) return <span className="badge">{DASH}</span>;
  const cls = `badge verdict verdict-${verdict.replace(/[^a-z0-9]+/gi, "-")}${big ? " big" : ""}`;
  return (
    <span className={cls} title={VERDICT_HELP[verdict] ?? `verdict “${verdict}”`} data-testid="verdict">
      {verdict}
      {p != null && <span className="p"> · {pText(p)}</span>}
    </span>
  );
}

/** A suspicion in [0, 1] as a bar with its number; above the unit threshold it is flagged. */
export function SuspicionBar({ value, threshold }: { value: number | null | undefined; threshold?: number }) {
  if (value == null) return <span className="muted">{DASH}</span>;
  const flagged = threshold != null && value > threshold;
  return (
    <span className={`suspicion${flagged ? " flagged" : ""}`} title={flagged ? `above the unit threshold ${threshold}: flagged` : undefined}>
      <span className="track" aria-hidden="true">
        <span style={{ width: `${Math.max(0, Math.min(1, value)) * 100}%` }} />
      </span>
      <span className="v">{num(value, 3)}</span>
    </span>
  );
}

/** What a live detection is doing: its progress in words, or that it waits for a worker (queued) or is starting. */
export const liveText = (status: string, progress: Record<string, unknown> | null | undefined) => progressText(progress) || (status === "queued" ? "waiting for a worker" : "starting");

/**
 * A queued or running detection's progress: the job's event stream when it is open (each
 * stage and count as it happens), the polled detail's `progress` otherwise. When the stream
 * sees the job end, the detail is fetched again at once (its verdicts, or its error).
 */
export function DetectionProgress({ d }: { d: DetectionDetail }) {
  const stream = useJobEvents(d.id, isLive(d));
  const qc = useQueryClient();
  const ended = stream.job != null && isTerminal(stream.job.status);
  useEffect(() => {
    if (ended) {
      qc.invalidateQueries({ queryKey: ["detection", d.id] });
      qc.invalidateQueries({ queryKey: ["detections"] });
    }
  }, [ended]); // eslint-disable-line react-hooks/exhaustive-deps
  const p = (stream.progress ?? d.progress ?? {}) as Record<string, unknown>;
  const done = typeof p.done === "number" ? p.done : 0;
  const total = typeof p.total === "number" && p.total > 0 ? p.total : null;
  const text = liveText(d.status, p);
  return (
    <div className="stage" aria-live="polite">
      <span>
        {text}
        {stream.connected && <span className="live"> · live</span>}
      </span>
      <div className="progress" role="progressbar" aria-label="Detection progress" aria-valuemin={0} aria-valuemax={total ?? 1} aria-valuenow={total ? done : 0}>
        <div style={{ width: `${total ? Math.min(100, (100 * done) / total) : 0}%` }} className={total ? "" : "indeterminate"} />
      </div>
    </div>
  );
}
