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

export type DetectionItem = Schemas["DetectionItem"];
export type DetectionDetail = Schemas["DetectionDetail"];
export type DetectUnit = Schemas["DetectUnitOut"];
export type DetectUnitDetail = Schemas["DetectUnitDetail"];
export type DetectModel = Schemas["DetectModelOut"];
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

export type LayerResult = VerdictEvidence & {
  measures: string[];
  layer_values: Record<string, number>;
  benign_sizes: Record<string, number>;
  dead_units: number[];
  class_shares: ClassShares | null;
};

export type DetectThresholds = { unit: number; suspicious_p: number; manipulated_p: number };

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
  class_share: { label: "class share", help: "how much of the unit's top-k lies in classes over-represented against the clean models" },
};

/** Layer-level evidence (a suspicion each), by the name the backend gives it. */
export const LAYER_EVIDENCE: Record<string, string> = {
  layer_weight_distance: "weight distance of the whole layer",
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
};

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
