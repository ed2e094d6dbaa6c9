// The API as the e2e files use it beside the browser: authenticated JSON requests, the demo
// model and Fashion-MNIST subsets registered under a name of the file's own (nothing shared
// between files), and waiting for a job to end.
import assert from "node:assert/strict";

import { BASE, JOB_TIMEOUT, TOKEN } from "./env.mjs";

const H = { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" };

/** `{status, body}` of a request to the API (body parsed when it is JSON). */
export async function api(path, init = {}) {
  const res = await fetch(BASE + path, { ...init, headers: { ...H, ...(init.headers ?? {}) } });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  return { status: res.status, body };
}

/** The demo model ("<prefix> cnn") and Fashion-MNIST train (300) / test (200) sets: their ids. */
export async function setupDemo(prefix) {
  const m = await api("/api/v1/models", { method: "POST", body: JSON.stringify({ name: `${prefix} cnn`, registry_name: "fmnist-cnn" }) });
  assert.equal(m.status, 201, JSON.stringify(m.body));
  const sets = {};
  for (const [role, split, limit] of [["train", "train", 300], ["val", "test", 200]]) {
    const r = await api("/api/v1/image-sets", { method: "POST", body: JSON.stringify({ name: `${prefix} ${split}`, source: `fashion-mnist:${split}`, limit }) });
    assert.ok(r.status === 201 || r.status === 202, JSON.stringify(r.body));
    sets[role] = r.body.id ?? r.body.image_set?.id;
    // a registration that runs as a job: wait until the set is ready
    for (let i = 0; i < 120; i++) {
      const s = await api(`/api/v1/image-sets/${sets[role]}`);
      if (s.status === 200 && (s.body.status ?? "ready") === "ready") break;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return { model: m.body.id, ...sets };
}

/** The job once it is no longer queued or running (or when FVAUDIT_E2E_JOB_TIMEOUT has passed). */
export async function waitJob(id) {
  const t0 = Date.now();
  let job;
  do {
    await new Promise((res) => setTimeout(res, 2000));
    job = (await api(`/api/v1/jobs/${id}`)).body;
  } while (["queued", "running"].includes(job.status) && Date.now() - t0 < JOB_TIMEOUT);
  return job;
}
