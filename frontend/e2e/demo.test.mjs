// The README's demo path (issue 19): the audit `fvaudit demo` queues, with the same settings
// (backend/fvaudit/assets/demo_audit.json, which `fvaudit demo` reads too) on the same data sizes,
// run by the real API + Celery worker; then every page a newcomer opens from it, in Chromium,
// with no page error: the run page, its layer page, a unit page in both states, compare (the
// attack against its α = 0 control) and the share link in a fresh context without a token.
//
// It asserts what the demo is for: the selected state is not θ_init (some evaluated state stayed
// within the accuracy budget on the full validation set) and its CLIP-δ is above its control's.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

import { api, waitJob } from "./api.mjs";
import { ARGS, BASE, CHROMIUM, OUT, TOKEN, here } from "./env.mjs";

const DEMO = JSON.parse(readFileSync(resolve(here, "../../backend/fvaudit/assets/demo_audit.json"), "utf8"));

let browser;
let page;
const state = {};
const pageErrors = [];

function watch(p, label) {
  p.on("pageerror", (e) => pageErrors.push(`${label} pageerror: ${e.message}`));
  p.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) pageErrors.push(`${label}: ${m.text()}`);
  });
  return p;
}

/** The demo's registrations, as `fvaudit demo` makes them (its limits), under names of this file's own. */
async function registerDemo() {
  const m = await api("/api/v1/models", { method: "POST", body: JSON.stringify({ name: "demo-path cnn", registry_name: "fmnist-cnn" }) });
  assert.equal(m.status, 201, JSON.stringify(m.body));
  const ids = { model_id: m.body.id };
  for (const [role, split, limit] of [["train_set_id", "train", DEMO.train_limit], ["val_set_id", "test", DEMO.val_limit]]) {
    const r = await api("/api/v1/image-sets", { method: "POST", body: JSON.stringify({ name: `demo-path ${split}`, source: `fashion-mnist:${split}`, limit }) });
    assert.ok(r.status === 201 || r.status === 202, JSON.stringify(r.body));
    ids[role] = r.body.id ?? r.body.image_set?.id;
  }
  return ids;
}

/** fvaudit.cli.service.demo_audit_spec, field for field. */
function demoSpec(ids) {
  const attack = { ...DEMO.attack, layers: [DEMO.layer] };
  return {
    name: `demo: conv3 push-down (${attack.steps} steps)`, ...ids, attack, k_clip: DEMO.k_clip, embedder: DEMO.embedder,
    control: DEMO.control, visualize: DEMO.visualize, synth_steps: DEMO.synth_steps, n_synth: DEMO.n_synth,
  };
}

async function noErrorsOn(p, what) {
  await p.waitForLoadState("networkidle");
  await p.waitForTimeout(300);
  assert.equal(await p.getByTestId("widget-error").count(), 0, `${what}: a widget failed`);
  assert.deepEqual(pageErrors, [], `${what}: page errors`);
}

describe("the README's demo path", { timeout: 40 * 60_000 }, () => {
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = watch(await ctx.newPage(), "owner");
    await page.goto(`${BASE}/?token=${TOKEN}`);
  });

  after(async () => {
    await browser?.close();
  });

  it("runs the demo audit to the end: the selected state is an attack, stronger than its control", async () => {
    const ids = await registerDemo();
    const r = await api("/api/v1/jobs", { method: "POST", body: JSON.stringify({ kind: "audit", spec: demoSpec(ids) }) });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const t0 = Date.now();
    const job = await waitJob(r.body.id);
    state.seconds = (Date.now() - t0) / 1000;
    assert.equal(job.status, "succeeded", `demo audit ${job.id}: ${job.status} ${job.error ?? ""}`);
    state.runId = job.run_id;
    const run = (await api(`/api/v1/runs/${state.runId}`)).body;
    state.run = run;
    state.controlId = run.control_run_id;
    // Table 3.1 rows of the demo layer: the selected state, the final state and the α = 0 control's
    const row = (st) => run.rows.find((r) => r.state === st && r.layer === DEMO.layer);
    const [sel, fin, ctl] = [row("selected"), row("final"), row("control")];
    console.log(`demo audit: ${state.seconds.toFixed(0)} s; selected step ${run.attack_outcome.selected_step}: `
      + `CLIP-δ ${sel.clip_delta.toFixed(3)}, τ ${sel.kendall_tau.toFixed(3)}, Δacc ${sel.delta_acc.toFixed(2)} pp; `
      + `final (step ${run.attack_outcome.final_step}) CLIP-δ ${fin.clip_delta.toFixed(3)}, Δacc ${fin.delta_acc.toFixed(2)} pp; `
      + `control CLIP-δ ${ctl.clip_delta.toFixed(4)}, τ ${ctl.kendall_tau.toFixed(3)}`);
    assert.equal(run.attack_outcome.selected_is_init, false, run.attack_outcome.message ?? "selected state is θ_init");
    assert.ok(run.attack_outcome.selected_step > 0);
    assert.ok(sel.clip_delta > ctl.clip_delta,
      `CLIP-δ ${sel.clip_delta} of the selected state is not above its control's ${ctl.clip_delta}`);
    const budget = run.attack_outcome.budget_pp;
    assert.ok(-sel.delta_acc <= budget + 1e-9, `the selected state's drop ${-sel.delta_acc} pp is over the ${budget} pp budget`);
    // issue 22: the interpreter's conclusion moved more under the attack than under its control
    assert.ok(sel.label_flip_rate > ctl.label_flip_rate,
      `labels changed on ${sel.label_flip_rate} of the attacked units, the control's ${ctl.label_flip_rate}`);
    state.flips = { selected: sel.label_flip_rate, control: ctl.label_flip_rate };
  });

  it("opens the run page and its layer page", async () => {
    await page.goto(`${BASE}/runs/${state.runId}`);
    await page.locator("table.t31 tbody tr").first().waitFor();
    await page.getByRole("columnheader", { name: "relabelled" }).waitFor();
    await noErrorsOn(page, "run page");
    await page.screenshot({ path: join(OUT, "demo-run.png"), fullPage: true });
    await page.goto(`${BASE}/runs/${state.runId}/layers/${DEMO.layer}`);
    await page.locator(".unit-table tbody tr").first().waitFor();
    await noErrorsOn(page, "layer page");
  });

  it("opens a unit in the selected state and in the final state, each titled by its state", async () => {
    const units = (await api(`/api/v1/runs/${state.runId}/layers/${DEMO.layer}/units?attacked_only=true&include_dead=false&page_size=1`)).body;
    const unit = units.items[0].unit;
    const sel = (await api(`/api/v1/runs/${state.runId}/layers/${DEMO.layer}/units/${unit}?state=selected`)).body;
    const fin = (await api(`/api/v1/runs/${state.runId}/layers/${DEMO.layer}/units/${unit}?state=final`)).body;
    assert.equal(sel.state, "selected");
    assert.equal(fin.state, "final");
    await page.goto(`${BASE}/runs/${state.runId}/layers/${DEMO.layer}/units/${unit}`);
    await page.getByText(/After \(selected state/).first().waitFor();
    // issue 22: the unit's class-concept label before → after, as the API gives it for this state
    const labelName = (side) => side.trim().match(/^(.*?) \d+ %/)[1];
    assert.equal(labelName((await page.getByTestId("unit-labels").innerText()).split("→")[1]), sel.labels.after.name);
    await noErrorsOn(page, "unit page (selected)");
    await page.getByRole("link", { name: /final state/ }).first().click();
    await page.waitForURL(/state=final/);
    await page.getByText(/After \(final state/).first().waitFor();
    assert.equal(labelName((await page.getByTestId("unit-labels").innerText()).split("→")[0]), fin.labels.before.name);
    await noErrorsOn(page, "unit page (final)");
    await page.screenshot({ path: join(OUT, "demo-unit-final.png"), fullPage: true });
  });

  it("compares the attack with its α = 0 control", async () => {
    await page.goto(`${BASE}/compare?a=${state.runId}&b=${state.controlId}`);
    await page.locator("svg").first().waitFor();
    await noErrorsOn(page, "compare page");
  });

  it("opens the run's share link in a fresh context without a token", async () => {
    const s = await api(`/api/v1/runs/${state.runId}/shares`, { method: "POST", body: "{}" });
    assert.equal(s.status, 201, JSON.stringify(s.body));
    const url = s.body.url;
    const guestCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const guest = watch(await guestCtx.newPage(), "guest");
    await guest.goto(url.startsWith("http") ? url : `${BASE}${url}`);
    await guest.locator("table.t31 tbody tr").first().waitFor();
    await noErrorsOn(guest, "share link");
    await guestCtx.close();
  });
});
