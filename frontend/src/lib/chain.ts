// A chain job's steps as the dashboard shows them: read from the job's children
// (`seq`, `step_key`, `label`) and the job-kind registry (`GET /api/v1/job-kinds`),
// never from a list written here, so a chain of any length (scan θ_init, attack,
// scan θ_selected, scan θ_final, visualize, metrics, α = 0 control, …) renders as it is.
import type { Job } from "../api/client";
import type { JobKind, StepJob } from "../api/contract";

export type ChainStep = {
  seq: number;
  key: string | null;
  label: string;
  status: string;
  jobId: number | null;
  current: boolean;
};

const TERMINAL = ["succeeded", "failed", "cancelled"];

/** The registry entry of a kind, if the registry knows it. */
export function kindOf(kinds: JobKind[] | undefined, kind: string | null | undefined): JobKind | undefined {
  return kind ? kinds?.find((k) => k.kind === kind) : undefined;
}

/** The label of a chain step: its own label, else the registry's label for its key, else its kind. */
export function stepLabel(child: StepJob, kind?: JobKind): string {
  if (child.label) return child.label;
  const byKey = child.step_key ? kind?.steps.find((s) => s.key === child.step_key)?.label : undefined;
  return byKey ?? child.step_key ?? child.kind;
}

/**
 * The steps of a chain job in `seq` order. `children` are the job's children when loaded;
 * until then the registry's steps stand in (step i of the kind is `seq` i + 1). `live` is
 * the step the latest progress event names (`chain_step` = that child's `seq`): it shows as
 * running even before the children are refetched; every other step shows its own status.
 */
export function chainSteps(job: Job, children: StepJob[] | undefined, kind: JobKind | undefined, live: number | null): ChainStep[] {
  const terminal = TERMINAL.includes(job.status);
  const current = (seq: number) => !terminal && live === seq;
  if (children?.length) {
    return [...children]
      .sort((a, b) => a.seq - b.seq)
      .map((c) => ({
        seq: c.seq,
        key: c.step_key ?? null,
        label: stepLabel(c, kind),
        status: current(c.seq) ? "running" : live != null && !terminal && c.seq < live && c.status === "queued" ? "succeeded" : c.status,
        jobId: c.id,
        current: current(c.seq),
      }));
  }
  const steps = kind?.steps ?? [];
  const n = Math.max(job.children.length, steps.length);
  return Array.from({ length: n }, (_, i) => {
    const seq = i + 1;
    const status = current(seq)
      ? "running"
      : live != null && !terminal
        ? seq < live ? "succeeded" : "queued"
        : job.status === "succeeded" ? "succeeded" : "queued";
    return { seq, key: steps[i]?.key ?? null, label: steps[i]?.label ?? `step ${seq}`, status, jobId: job.children[i] ?? null, current: current(seq) };
  });
}

/** "scan θ_final" for `chain_step` 4 of an audit, from the registry; "" when unknown. */
export function liveStepLabel(kinds: JobKind[] | undefined, job: Pick<Job, "kind">, chainStep: number, progress?: Record<string, unknown>): string {
  if (progress && typeof progress.step_label === "string") return progress.step_label;
  return kindOf(kinds, job.kind)?.steps[chainStep - 1]?.label ?? "";
}

/** The layers an audit or attack spec names: `attack.layers` (the contract), or the older `attack.layer`. */
/** The layers a run has results for: its own list, else its attack's, else its layer info's. */
export function runLayers(run: { layers: string[]; attack?: unknown; layer_info?: unknown }): string[] {
  if (run.layers.length) return run.layers;
  const fromSpec = specLayers({ attack: run.attack });
  return fromSpec.length ? fromSpec : Object.keys((run.layer_info ?? {}) as object);
}

export function specLayers(spec: unknown): string[] {
  const s = (spec ?? {}) as { attack?: { layers?: unknown; layer?: unknown }; layers?: unknown };
  const a = s.attack;
  if (a && Array.isArray(a.layers)) return a.layers.map(String);
  if (a && typeof a.layer === "string") return [a.layer];
  if (Array.isArray(s.layers)) return s.layers.map(String);
  return [];
}

/** What a job is, in a few words: its run name, "push-down on relu3, relu2", or its label. */
export function jobTitle(j: Job & { label?: string }, attackLabel: (k: string | undefined) => string): string {
  const spec = (j.spec ?? {}) as { name?: string; attack?: { kind?: string } };
  if (spec.name) return spec.name;
  const layers = specLayers(spec);
  if (spec.attack) return `${attackLabel(spec.attack.kind)} on ${layers.join(", ")}`;
  return `${j.label ?? j.kind}${layers.length ? ` ${layers.join(", ")}` : ""}`;
}
