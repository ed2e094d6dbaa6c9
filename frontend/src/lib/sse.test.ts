import { describe, expect, it } from "vitest";
import { reduce, type JobStream } from "./sse";

const empty: JobStream = { job: null, progress: null, points: [], curves: {}, logs: [], connected: false, error: null, ended: false };
const at = (step: number, loss: number, job_id?: number) => ({ type: "progress" as const, data: { stage: "push_down", step, loss, alpha: 0.1, job_id } });

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

  it("after a worker restart, the curve keeps the history before the resume point and appends to it (issue 13, item 16)", () => {
    // the replayed stream: steps 1..6 from the first worker, which died after 6; the
    // requeued attack resumed from its checkpoint at step 4 and reports 5, 6, 7
    let s = empty;
    for (const [step, loss] of [[1, 9], [2, 8], [3, 7], [4, 6], [5, 5], [6, 4]]) s = reduce(s, at(step, loss, 41));
    for (const [step, loss] of [[5, 5], [6, 4], [7, 3]]) s = reduce(s, at(step, loss, 41));
    expect(s.points.map((p) => [p.step, p.loss])).toEqual([[1, 9], [2, 8], [3, 7], [4, 6], [5, 5], [6, 4], [7, 3]]);
  });

  it("keeps one curve per reporting job: the α = 0 control's steps do not cut the attack's", () => {
    let s = reduce(empty, at(1, 9, 41));
    s = reduce(s, at(2, 8, 41));
    s = reduce(s, at(1, 0.5, 47)); // the control attack, mirrored into the same chain
    expect(s.curves[41].map((p) => p.step)).toEqual([1, 2]);
    expect(s.points.map((p) => [p.step, p.loss])).toEqual([[1, 0.5]]);
    s = reduce(s, at(3, 7, 41));
    expect(s.points.map((p) => p.step)).toEqual([1, 2, 3]);
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
