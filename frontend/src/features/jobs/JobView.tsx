import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useMemo } from "react";
import { Link, useParams } from "react-router";
import { isTerminal } from "../../api/client";
import type { AlphaEvent, StepJob } from "../../api/contract";
import { useCancelJob, useChildren, useJob, useJobKinds, useRun } from "../../api/queries";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { ErrorBox, Loading, SelectedIsInit, StatusBadge, When } from "../../components/States";
import { chainSteps, jobTitle, kindOf, liveStepLabel } from "../../lib/chain";
import { absTime, attackLabel, duration } from "../../lib/format";
import { attackOutcome } from "../../lib/rows";
import { useJobEvents, type LossPoint } from "../../lib/sse";
import { usePageTitle } from "../../lib/title";
import { TrainingCharts } from "../runs/TrainingPanel";
import { LogPanel, ProgressPanel } from "./JobPanels";
import { kindView } from "./kindViews";

export function JobView() {
  const id = Number(useParams().job);
  const stream = useJobEvents(id);
  const polled = useJob(id, { poll: !!stream.error || !stream.connected });
  const job: StepJob | null = (stream.error ? polled.data ?? stream.job : stream.job ?? polled.data) ?? null;
  const run = useRun(job?.run_id && isTerminal(job.status) ? job.run_id : 0);
  const children = useChildren(job, (stream.progress?.chain_step as number | undefined) ?? null);
  const kinds = useJobKinds(!!job);
  const cancel = useCancelJob();
  const qc = useQueryClient();
  useEffect(() => {
    if (job && isTerminal(job.status)) {
      qc.invalidateQueries({ queryKey: ["runs"] });
      qc.invalidateQueries({ queryKey: ["jobs"] });
    }
  }, [job?.status]); // eslint-disable-line react-hooks/exhaustive-deps

  // Training curves are what this job reported (its own or its chain's attack, replayed by
  // the event stream), or the run's stored history when this job is what trained it. A
  // visualize or metrics job shares the run but trained nothing: no curves (issue 19, item 11).
  const stepKeys = [...(kindOf(kinds.data, job?.kind ?? "")?.steps ?? []).map((s) => s.key), ...(children.data ?? []).map((c) => c.step_key)];
  const trained = !!job && trains(job, stepKeys);
  const points: LossPoint[] = useMemo(() => {
    const hist = trained ? ((run.data?.history ?? []) as LossPoint[]) : [];
    return hist.length ? hist : stream.points;
  }, [run.data, stream.points, trained]);

  usePageTitle(job ? `Job ${job.id}: ${jobTitle(job, attackLabel)}` : `Job ${id}`);

  if (!(id > 0)) return <ErrorBox error={new Error("No such job: the address must be /jobs/<number>.")} />;
  if (!job) {
    if (polled.error) return <ErrorBox error={polled.error} retry={() => polled.refetch()} />;
    return <Loading what={`Loading job ${id}`} />;
  }

  const view = kindView(job.kind);
  const result = view.result?.(job);
  const p = (stream.progress ?? job.progress ?? {}) as Record<string, unknown>;
  const chainStep = typeof p.chain_step === "number" ? p.chain_step : null;
  const terminal = isTerminal(job.status);
  const failedTrace = [...stream.logs].reverse().find((l) => typeof l.traceback === "string");
  const title = jobTitle(job, attackLabel);
  const kind = kindOf(kinds.data, job.kind);
  const steps = chainSteps(job, children.data, kind, chainStep);
  const liveLabel = chainStep != null ? (steps.find((s) => s.seq === chainStep)?.label ?? liveStepLabel(kinds.data, job, chainStep, p)) : "";

  const traj = (run.data?.alpha_trajectory ?? []) as AlphaEvent[];

  return (
    <div className="page job">
      <div className="page-head">
        <div>
          <p className="crumbs">
            <Link to="/">Runs</Link> / job {job.id}
          </p>
          <h1>
            {title} <StatusBadge status={job.status} />
          </h1>
          <p className="muted">
            {kind?.title ?? job.label ?? job.kind} job {job.id} · created <When iso={job.created_at} absolute={terminal} />
            {job.started_at && ` · ${terminal ? "ran" : "running for"} ${duration(job.started_at, job.finished_at)}`}
            {terminal && job.finished_at && ` · ended ${absTime(job.finished_at)}`}
            {job.worker && ` · worker ${job.worker}`}
            {stream.connected && !terminal && <span className="live"> · live</span>}
          </p>
        </div>
        <div className="actions">
          {!terminal && (
            <button
              type="button"
              className="danger"
              disabled={cancel.isPending || job.cancel_requested}
              onClick={() => {
                if (window.confirm(`Cancel job ${job.id}? A running attack stops at its next step.`)) cancel.mutate(job.id);
              }}
            >
              {job.cancel_requested ? "Cancelling…" : "Cancel job"}
            </button>
          )}
          {result && (
            <Link to={result.to} className="button primary">
              {result.open}
            </Link>
          )}
          {job.run_id && view.runIsResult && (
            <Link to={`/runs/${job.run_id}`} className={`button${job.status === "succeeded" ? " primary" : ""}`}>
              {job.status === "succeeded" ? "Open the results →" : `Run ${job.run_id}`}
            </Link>
          )}
        </div>
      </div>
      {cancel.error && <ErrorBox error={cancel.error} />}
      {stream.error && !terminal && <div className="banner warn">{stream.error}</div>}

      {job.status === "failed" && (
        <section className="state error" role="alert">
          <strong>The job failed</strong>
          <p className="mono wrap">{job.error ?? "no error message was recorded"}</p>
          {failedTrace && (
            <details>
              <summary>Cause (traceback from the worker)</summary>
              <pre className="trace">{String(failedTrace.traceback)}</pre>
            </details>
          )}
          <p>
            Fix the cause (often a setting: too few images for k, a layer with no live units) and <Link to="/launch">launch again</Link>.
          </p>
        </section>
      )}
      {job.status === "cancelled" && (
        <div className="banner">This job was cancelled{job.error ? `: ${job.error}` : ""}.</div>
      )}
      {job.status === "succeeded" && job.run_id && view.runIsResult && (
        <div className="banner ok">
          Done. <Link to={`/runs/${job.run_id}`}>Open the run summary</Link> to see the metrics and the galleries.
        </div>
      )}
      {job.run_id && view.runIsResult && (
        <SelectedIsInit outcome={attackOutcome(run.data)}>
          <>
            The final state is the “final” row of the <Link to={`/runs/${job.run_id}`}>run summary</Link>
            {view.renders || steps.some((s) => s.key === "visualize") ? "; the synthetic visualizations were rendered on the selected state, θ_init here" : ""}.
          </>
        </SelectedIsInit>
      )}
      {job.status === "succeeded" && !job.run_id && (
        <div className="banner ok">
          Done. {view.done?.(job)}
        </div>
      )}

      <ProgressPanel job={job} steps={steps} p={p} liveLabel={liveLabel} terminal={terminal} />

      {view.panel && (
        <ErrorBoundary name={view.panel.name}>
          <view.panel.Panel job={job} />
        </ErrorBoundary>
      )}

      {((trained && !terminal) || points.length > 0) && (
        <ErrorBoundary name="Training curves">
        <section className="panel" aria-label="Training curves">
          <h2>Training</h2>
          {points.length === 0 ? (
            <p className="muted">The loss curves appear when the attack starts (step 2).</p>
          ) : (
            <TrainingCharts
              points={points}
              markers={traj.map((t) => ({ x: t.step, label: `step ${t.step}: α ${t.alpha_before} → ${t.alpha_after} (drop ${t.drop_pp.toFixed(2)} pp${t.n_images ? ` on ${t.n_images} images` : ""})` }))}
            />
          )}
        </section>
        </ErrorBoundary>
      )}

      <LogPanel logs={stream.logs} connected={stream.connected} terminal={terminal} />
    </div>
  );
}

/** Whether the job trained weights: an attack, an attack step of a chain, or a chain with one. */
function trains(job: StepJob, stepKeys: (string | null | undefined)[]): boolean {
  const isAttack = (k: string | null | undefined) => k === "attack" || k === "control_attack";
  return !!kindView(job.kind).trains || isAttack(job.step_key) || stepKeys.some(isAttack);
}
