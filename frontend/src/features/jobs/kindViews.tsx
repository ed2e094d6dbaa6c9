// How each job kind is shown, beside its job page: where its result lives (the job list's
// result column, the job page's main link), a panel of its own, what "done" says when it
// made no run. The job pages read this map; a kind it does not name gets the plain view
// (its run, if it made one). Adding a kind's view is adding an entry here.
import type { ComponentType, ReactNode } from "react";
import { Link } from "react-router";
import type { Job } from "../../api/client";
import { specLayers } from "../../lib/chain";
import { detectionPath } from "../detections/DetectionShared";
import { ScanResult } from "./ScanResult";

export type KindView = {
  /** The page that shows the job's result: its address, its name in the job list, the job page's button. */
  result?: (job: Job) => { to: string; text: string; open: string };
  /** The job's run is its result (not so for a sweep: each of its points has its own run). */
  runIsResult: boolean;
  /** What the job page says under "Done." when the job succeeded without making a run. */
  done?: (job: Job) => ReactNode;
  /** A panel of its own on the job page, under the progress (`name` labels it if it fails to render). */
  panel?: { name: string; Panel: ComponentType<{ job: Job }> };
  /** It trains weights: its loss curves are the run's stored history. */
  trains?: boolean;
  /** It renders synthetic visualizations (on the selected state). */
  renders?: boolean;
};

const PLAIN: KindView = { runIsResult: true };

const VIEWS: Record<string, KindView> = {
  attack: { ...PLAIN, trains: true },
  scan: { ...PLAIN, panel: { name: "Scan", Panel: ScanResult }, done: () => "The scan is stored; metrics jobs and audits reuse it." },
  visualize: { ...PLAIN, renders: true, done: (job) => <ModelSynthetic job={job} /> },
  sweep: { runIsResult: false, result: (job) => ({ to: `/sweeps/${job.id}`, text: "sweep", open: "Open the sweep →" }) },
  detect: {
    ...PLAIN,
    result: (job) => ({
      to: detectionPath(job.id),
      text: "verdict",
      open: job.status === "succeeded" ? "Open the verdict →" : "Open the detection →",
    }),
  },
};

export const kindView = (kind: string): KindView => VIEWS[kind] ?? PLAIN;

/** Where a job's result is shown, beside its job page: its own page, or the run it made. */
export function resultLink(job: Job): { to: string; text: string } | null {
  const own = kindView(job.kind).result?.(job);
  if (own) return own;
  return job.run_id != null ? { to: `/runs/${job.run_id}`, text: `run ${job.run_id}` } : null;
}

/** A visualize job of a model (no run): its synthetic visualizations are on the model's page. */
function ModelSynthetic({ job }: { job: Job }) {
  const spec = job.spec as { model_id?: number; layers?: string[] };
  if (spec.model_id == null) return null;
  return (
    <>
      <Link to={`/models/${spec.model_id}`}>Open the model's synthetic visualizations</Link>
      {specLayers(spec).length ? ` (${specLayers(spec).join(", ")})` : ""}.
    </>
  );
}
