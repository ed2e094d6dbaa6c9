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

/** The date and time in full ("Nov 25, 2026, 06:15"), for a tooltip or a finished job. */
export function absTime(iso: string | null | undefined): string {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/**
 * "just now", "2 min ago", "3 h ago", then the date: relative to `now` (ms). A page that
 * shows it keeps it current with `<When>` (components/States.tsx), which re-renders each
 * half minute, so a finished job's "2 min ago" does not freeze (issue 19, item 11).
 */
export function when(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const s = (now - d.getTime()) / 1000;
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
  slingshot: "Gradient Slingshots",
  push_up_slingshot: "push-up + Slingshots",
  scan: "scan",
};

/** The attack kinds that aim each unit's synthetic visualization at a target image (Gradient Slingshots, SPEC §8.1–8.2). */
export const TARGET_KINDS: readonly string[] = ["slingshot", "push_up_slingshot"];
export const aimsAtTarget = (kind: string | null | undefined) => !!kind && TARGET_KINDS.includes(kind);
/** score_norm is read by the push-down and push-up losses only (the combined attack's push-up too). */
export const usesScoreNorm = (kind: string | null | undefined) => kind === "push_down" || kind === "push_up" || kind === "push_up_slingshot";

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

/*
 * One format per measure, on every page (issue 19, item 4): CLIP-δ, Kendall-τ, CLIP-W and
 * Kendall-τ-W with 3 decimals; the top-k overlap always as a percentage of the top-k.
 */

/** Kendall-τ (and τ-W): 3 decimals. */
export const tau = (v: number | null | undefined) => num(v, 3);
/** CLIP-δ (and CLIP-W): 3 decimals. */
export const clip = (v: number | null | undefined) => num(v, 3);
/** top-k overlap, a share of k: always a percentage ("80 %"), never a fraction. */
export const overlap = (v: number | null | undefined) => share(v);

/** A measure in its one format. */
export function metric(key: MetricKey, v: number | null | undefined): string {
  return key === "topk_overlap" ? overlap(v) : key === "kendall_tau" || key === "kendall_tau_w" ? tau(v) : clip(v);
}

/**
 * A measure's column title with the k it is computed on: CLIP-δ, CLIP-W and the overlap
 * use each unit's top-k_clip (the run's `k_clip`), so "top-5 overlap", "CLIP-δ (top-5)";
 * Kendall-τ ranks every image and needs no k.
 */
export function metricLabel(key: MetricKey, kClip?: number | null): string {
  if (kClip == null) return METRICS[key].label;
  if (key === "topk_overlap") return `top-${kClip} overlap`;
  if (key === "clip_delta" || key === "clip_w") return `${METRICS[key].label} (top-${kClip})`;
  return METRICS[key].label;
}

/** The help text with the k spelled out. */
export function metricHelp(key: MetricKey, kClip?: number | null): string {
  const h: string = METRICS[key].help;
  return kClip == null || key === "kendall_tau" || key === "kendall_tau_w" ? h : h.replace("top-k", `top-${kClip} (k_clip)`);
}

/**
 * What a run's chosen units are called. In an attack they are "attacked"; the α = 0
 * control fine-tunes without an attack, so its units are only the targets it mirrors
 * (issue 19, item 4: the control labelled its units "attacked").
 */
export type UnitRole = { badge: string; many: string; only: string; help: string };
export function unitRole(attackKind: string | null | undefined): UnitRole {
  return attackKind === "finetune"
    ? { badge: "target (control)", many: "target units (not attacked: α = 0 control)", only: "target units only", help: "a unit the attacked run targets; this α = 0 control run does not attack it" }
    : { badge: "attacked", many: "attacked", only: "attacked units only", help: "a unit the attack targets" };
}

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
