// End-to-end: a two-point pruning sweep (the unpruned demo CNN and norm pruning at 50 %, each
// audited by push-down and push-up) launched through the API against the real stack, then its
// page in Chromium: the curves per method, every point and table row linking to its run, the
// CSV export. Self-contained (it registers what it needs), tiny (10 attack steps, a 4-step
// fine-tune on 300 images) so it runs in about a minute or two on 2 CPU cores.
//
//   FVAUDIT_URL=http://127.0.0.1:PORT FVAUDIT_ADMIN_TOKEN=fva_... node --test e2e/sweep.test.mjs
//
// Screenshot: $FVAUDIT_E2E_OUT/sweep.png (default <repo>/test-output/e2e).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

import { ARGS, BASE, CHROMIUM, JOB_TIMEOUT, OUT, TOKEN } from "./env.mjs";

const H = { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" };

async function api(path, init = {}) {
  const res = await fetch(BASE + path, { ...init, headers: { ...H, ...(init.headers ?? {}) } });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  return { status: res.status, body };
}

/** The demo model and Fashion-MNIST subsets of its own (registered here: nothing shared with other files). */
async function setup() {
  const m = await api("/api/v1/models", { method: "POST", body: JSON.stringify({ name: "e2e sweep cnn", registry_name: "fmnist-cnn" }) });
  assert.equal(m.status, 201, JSON.stringify(m.body));
  const sets = {};
  for (const [role, split, limit] of [["train", "train", 300], ["val", "test", 200]]) {
    const r = await api("/api/v1/image-sets", { method: "POST", body: JSON.stringify({ name: `e2e sweep ${split}`, source: `fashion-mnist:${split}`, limit }) });
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

let browser;
let page;
const state = {};
const consoleErrors = [];

describe("sweep page against the real backend + worker", { timeout: 30 * 60_000 }, () => {
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    page = await ctx.newPage();
    page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && !/404|401|Failed to load resource/.test(m.text())) consoleErrors.push(m.text());
    });
  });

  after(async () => {
    await browser?.close();
  });

  it("a bad sweep is refused with a 422 naming the grid value", async () => {
    state.ids = await setup();
    const r = await api("/api/v1/jobs", { method: "POST", body: JSON.stringify({ kind: "sweep", spec: spec(state.ids, [0.5, 1.5]) }) });
    assert.equal(r.status, 422);
    assert.deepEqual(r.body.detail[0].loc, ["body", "spec", "grid", 0, "values", 1]);
  });

  it("runs a two-point sweep to the end", async () => {
    const r = await api("/api/v1/jobs", { method: "POST", body: JSON.stringify({ kind: "sweep", spec: spec(state.ids, [0.5]) }) });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    state.sweep = r.body.id;
    const t0 = Date.now();
    let job;
    do {
      await new Promise((res) => setTimeout(res, 2000));
      job = (await api(`/api/v1/jobs/${state.sweep}`)).body;
    } while (["queued", "running"].includes(job.status) && Date.now() - t0 < JOB_TIMEOUT);
    assert.equal(job.status, "succeeded", `sweep ${state.sweep}: ${job.status} ${job.error ?? ""}`);
  });

  it("shows the curves per method and the table, every point linking to its run", async () => {
    await page.goto(`${BASE}/?token=${TOKEN}`);
    await page.getByRole("button", { name: /admin/ }).waitFor();
    await page.getByRole("link", { name: "Sweeps", exact: true }).click();
    await page.waitForURL(/\/sweeps$/);
    await page.getByRole("link", { name: "e2e sweep" }).first().click();
    await page.waitForURL(new RegExp(`/sweeps/${state.sweep}$`));
    await page.getByRole("heading", { level: 1, name: /e2e sweep/ }).waitFor();
    const norm = page.getByRole("region", { name: "Norm pruning" });
    await norm.waitFor();
    assert.equal(await norm.locator("svg[role=img]").count(), 2);
    const detail = (await api(`/api/v1/sweeps/${state.sweep}`)).body;
    const runs = detail.rows.map((r) => `/runs/${r.run_id}`);
    assert.equal(runs.length, 4);
    assert.deepEqual(await norm.getByRole("link").evaluateAll((as) => as.map((a) => a.getAttribute("href"))), runs);
    const table = page.locator("table.sweep-table");
    assert.equal(await table.locator("tbody tr").count(), 4);
    await page.screenshot({ path: join(OUT, "sweep.png"), fullPage: true });
    // the export: the same rows as CSV, downloaded with the token
    const [dl] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export CSV" }).click()]);
    const csv = readFileSync(await dl.path(), "utf8").trim().split("\n");
    assert.equal(csv.length, 5);
    assert.ok(csv[0].startsWith("point,label,method,rate,weight_rate,filter_rate,finetuned_acc"), csv[0]);
    // a row's run link opens that run
    await table.getByRole("link", { name: `run ${detail.rows[2].run_id}` }).click();
    await page.waitForURL(new RegExp(`/runs/${detail.rows[2].run_id}$`));
    await page.getByRole("heading", { level: 1 }).waitFor();
    assert.deepEqual(consoleErrors, []);
  });
});

function spec(ids, rates) {
  return {
    name: "e2e sweep", train_set_id: ids.train, val_set_id: ids.val,
    base: {
      model_id: ids.model,
      prune: { method: "norm", rate: 0.5, finetune: { steps: 4, batch_size: 32, train_limit: 300 } },
      attack: { layers: ["relu1"], steps: 10, batch_size: 32, eval_every: 5, eval_size: 200, lr: 1e-3, checkpoint_every: 5 },
    },
    grid: [{ field: "prune.rate", values: rates }],
    baseline: true, attacks: ["push_down", "push_up"], decoy_class: "Bag", k_clip: 5, embedder: "efficientnet-lite0",
  };
}
