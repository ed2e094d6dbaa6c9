// The job page's own panels: the progress of the job (a chain's steps, the stage, its
// count) and its log, followed live from the job's event stream.
import { useEffect, useRef } from "react";
import { Link } from "react-router";
import type { StepJob } from "../../api/contract";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { StatusBadge } from "../../components/States";
import type { ChainStep } from "../../lib/chain";
import { num } from "../../lib/format";
import type { LogLine } from "../../lib/sse";

/** The job's progress: a chain's steps (each a link to its job), the stage with its count, α and loss, and the bar. */
export function ProgressPanel({ job, steps, p, liveLabel, terminal }: {
  job: StepJob; steps: ChainStep[]; p: Record<string, unknown>; liveLabel: string; terminal: boolean;
}) {
  const done = typeof p.done === "number" ? p.done : 0;
  const total = typeof p.total === "number" ? p.total : null;
  const chainStep = typeof p.chain_step === "number" ? p.chain_step : null;
  return (
    <ErrorBoundary name="Progress">
    <section className="panel" aria-label="Progress">
      <h2>Progress</h2>
      {job.children.length > 0 && (
        <ol className="chain" aria-label={`${steps.length} steps`}>
          {steps.map((s) => (
            <li key={s.seq} className={`step status-${s.status}${s.current ? " current" : ""}`} data-step={s.key ?? undefined} aria-current={s.current ? "step" : undefined}>
              <span className="n">{s.seq}</span>{" "}
              {s.jobId != null ? (
                <Link to={`/jobs/${s.jobId}`} title={`step ${s.seq}${s.key ? ` (${s.key})` : ""}: job ${s.jobId}`}>
                  {s.label}
                </Link>
              ) : (
                s.label
              )}{" "}
              <StatusBadge status={s.status} />
            </li>
          ))}
        </ol>
      )}
      <div className="stage">
        <span>
          {chainStep != null && !terminal && (
            <span className="muted">
              step {chainStep} of {String(p.chain_steps ?? steps.length)}
              {liveLabel ? ` (${liveLabel})` : ""} ·{" "}
            </span>
          )}
          <strong>{String(p.stage ?? job.status)}</strong>
          {total ? ` · ${done.toLocaleString("en")} / ${total.toLocaleString("en")}` : ""}
          {typeof p.alpha === "number" && ` · α = ${num(p.alpha, 3)}`}
          {typeof p.loss === "number" && ` · loss ${num(p.loss, 4)}`}
        </span>
        <div className={`progress${job.status === "failed" ? " failed" : ""}`} role="progressbar" aria-label="Stage progress" aria-valuemin={0} aria-valuemax={total ?? 1} aria-valuenow={total ? done : terminal ? 1 : 0}>
          <div style={{ width: `${total ? Math.min(100, (100 * done) / total) : terminal ? 100 : 0}%` }} className={total || terminal ? "" : "indeterminate"} />
        </div>
      </div>
    </section>
    </ErrorBoundary>
  );
}

/** The job's log, newest last (scrolled to as lines arrive). */
export function LogPanel({ logs, connected, terminal }: { logs: LogLine[]; connected: boolean; terminal: boolean }) {
  const logRef = useRef<HTMLOListElement>(null);
  useEffect(() => {
    const el = logRef.current;
    if (el) el.scrollTop = el.scrollHeight; // follow the newest line
  }, [logs.length]);
  return (
    <ErrorBoundary name="Log">
    <section className="panel" aria-label="Log">
      <h2>Log</h2>
      {logs.length === 0 ? (
        <p className="muted">{connected || !terminal ? "No messages yet." : "No messages."}</p>
      ) : (
        <ol className="log" aria-live="polite" ref={logRef}>
          {logs.map((l) => (
            <li key={l.id}>
              {l.job_id ? <span className="muted">job {l.job_id}: </span> : null}
              {l.message}
            </li>
          ))}
        </ol>
      )}
    </section>
    </ErrorBoundary>
  );
}
