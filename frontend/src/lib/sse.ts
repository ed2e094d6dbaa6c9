// Live job progress over Server-Sent Events (GET /jobs/{id}/events?token=...).
// The stream replays the job's stored events from the start, then follows it until a
// terminal status. EventSource reconnects by itself (the server resumes after
// Last-Event-ID); the hook closes it at the end.
import { useEffect, useReducer } from "react";
import { getToken } from "../api/auth";
import { API, isTerminal, type Job } from "../api/client";

export type Progress = {
  stage?: string;
  done?: number;
  total?: number | null;
  step?: number;
  loss?: number;
  l_attack?: number;
  l_maintain?: number;
  alpha?: number;
  job_id?: number;
  kind?: string;
  chain_step?: number;
  chain_steps?: number;
  [k: string]: unknown;
};

export type LogLine = { id: number; message: string; job_id?: number; [k: string]: unknown };

export type LossPoint = { step: number; loss?: number; l_attack?: number; l_maintain?: number; alpha?: number };

export type JobStream = {
  job: Job | null;
  progress: Progress | null;
  /** the loss curve of the attack that reported last (a chain mirrors each child's progress) */
  points: LossPoint[];
  /** every reporting job's curve, by job id (0: a job reporting for itself) */
  curves: Record<number, LossPoint[]>;
  logs: LogLine[];
  connected: boolean;
  error: string | null;
  ended: boolean;
};

type Action =
  | { type: "reset" }
  | { type: "open" }
  | { type: "status"; job: Job }
  | { type: "progress"; data: Progress }
  | { type: "log"; id: number; data: Record<string, unknown> }
  | { type: "error"; message: string }
  | { type: "end" };

const initial: JobStream = { job: null, progress: null, points: [], curves: {}, logs: [], connected: false, error: null, ended: false };

export function reduce(s: JobStream, a: Action): JobStream {
  switch (a.type) {
    case "reset":
      return initial;
    case "open":
      return { ...s, connected: true, error: null };
    case "status":
      return { ...s, job: a.job };
    case "progress": {
      const d = a.data;
      if (!(typeof d.step === "number" && (d.loss != null || d.alpha != null))) return { ...s, progress: d };
      const p: LossPoint = { step: d.step, loss: d.loss, l_attack: d.l_attack, l_maintain: d.l_maintain, alpha: d.alpha };
      const key = typeof d.job_id === "number" ? d.job_id : 0;
      const before = s.curves[key] ?? [];
      const last = before[before.length - 1];
      // An attack requeued after a worker restart resumes from its last checkpoint and
      // follows exactly the path it took before (engine/attacks.py), so the steps before
      // the resume point stay: only those from it on are replaced. (Issue 13, item 16: the
      // chart used to drop everything before the resume point.) A restart from scratch
      // (step 1) replaces the whole curve.
      const step = d.step;
      const points = last && last.step >= step ? [...before.filter((q) => q.step < step), p] : [...before, p];
      return { ...s, progress: d, points, curves: { ...s.curves, [key]: points } };
    }
    case "log": {
      if (s.logs.some((l) => l.id === a.id)) return s;
      const message = typeof a.data.message === "string" ? a.data.message : JSON.stringify(a.data);
      return { ...s, logs: [...s.logs, { ...a.data, id: a.id, message }] };
    }
    case "error":
      return { ...s, connected: false, error: a.message };
    case "end":
      return { ...s, connected: false, ended: true };
  }
}

export function useJobEvents(jobId: number, enabled = true): JobStream {
  const [state, dispatch] = useReducer(reduce, initial);
  useEffect(() => {
    dispatch({ type: "reset" });
    if (!enabled || !(jobId > 0) || typeof EventSource === "undefined") return;
    const token = getToken();
    const url = `${API}/jobs/${jobId}/events${token ? `?token=${encodeURIComponent(token)}` : ""}`;
    const es = new EventSource(url);
    let closed = false;
    let terminal = false;
    let logSeq = 0;
    const close = () => {
      closed = true;
      es.close();
      dispatch({ type: "end" });
    };
    es.onopen = () => dispatch({ type: "open" });
    // The stream starts with the job's current status, replays the stored events, and the
    // server closes it after a terminal status: that close (an error event) ends it here.
    es.addEventListener("status", (ev) => {
      const job = JSON.parse((ev as MessageEvent).data) as Job;
      dispatch({ type: "status", job });
      if (isTerminal(job.status)) terminal = true;
    });
    es.addEventListener("progress", (ev) => dispatch({ type: "progress", data: JSON.parse((ev as MessageEvent).data) }));
    es.addEventListener("log", (ev) => {
      const me = ev as MessageEvent;
      const id = me.lastEventId ? Number(me.lastEventId) : --logSeq;
      dispatch({ type: "log", id, data: JSON.parse(me.data) });
    });
    es.onerror = () => {
      if (closed) return;
      if (terminal) {
        close();
        return;
      }
      if (es.readyState === EventSource.CLOSED) {
        dispatch({ type: "error", message: "The live progress stream was refused (check your API token); showing polled status." });
      } else {
        dispatch({ type: "error", message: "Live progress stream interrupted; reconnecting…" });
      }
    };
    return () => {
      closed = true;
      es.close();
    };
  }, [jobId, enabled]);
  return state;
}
