import { describe, expect, it } from "vitest";
import { reduce, type JobStream } from "./sse";

const empty: JobStream = { job: null, progress: null, points: [], logs: [], connected: false, error: null, ended: false };

describe("job event stream reducer", () => {
  it("collects loss and α points by step, and the latest progress", () => {
    let s = reduce(empty, { type: "progress", data: { stage: "scan", done: 10, total: 100 } });
    expect(s.points).toEqual([]);
    s = reduce(s, { type: "progress", data: { stage: "push_down", done: 1, total: 30, step: 1, loss: 0.6, l_attack: 4.7, l_maintain: 0.18, alpha: 0.1 } });
    s = reduce(s, { type: "progress", data: { stage: "push_down", done: 2, total: 30, step: 2, loss: 0.5, alpha: 0.1 } });
    s = reduce(s, { type: "progress", data: { stage: "push_down", done: 2, total: 30, step: 2, loss: 0.55, alpha: 0.1 } });
    expect(s.points.map((p) => [p.step, p.loss])).toEqual([[1, 0.6], [2, 0.55]]);
    expect(s.progress?.done).toBe(2);
    // a requeued attack restarts from step 1: the new trajectory replaces the old one
    s = reduce(s, { type: "progress", data: { step: 1, loss: 0.7, alpha: 0.1 } });
    expect(s.points.map((p) => p.step)).toEqual([1]);
  });

  it("keeps log lines once each, in order", () => {
    let s = reduce(empty, { type: "log", id: 3, data: { message: "a" } });
    s = reduce(s, { type: "log", id: 5, data: { message: "b", job_id: 2 } });
    s = reduce(s, { type: "log", id: 3, data: { message: "a" } });
    expect(s.logs.map((l) => [l.id, l.message, l.job_id])).toEqual([[3, "a", undefined], [5, "b", 2]]);
  });

  it("tracks the connection", () => {
    let s = reduce(empty, { type: "open" });
    expect(s.connected).toBe(true);
    s = reduce(s, { type: "error", message: "x" });
    expect([s.connected, s.error]).toEqual([false, "x"]);
    s = reduce(s, { type: "end" });
    expect(s.ended).toBe(true);
  });
});
