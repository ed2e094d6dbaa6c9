export const DASH = "—";

export function num(v: number | null | undefined, digits = 3): string {
  if (v == null || Number.isNaN(v)) return DASH;
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  return v.toFixed(digits).replace(/^-/, "−");
}

export function signed(v: number | null | undefined, digits = 2): string {
  if (v == null || Number.isNaN(v)) return DASH;
  const s = Math.abs(v).toFixed(digits);
  return v > 0 ? `+${s}` : v < 0 ? `−${s}` : s;
}

export function pct(v: number | null | undefined, digits = 1): string {
  return v == null || Number.isNaN(v) ? DASH : `${v.toFixed(digits)} %`;
}

export function share(v: number | null | undefined): string {
  return v == null || Number.isNaN(v) ? DASH : `${Math.round(v * 100)} %`;
}

export function score(v: number | null | undefined): string {
  if (v == null || Number.isNaN(v)) return DASH;
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return v.toPrecision(4).replace(/\.?0+$/, "");
}

export function when(iso: string | null | undefined): string {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const s = (Date.now() - d.getTime()) / 1000;
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function duration(startIso: string | null | undefined, endIso?: string | null): string {
  if (!startIso) return DASH;
  const a = new Date(startIso).getTime();
  const b = endIso ? new Date(endIso).getTime() : Date.now();
  const s = Math.max(0, Math.round((b - a) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export const ATTACK_LABEL: Record<string, string> = {
  push_down: "push-down",
  push_up: "push-up",
  finetune: "fine-tune (α = 0)",
  scan: "scan",
};

export function attackLabel(kind: string | null | undefined): string {
  return kind ? (ATTACK_LABEL[kind] ?? kind) : DASH;
}

/** Metric names as the thesis writes them, with a one-line meaning (SPEC §3). */
export const METRICS = {
  clip_delta: { label: "CLIP-δ", help: "semantic change of the top-k (0 = identical, higher = more change)" },
  kendall_tau: { label: "Kendall-τ", help: "rank correlation of the unit's scores before/after (1 = ranking kept)" },
  clip_w: { label: "CLIP-W", help: "did another unit take over the top-k semantics? (≈1 or below: no)" },
  kendall_tau_w: { label: "Kendall-τ-W", help: "did another unit take over the ranking? (≈1 or below: no)" },
  topk_overlap: { label: "top-k overlap", help: "share of the initial top-k still in the final top-k" },
} as const;
export type MetricKey = keyof typeof METRICS;
export const METRIC_KEYS = Object.keys(METRICS) as MetricKey[];

/**
 * "step 2/7 attack · push_down 12/40" from a job's progress. `stepLabel` names the step
 * `chain_step` points at (from the job's children or the job-kind registry: see
 * `lib/chain.ts`); the progress event's own `step_label`, when it has one, wins.
 */
export function progressText(p: Record<string, unknown> | null | undefined, stepLabel?: (chainStep: number) => string): string {
  if (!p) return "";
  const parts: string[] = [];
  if (typeof p.chain_step === "number") {
    const label = typeof p.step_label === "string" ? p.step_label : (stepLabel?.(p.chain_step) ?? "");
    const of = typeof p.chain_steps === "number" ? `/${p.chain_steps}` : "";
    parts.push(`step ${p.chain_step}${of} ${label}`.trim());
  }
  let stage = typeof p.stage === "string" ? p.stage : "";
  if (typeof p.total === "number" && p.total > 0) stage += ` ${Number(p.done ?? 0).toLocaleString("en")}/${p.total.toLocaleString("en")}`;
  if (stage) parts.push(stage);
  return parts.join(" · ");
}

/** "2,000 images" (or "" when unknown): on how many images an accuracy was measured. */
export function nImages(n: number | null | undefined): string {
  return n == null ? "" : `${n.toLocaleString("en")} images`;
}
