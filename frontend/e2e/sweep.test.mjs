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

import { api, setupDemo, waitJob } from "./api.mjs";
import { ARGS, BASE, CHROMIUM, OUT, TOKEN } from "./env.mjs";

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
    state.ids = await setupDemo("e2e sweep");
    const r = await api("/api/v1/jobs", { method: "POST", body: JSON.stringify({ kind: "sweep", spec: spec(state.ids, [0.5, 1.5]) }) });
    assert.equal(r.status, 422);
    assert.deepEqual(r.body.detail[0].loc, ["body", "spec", "grid", 0, "values", 1]);
  });

  it("runs a two-point sweep to the end", async () => {
    const r = await api("/api/v1/jobs", { method: "POST", body: JSON.stringify({ kind: "sweep", spec: spec(state.ids, [0.5]) }) });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    state.sweep = r.body.id;
    const job = await waitJob(state.sweep);
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
