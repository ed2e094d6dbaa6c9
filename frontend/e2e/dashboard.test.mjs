// End-to-end: Debian's Chromium (playwright-core) drives the built dashboard, served by
// the real API, with a real Celery worker running the jobs on the demo model.
//
//   FVAUDIT_URL=http://127.0.0.1:PORT FVAUDIT_ADMIN_TOKEN=fva_... node --test e2e/dashboard.test.mjs
//
// (frontend/scripts/test.sh starts the stack and sets both.) Screenshots go to
// $FVAUDIT_E2E_OUT (default <repo>/test-output/e2e).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

import { api } from "./api.mjs";
import { ARGS, BASE, CHROMIUM, JOB_TIMEOUT, OUT, TOKEN, here, assertTitle } from "./env.mjs";

let browser;
let owner; // the signed-in context
let page;
const state = {};
const consoleErrors = [];

async function newContext(opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...opts });
  await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
  return ctx;
}

function watch(p, label) {
  p.on("pageerror", (e) => consoleErrors.push(`${label} pageerror: ${e.message}`));
  p.on("console", (m) => {
    // a 404 of a revoked share link is expected; everything else is a bug
    if (m.type() === "error" && !/404|401|Failed to load resource/.test(m.text())) consoleErrors.push(`${label}: ${m.text()}`);
  });
  return p;
}

/**
 * Scroll through the page so lazy thumbnails load, then wait until every image the
 * selector matches decoded (at least `n` of them when given): naturalWidth > 0.
 */
async function allThumbnailsLoaded(p, selector = ".gallery img", n = 1) {
  await p.evaluate(async () => {
    for (let y = 0; y < document.body.scrollHeight; y += 400) {
      window.scrollTo(0, y);
      await new Promise((r) => setTimeout(r, 60));
    }
    window.scrollTo(0, 0);
  });
  await p.waitForFunction(
    ({ sel, min }) => {
      const imgs = [...document.querySelectorAll(sel)];
      return imgs.length >= min && imgs.every((i) => i.complete && i.naturalWidth > 0);
    },
    { sel: selector, min: n },
    { timeout: 30_000 },
  );
  return p.$$eval(selector, (imgs) => imgs.map((i) => ({ w: i.naturalWidth, h: i.naturalHeight, src: i.getAttribute("src"), alt: i.getAttribute("alt") })));
}

const clipboard = (p) => p.evaluate(() => navigator.clipboard.readText());

describe("dashboard against the real backend + worker", { timeout: 45 * 60_000 }, () => {
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    owner = await newContext();
    page = watch(await owner.newPage(), "owner");
  });

  after(async () => {
    await browser?.close();
  });

  it("stores the API token given once as ?token= and drops it from the address", async () => {
    await page.goto(`${BASE}/?token=${TOKEN}`);
    await page.getByRole("button", { name: /admin/ }).waitFor();
    assert.ok(!page.url().includes("token="), `token left in the URL: ${page.url()}`);
    assert.equal(await page.evaluate(() => localStorage.getItem("fvaudit.token")), TOKEN);
    await page.getByRole("heading", { name: "Models" }).waitFor();
    // the home page's models panel (the runs filter's <option> of the same name is not what a person sees)
    await page.getByText("fmnist-cnn (demo)").filter({ visible: true }).first().waitFor();
  });

  it("launch form: inline validation, then the server's 422 lands on the field it names", async () => {
    await page.getByRole("link", { name: "Launch", exact: true }).click();
    await page.waitForURL(/\/launch$/);
    // layers: a list of checkboxes; one layer chosen → its units can be picked
    const relu3 = page.getByRole("checkbox", { name: /— relu3 · 128 units$/ });
    await relu3.check();
    for (const other of await page.locator('input[name="layers"]:checked').all())
      if ((await other.getAttribute("value")) !== "relu3") await other.uncheck();
    await page.getByText(/ReLU · output 128×7×7 · 128 units/).waitFor();
    // every default comes from GET /api/v1/job-kinds (ATTACK_DEFAULTS)
    const kinds = await page.evaluate(async (t) => (await fetch("/api/v1/job-kinds", { headers: { Authorization: `Bearer ${t}` } })).json(), TOKEN);
    const audit = kinds.find((k) => k.kind === "audit");
    assert.ok(audit && audit.chain && audit.steps.length >= 6, `audit kind: ${JSON.stringify(audit?.steps)}`);
    assert.equal(await page.locator("#f-lr").inputValue(), String(audit.defaults.attack.lr));
    assert.equal(await page.locator("#f-steps").inputValue(), String(audit.defaults.attack.steps));
    assert.equal(await page.locator("#f-eval_size").inputValue(), String(audit.defaults.attack.eval_size));
    assert.ok(await page.locator("#f-visualize").isChecked(), "synthetic visualization on by default");
    assert.ok(await page.locator("#f-control").isChecked(), "α = 0 control on by default");
    // a second layer hides the unit choice (all units of each layer)
    await page.getByRole("checkbox", { name: /— relu2 · 64 units$/ }).check();
    await page.getByText(/All units of each of the 2 layers/).waitFor();
    await page.getByRole("checkbox", { name: /— relu2 · 64 units$/ }).uncheck();
    await page.locator("#f-name").fill("e2e push-down");
    // small enough for 2 CPU cores: few steps, 2 seeds of 8 visualization steps, a 500-image α subset
    await page.locator("#f-batch_size").fill("64");
    await page.locator("#f-n_synth").fill("2");
    await page.locator("#f-synth_steps").fill("8");
    // inline validation (client side)
    await page.locator("#f-steps").fill("abc");
    await page.locator("#f-steps").blur();
    await page.locator("#e-steps").getByText("steps must be a whole number").waitFor();
    assert.equal(await page.locator("#f-steps").getAttribute("aria-invalid"), "true");
    await page.locator("#f-steps").fill("30");
    await page.locator("#e-steps").waitFor({ state: "detached" });
    await page.getByRole("radio", { name: "several" }).check();
    await page.locator("#f-units").fill("0, 500");
    await page.locator("#f-units").blur();
    await page.getByText("unit 500 is out of range: the layer has 128 units (0–127)").waitFor();
    await page.getByRole("radio", { name: /^all/ }).check();
    // a value only the server can judge: an unknown embedder → 422 at spec.embedder
    await page.getByText("Advanced: evaluation, accuracy budget, CLIP").click();
    await page.locator("#f-eval_every").fill("10");
    await page.locator("#f-eval_size").fill("500");
    await page.locator("#f-embedder").fill("no-such-embedder");
    await page.getByRole("button", { name: "Launch push-down" }).click();
    const err = page.locator("#e-embedder");
    await err.waitFor();
    assert.match(await err.innerText(), /unknown embedder 'no-such-embedder'/);
    assert.ok(page.url().endsWith("/launch"), "a refused launch stays on the form");
    await page.locator("#f-embedder").fill("auto");
    await err.waitFor({ state: "detached" });
  });

  it("launches a push-down from the form and follows it live to the end", async () => {
    await page.getByRole("button", { name: "Launch push-down" }).click();
    await page.waitForURL(/\/jobs\/\d+$/);
    state.jobId = Number(page.url().match(/\/jobs\/(\d+)$/)[1]);
    await page.getByRole("heading", { name: /e2e push-down/ }).waitFor();
    // live progress: stages stream in over SSE while the worker runs the chain
    const stages = new Set();
    const deadline = Date.now() + JOB_TIMEOUT;
    let status = "";
    let shot = false;
    while (Date.now() < deadline) {
      const stage = await page.locator(".stage strong").first().textContent().catch(() => null);
      if (stage) stages.add(stage);
      status = (await page.locator("h1 .badge").first().textContent()) ?? "";
      if (["succeeded", "failed", "cancelled"].includes(status)) break;
      const done = Number((/push_down · (\d+) \//.exec((await page.locator(".stage").first().textContent().catch(() => "")) ?? "") ?? [])[1] ?? 0);
      if (!shot && status === "running" && done >= 12) {
        shot = true; // the attack is streaming its loss curves
        await page.screenshot({ path: join(OUT, "job-live.png"), fullPage: true });
      }
      await page.waitForTimeout(250);
    }
    if (status !== "succeeded") {
      const error = await page.locator(".state.error").textContent().catch(() => "");
      assert.fail(`job ${state.jobId} ended ${status || "(timeout)"}: ${error}`);
    }
    assert.ok(stages.size >= 2, `saw too few progress stages: ${[...stages].join(" | ")}`);
    // the chain: every step of the registry's audit (visualize and the α = 0 control included), all done,
    // labelled by the API
    const steps = await page.locator(".chain .step").allInnerTexts();
    assert.ok(steps.length >= 6, `chain steps: ${steps.join(" | ")}`);
    await page.locator(".chain .step.status-succeeded").nth(steps.length - 1).waitFor();
    for (const label of ["scan θ_init", "attack", "metrics", "synthetic visualization", "α = 0 control"])
      assert.ok(steps.some((t) => t.includes(label)), `a step labelled “${label}” in ${steps.join(" | ")}`);
    state.steps = steps.length;
    await page.locator('svg[aria-label^="Loss:"]').waitFor();
    await page.locator('svg[aria-label^="α trajectory:"]').waitFor();
    assert.ok((await page.locator("ol.log li").count()) > 3, "the job log streamed in");
  });

  it("run summary: Table 3.1 row, histograms, the Fig. 3.5 scatter, accuracy, unit table", async () => {
    await page.getByRole("link", { name: /Open the results/ }).click();
    await page.waitForURL(/\/runs\/\d+$/);
    state.runId = Number(page.url().match(/\/runs\/(\d+)$/)[1]);
    await page.getByRole("heading", { name: /e2e push-down/ }).waitFor();
    // Table 3.1: the selected and the final state, and the α = 0 control linking its own run
    const row = page.locator('table.t31 tbody tr[data-state="selected"]').first();
    await row.waitFor();
    assert.equal(await row.locator("th").innerText(), "relu3");
    const cells = await row.locator("td").allInnerTexts();
    assert.match(cells[0], /^selected/, `state cell: ${cells[0]}`);
    assert.match(cells[1], /^−?\d\.\d{3}$/, `CLIP-δ cell: ${cells[1]}`);
    assert.match(cells[2], /^−?\d\.\d{3}$/, `Kendall-τ cell: ${cells[2]}`);
    assert.match(cells[6], /% on [\d,]+ images$/, `accuracy cell says on how many images: ${cells[6]}`);
    const final = page.locator('table.t31 tbody tr[data-state="final"]').first();
    assert.match(await final.locator("td").first().innerText(), /^final · step 30/);
    const control = page.locator('table.t31 tbody tr[data-state="control"]').first();
    await control.waitFor();
    const controlLink = control.getByRole("link", { name: /α = 0 control \(run \d+\)/ });
    state.controlHref = await controlLink.getAttribute("href");
    assert.match(state.controlHref, /^\/runs\/\d+$/);
    await page.locator('section[aria-label="Summary (Table 3.1)"]').screenshot({ path: join(OUT, "run-rows.png") });
    // Fig. 3.7 in numbers: natural vs synthetic CLIP-δ, a dot per unit
    const fig = page.locator('section[aria-label="Natural vs synthetic (Fig. 3.7)"]');
    await fig.waitFor();
    assert.ok((await fig.locator("circle.dot.g-attacked").count()) > 10, "attacked units in the Fig. 3.7 scatter");
    await assertTitle(page, /^Run \d+: e2e push-down · fvaudit$/);
    // the histograms name the k and the state they show (issue 19, item 4)
    await page.locator('svg[aria-label^="CLIP-δ per unit (top-5, selected state): histogram"]').waitFor();
    await page.locator('svg[aria-label^="Kendall-τ per unit (selected state): histogram"]').waitFor();
    const dots = await page.locator('section[aria-label="Per-unit distributions"] figure.chart circle.dot').count();
    assert.ok(dots > 10, `Fig. 3.5 scatter has ${dots} dots`);
    await page.getByText(/before \(θ_init\)/).first().waitFor();
    // sortable, paginated unit table
    const unitRows = page.locator(".unit-table tbody tr");
    assert.equal(await unitRows.count(), 25);
    await page.getByRole("button", { name: /^unit/ }).first().click(); // sort by unit
    await page.waitForURL(/sort=unit/);
    await page.getByRole("button", { name: /^CLIP-δ/ }).click();
    await page.waitForURL(/sort=clip_delta&order=desc/);
    await page.waitForFunction(() => !document.querySelector(".unit-table.is-loading"));
    const deltas = (await page.locator(".unit-table tbody tr td:nth-child(3)").allInnerTexts()).map((t) => Number(t.replace("−", "-")));
    assert.deepEqual(deltas, [...deltas].sort((a, b) => b - a), "CLIP-δ column sorted descending");
    await page.getByRole("button", { name: "next ›" }).click();
    await page.waitForURL(/page=2/);
    await page.getByRole("button", { name: "« first" }).click();
    await page.waitForFunction(() => !location.search.includes("page="));
    await page.waitForFunction(() => !document.querySelector(".unit-table.is-loading"));
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(OUT, "run-summary.png"), fullPage: true });
  });

  it("opens a unit: real before/after images for the training and validation sets; ←/→ move", async () => {
    const first = page.locator(".unit-table tbody tr").first();
    const unit = Number((await first.locator("td").first().innerText()).replace("unit ", ""));
    await first.click();
    await page.waitForURL(new RegExp(`/runs/${state.runId}/layers/relu3/units/${unit}$`));
    state.unit = unit;
    await page.getByRole("heading", { name: `Training set: top-k` }).waitFor();
    await page.getByRole("heading", { name: /Validation set: top-k/ }).waitFor();
    const imgs = await allThumbnailsLoaded(page);
    assert.equal(imgs.length, 40, "10 before + 10 after, for training and validation");
    for (const im of imgs) {
      assert.ok(im.w >= 28 && im.h >= 28, `thumbnail decoded: ${im.src} ${im.w}×${im.h}`);
      assert.match(im.src, /\/api\/v1\/image-sets\/\d+\/images\/\d+\/thumb\?sig=/);
    }
    const labels = await page.locator(".gallery .tile .label").allInnerTexts();
    const classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    assert.ok(labels.every((l) => classes.includes(l)), `class labels: ${labels.join(", ")}`);
    assert.ok((await page.locator(".gallery .tile .score").count()) === 40);
    await page.locator(".kv dt", { hasText: "CLIP-δ" }).first().waitFor();
    await page.getByRole("heading", { name: "Nearest units (whack-a-mole)" }).waitFor();
    // the synthetic visualizations beside the natural top-k: 2 seeds before and after, really decoded
    const synth = await allThumbnailsLoaded(page, ".synth-pairs img", 4);
    assert.equal(synth.length, 4, `synthetic images: ${synth.map((i) => i.alt).join(" | ")}`);
    for (const im of synth) assert.ok(im.w >= 16 && im.h >= 16, `synthetic image decoded: ${im.alt} ${im.w}×${im.h}`);
    assert.ok(synth.some((i) => /seed 1, after the attack/.test(i.alt)), "alt text names unit, seed and state");
    const panel = page.locator('section[aria-label="Synthetic visualizations"]');
    for (const term of ["synthetic CLIP-δ", "synthetic transfer", "natural–synthetic agreement"]) await panel.locator("dt", { hasText: term }).waitFor();
    await assertTitle(page, new RegExp(`^Unit ${unit} · relu3 · e2e push-down · fvaudit$`));
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(OUT, "unit-page.png"), fullPage: true });
    await panel.screenshot({ path: join(OUT, "unit-synthetic.png") });

    // keyboard: → and ← move between units
    await page.locator("main").focus();
    const next = await page.getByRole("button", { name: /^unit \d+ →$/ }).innerText();
    const nextUnit = Number(next.replace(/[^0-9]/g, ""));
    await page.keyboard.press("ArrowRight");
    await page.waitForURL((u) => u.pathname.endsWith(`/units/${nextUnit}`), { timeout: 5000 }).catch((e) => {
      throw new Error(`→ from unit ${unit} (next ${nextUnit}) left the page at ${page.url()}: ${e.message}`);
    });
    await page.keyboard.press("ArrowLeft");
    await page.waitForURL((u) => u.pathname.endsWith(`/units/${unit}`));
    await page.getByRole("heading", { name: `Unit ${unit}`, exact: false }).waitFor();

    // copy link = this page's permalink
    await page.getByRole("button", { name: "Copy link" }).click();
    await page.getByRole("button", { name: "Copied ✓" }).waitFor();
    assert.equal(await clipboard(page), page.url());
  });

  it("issue 22: searches a unit label from the header, opens a hit, and reads its label before → after", async () => {
    // a label of this run's relu3 in its selected state, as the API stores it (the audit just ran)
    const r = await api(`/api/v1/units?run_id=${state.runId}&layer=relu3&state=selected&sort=score&limit=500`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(r.body.length > 0, "the metrics job stored labels for the run");
    const target = r.body.find((h) => h.changed) ?? r.body[0];
    const q = target.label.slice(0, 3).toLowerCase();
    const box = page.getByRole("searchbox", { name: "Search unit labels" });
    await box.fill(q);
    await box.press("Enter");
    await page.waitForURL(new RegExp(`/search\\?.*q=${encodeURIComponent(q)}`));
    await page.locator('[data-testid="search-results"][aria-busy="false"]').waitFor();
    // the page shows the API's first page for that prefix (25 hits, best label first): the same hits
    const expected = (await api(`/api/v1/units?q=${encodeURIComponent(q)}&limit=25`)).body;
    const rows = page.getByTestId("label-hit");
    assert.equal(await rows.count(), expected.length);
    // open this run's hit when it is on the first page, else the first hit (another run of the suite)
    const found = expected.findIndex((h) => h.run_id === target.run_id && h.unit === target.unit && h.state === target.state);
    const idx = found >= 0 ? found : 0;
    const hit = expected[idx];
    const row = rows.nth(idx);
    assert.ok((await row.textContent()).includes(hit.label), await row.textContent());
    await page.screenshot({ path: join(OUT, "search.png"), fullPage: true });
    await row.getByTestId("hit-unit").click();
    await page.waitForURL(new RegExp(`/runs/${hit.run_id}/layers/${hit.layer}/units/${hit.unit}`));
    const labels = page.getByTestId("unit-labels");
    await labels.waitFor();
    const stateQ = hit.state === "final" ? "?state=final" : "";
    const detail = (await api(`/api/v1/runs/${hit.run_id}/layers/${hit.layer}/units/${hit.unit}${stateQ}`)).body;
    const text = await labels.textContent();
    assert.ok(text.includes(detail.labels.before.name) && text.includes(detail.labels.after.name), text);
    assert.equal(hit.state === "before" ? detail.labels.before.name : detail.labels.after.name, hit.label);
    assert.match(text, /→/);
    // back where the next step starts: this run's unit page
    await page.goto(`${BASE}/runs/${state.runId}/layers/relu3/units/${state.unit}`);
    await page.getByRole("heading", { name: `Unit ${state.unit}`, exact: false }).waitFor();
  });

  it("creates a share link from the Share dialog and copies it", async () => {
    await page.getByRole("link", { name: "e2e push-down" }).click();
    await page.waitForURL(new RegExp(`/runs/${state.runId}$`));
    await page.getByRole("button", { name: "Share…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByRole("button", { name: "Create share link" }).click();
    const url = await dialog.getByTestId("share-url").inputValue();
    assert.match(url, new RegExp(`/runs/${state.runId}\\?share=[A-Za-z0-9_-]{20,}$`));
    await dialog.getByRole("button", { name: "Copy link" }).click();
    await dialog.getByRole("button", { name: "Copied ✓" }).waitFor();
    state.shareUrl = await clipboard(page);
    assert.equal(state.shareUrl, url);
    await dialog.locator(".share-list li").first().waitFor();
    assert.equal(await dialog.locator(".share-list li").count(), 1);
    await dialog.getByRole("button", { name: "Close" }).click();
  });

  it("opens the share link in a fresh browser context, without a token: read-only", async () => {
    state.guest = await newContext();
    const guest = watch(await state.guest.newPage(), "guest");
    state.guestPage = guest;
    await guest.goto(state.shareUrl);
    await guest.getByRole("heading", { name: /e2e push-down/ }).waitFor();
    assert.equal(await guest.evaluate(() => localStorage.getItem("fvaudit.token")), null);
    await guest.getByText("shared · read-only").waitFor();
    await guest.locator("h1 .badge.readonly").waitFor();
    await guest.locator("table.t31 tbody tr").first().waitFor();
    for (const name of ["Share…", "Compare…", "Cancel job"]) assert.equal(await guest.getByRole("button", { name }).count(), 0, `${name} hidden`);
    assert.equal(await guest.getByRole("link", { name: "Launch", exact: true }).count(), 0);
    assert.equal(await guest.getByRole("link", { name: "Compare…" }).count(), 0);
    // a unit page keeps the share token and shows real images
    await guest.locator(".unit-table tbody tr").first().click();
    await guest.waitForURL(/\/units\/\d+\?share=/);
    const imgs = await allThumbnailsLoaded(guest);
    assert.equal(imgs.length, 40);
    await guest.evaluate(() => window.scrollTo(0, 0));
    await guest.screenshot({ path: join(OUT, "shared-unit-page.png"), fullPage: true });
    await guest.goto(state.shareUrl);
    await guest.locator("table.t31 tbody tr").first().waitFor();
    await guest.screenshot({ path: join(OUT, "shared-run-readonly.png"), fullPage: false });
    // without the share token, the same browser sees nothing private: it is asked to sign in
    await guest.goto(`${BASE}/`);
    await guest.getByRole("heading", { name: "Sign in with an API token" }).waitFor();
    await guest.goto(`${BASE}/runs/${state.runId}`);
    await guest.getByRole("heading", { name: "Sign in with an API token" }).waitFor();
    // a stale token saved in the browser does not break a share link
    await guest.evaluate(() => localStorage.setItem("fvaudit.token", "fva_revoked_or_wrong_token_000"));
    await guest.goto(state.shareUrl);
    await guest.locator("table.t31 tbody tr").first().waitFor();
    await guest.evaluate(() => localStorage.removeItem("fvaudit.token"));
    await guest.goto(state.shareUrl);
    await guest.locator("table.t31 tbody tr").first().waitFor();
  });

  it("revokes the link; the fresh context is refused", async () => {
    await page.getByRole("button", { name: "Share…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.locator(".share-list li").first().waitFor();
    await dialog.getByRole("button", { name: /^Revoke/ }).click();
    await dialog.getByRole("button", { name: "Yes, revoke the link" }).click(); // revoking asks first (issue 19, item 11)
    await dialog.getByText("No active share links.").waitFor();
    await dialog.getByRole("button", { name: "Close" }).click();

    const guest = state.guestPage;
    await guest.reload();
    await guest.getByText("This share link does not work").waitFor();
    await guest.getByText(/revoked/).first().waitFor();
    const token = new URL(state.shareUrl).searchParams.get("share");
    const status = await guest.evaluate(async ([run, t]) => (await fetch(`/api/v1/runs/${run}?share=${t}`)).status, [state.runId, token]);
    assert.equal(status, 404);
    await guest.screenshot({ path: join(OUT, "share-revoked.png") });
    await state.guest.close();
  });

  it("model page: a synthetic image per unit of the audited layer; a unit shows all its seeds", async () => {
    await page.goto(`${BASE}/runs/${state.runId}`);
    await page.getByRole("link", { name: "fmnist-cnn (demo)" }).first().click();
    await page.waitForURL(/\/models\/\d+$/);
    state.modelId = Number(page.url().match(/\/models\/(\d+)$/)[1]);
    await page.getByRole("heading", { name: "fmnist-cnn (demo)", level: 1 }).waitFor();
    const layer = page.locator('section[aria-label="Layer relu3"]');
    const empty = page.getByText("No synthetic visualizations of this model yet.");
    await Promise.race([layer.waitFor(), empty.waitFor()]);
    if (await empty.isVisible()) {
      // the audit's renders are not browsable here: render the layer from the empty state (a visualize job)
      await page.getByLabel("Layer").selectOption("relu3");
      await page.getByRole("button", { name: "Render synthetic visualizations" }).click();
      await page.waitForURL(/\/jobs\/\d+$/);
      await page.locator("h1 .badge", { hasText: "succeeded" }).waitFor({ timeout: JOB_TIMEOUT });
      await page.getByRole("link", { name: "Open the model's synthetic visualizations" }).click();
      await layer.waitFor();
    }
    const grid = await allThumbnailsLoaded(page, 'section[aria-label="Layer relu3"] .unit-grid img', 96);
    assert.ok(grid.length >= 96, `relu3 grid: ${grid.length} images`);
    assert.match(grid[0].alt, /^synthetic visualization of unit 0 \(relu3\), seed 0$/);
    await assertTitle(page, /^Model fmnist-cnn \(demo\): synthetic visualizations · fvaudit$/);
    await page.screenshot({ path: join(OUT, "model-page.png"), fullPage: false });
    // every unit is a link: all seeds of one unit
    const link = layer.locator(".unit-grid a").nth(3);
    const href = await link.getAttribute("href");
    assert.match(href, new RegExp(`^/models/${state.modelId}/layers/relu3/units/\\d+$`));
    await link.click();
    await page.waitForURL((u) => u.pathname === href);
    const seeds = await allThumbnailsLoaded(page, ".seed-grid img", 2);
    assert.ok(seeds.length >= 2, `${href}: ${seeds.length} seeds`);
    await page.screenshot({ path: join(OUT, "model-unit.png"), fullPage: true });
  });

  it("push-up: decoy class picker with thumbnails; a running job can be cancelled", async () => {
    await page.goto(`${BASE}/launch`);
    await page.getByRole("radio", { name: /^Push-up \(decoy\)/ }).check();
    await page.getByRole("checkbox", { name: /— relu3 · 128 units$/ }).check();
    const group = page.getByRole("radiogroup", { name: "Decoy class" });
    await group.waitFor();
    assert.equal(await group.getByRole("radio").count(), 10);
    await page.getByRole("button", { name: "Launch push-up (decoy)" }).click();
    await page.getByText("pick a decoy class").waitFor(); // inline error, nothing sent
    assert.ok(page.url().endsWith("/launch"));
    await group.getByRole("radio", { name: /8: Bag/ }).click();
    await page.getByText("pick a decoy class").waitFor({ state: "detached" });
    await page.waitForFunction(() => [...document.querySelectorAll(".class-card img")].some((i) => i.complete && i.naturalWidth > 0));
    await page.locator("#f-name").fill("e2e push-up to cancel");
    await page.locator("#f-steps").fill("100000");
    await page.getByRole("button", { name: "Launch push-up (decoy)" }).click();
    await page.waitForURL(/\/jobs\/\d+$/);
    await page.locator("h1 .badge", { hasText: "running" }).waitFor({ timeout: 60_000 });
    page.once("dialog", (d) => d.accept());
    await page.getByRole("button", { name: "Cancel job" }).click();
    await page.locator("h1 .badge", { hasText: "cancelled" }).waitFor({ timeout: 120_000 });
    await page.getByText(/This job was cancelled/).waitFor();
    assert.equal(await page.getByRole("button", { name: "Cancel job" }).count(), 0);
  });

  it("compare: the push-down run unit by unit", async () => {
    await page.goto(`${BASE}/compare?a=${state.runId}&layer=relu3&unit=${state.unit}`);
    await page.getByRole("heading", { name: /Units · relu3/ }).waitFor();
    await page.getByRole("heading", { name: new RegExp(`Unit ${state.unit} · relu3`) }).waitFor();
    const imgs = await allThumbnailsLoaded(page);
    assert.equal(imgs.length, 20, "model before + attacked after, validation set");
  });

  // ---------------------------------------------------------------- issue 13, items 10–15 and 18
  // Screenshots named issue13-item<N>-*.png (for the closing note).

  it("issue 13 item 18: register forms: a server 422 on its field, a checkpoint upload, a folder indexed by its job", async () => {
    await page.goto(`${BASE}/`);
    await page.getByRole("link", { name: "Register", exact: true }).click();
    await page.waitForURL(/\/register$/);
    await assertTitle(page, /^Register a model or an image set · fvaudit$/);
    // a registry model whose checkpoint lies outside the allowed roots: the server's reason on that field
    const rm = page.getByRole("form", { name: "Register a registry model" });
    await rm.getByLabel("Name").fill("e2e outside the roots");
    await rm.getByLabel("Architecture").selectOption("fmnist-cnn");
    await rm.getByLabel("Checkpoint on the server (optional)").fill("/etc/e2e.safetensors");
    await rm.getByRole("button", { name: "Register model" }).click();
    const err = rm.locator("#e-rm-checkpoint_path");
    await err.waitFor();
    assert.match(await err.innerText(), /outside the allowed roots/);
    assert.equal(await rm.locator("#f-rm-checkpoint_path").getAttribute("aria-invalid"), "true");
    await rm.screenshot({ path: join(OUT, "issue13-item18-register-422.png") });
    // an uploaded checkpoint: the demo CNN's own weights, re-registered under another name
    const up = page.getByRole("form", { name: "Upload a checkpoint" });
    await up.getByLabel("Name").fill("e2e uploaded cnn");
    await up.getByLabel("Architecture").selectOption("fmnist-cnn");
    await up.getByLabel("Checkpoint file").setInputFiles(resolve(here, "../../backend/fvaudit/assets/fmnist_cnn.safetensors"));
    await up.getByRole("button", { name: "Upload and register" }).click();
    const upDone = up.getByRole("status");
    await upDone.waitFor({ timeout: 120_000 });
    assert.match(await upDone.innerText(), /Registered model #\d+ e2e uploaded cnn \(fmnist-cnn\)/);
    await up.screenshot({ path: join(OUT, "issue13-item18-upload.png") });
    // a folder under an allowed root (DATA_DIR/images is always one): two classes and one broken file
    const fs = page.getByRole("form", { name: "Register an image folder" });
    await fs.getByLabel("Name").fill("e2e outside");
    await fs.getByLabel("Folder on the server").fill("/etc");
    await fs.getByRole("button", { name: "Register folder" }).click();
    await fs.locator("#e-fs-source").getByText(/outside the allowed roots/).waitFor();
    const state_dir = process.env.FVAUDIT_STACK_LOGS;
    if (!state_dir) return; // a stack started elsewhere: its data dir is not known here
    const root = join(state_dir, "data", "images", "e2e-pets");
    const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==", "base64");
    for (const c of ["cat", "dog"]) {
      mkdirSync(join(root, c), { recursive: true });
      for (let i = 0; i < 3; i++) writeFileSync(join(root, c, `${i}.png`), png);
    }
    writeFileSync(join(root, "dog", "broken.png"), "not an image");
    await fs.getByLabel("Name").fill("e2e pets");
    await fs.getByLabel("Folder on the server").fill(root);
    await fs.getByRole("button", { name: "Register folder" }).click();
    const fsDone = fs.getByRole("status");
    await fsDone.waitFor({ timeout: JOB_TIMEOUT });
    assert.match(await fsDone.innerText(), /Registered image set #\d+ e2e pets: 6 images in 2 classes \(cat, dog\); 1 file skipped/);
    await fs.screenshot({ path: join(OUT, "issue13-item18-folder.png") });
    await page.screenshot({ path: join(OUT, "issue13-item18-register.png"), fullPage: true });
  });

  it("issue 13: a push-up audit for the push-up success table (queued now, read in item 12)", async () => {
    // the same model and image sets as the push-down run
    const run = await page.evaluate(async ([id, tok]) => (await fetch(`/api/v1/runs/${id}`, { headers: { Authorization: `Bearer ${tok}` } })).json(), [state.runId, TOKEN]);
    const spec = {
      name: "e2e push-up", model_id: run.model_id, train_set_id: run.train_set_id, val_set_id: run.val_set_id, visualize: false, control: false,
      attack: { kind: "push_up", layers: ["relu3"], decoy_class: 8, steps: 30, batch_size: 64, eval_every: 10, eval_size: 500 },
    };
    const r = await page.evaluate(async ([t, body]) => {
      const res = await fetch("/api/v1/jobs", { method: "POST", headers: { Authorization: `Bearer ${t}`, "Content-Type": "application/json" }, body: JSON.stringify(body) });
      return { status: res.status, body: await res.json() };
    }, [TOKEN, { kind: "audit", spec }]);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    state.pushupJob = r.body.id;
  });

  it("issue 13 item 10: training curves clipped above the early spike by default, with linear and log", async () => {
    await page.goto(`${BASE}/runs/${state.runId}`);
    const training = page.locator('section[aria-label="Training"]');
    await training.waitFor();
    const toggle = training.getByRole("group", { name: "Attack loss L_A: y scale" });
    await toggle.waitFor();
    for (const k of ["clipped", "linear", "log"]) await toggle.getByRole("button", { name: k }).waitFor();
    await training.scrollIntoViewIfNeeded();
    await training.screenshot({ path: join(OUT, "issue13-item10-curves.png") });
    await toggle.getByRole("button", { name: "log" }).click();
    assert.equal(await toggle.getByRole("button", { name: "log" }).getAttribute("aria-pressed"), "true");
    await training.locator('svg[aria-label^="Attack loss L_A: L_A (log scale"]').waitFor();
    await training.screenshot({ path: join(OUT, "issue13-item10-curves-log.png") });
  });

  it("issue 13 item 11: a dead unit's page is an empty state, no gallery", async (t) => {
    const run = await page.evaluate(async ([id, tok]) => (await fetch(`/api/v1/runs/${id}`, { headers: { Authorization: `Bearer ${tok}` } })).json(), [state.runId, TOKEN]);
    const dead = run.layer_info?.relu3?.dead ?? [];
    if (!dead.length) {
      t.skip("this run's relu3 has no dead unit");
      return;
    }
    await page.goto(`${BASE}/runs/${state.runId}/layers/relu3/units/${dead[0]}`);
    await page.getByText(`Unit ${dead[0]} is dead: it has no top-k.`).waitFor();
    assert.equal(await page.locator(".gallery .tile").count(), 0, "no gallery of score-0 images");
    await page.screenshot({ path: join(OUT, "issue13-item11-dead-unit.png"), fullPage: true });
  });

  it("issue 13 item 13: a layer or a unit the run does not have is a not-found page", async () => {
    await page.goto(`${BASE}/runs/${state.runId}/layers/relu2`);
    await page.getByRole("heading", { name: `Run ${state.runId} has no layer relu2` }).waitFor();
    assert.equal(await page.locator(".unit-table").count(), 0, "no other layer's units in its place");
    await assertTitle(page, /^Layer relu2 not found · Run \d+: e2e push-down · fvaudit$/);
    await page.screenshot({ path: join(OUT, "issue13-item13-layer-not-found.png") });
    await page.goto(`${BASE}/runs/${state.runId}/layers/relu3/units/500`);
    await page.getByRole("heading", { name: `Layer relu3 of run ${state.runId} has no unit 500` }).waitFor();
    await page.screenshot({ path: join(OUT, "issue13-item13-unit-not-found.png") });
  });

  it("issue 13 item 14: dropped images are framed, not faded", async () => {
    await page.goto(`${BASE}/runs/${state.runId}/layers/relu3/units/${state.unit}`);
    const val = page.locator('section.before-after[aria-label^="Validation set"]');
    await val.waitFor();
    await allThumbnailsLoaded(page, ".gallery img", 20);
    const dropped = val.locator(".gallery.before .tile.dropped img");
    assert.ok((await dropped.count()) > 0, `unit ${state.unit} dropped no validation image`);
    const style = await dropped.first().evaluate((el) => {
      const cs = getComputedStyle(el);
      return { opacity: cs.opacity, filter: cs.filter, border: cs.borderTopStyle };
    });
    assert.deepEqual(style, { opacity: "1", filter: "none", border: "dashed" });
    await val.scrollIntoViewIfNeeded();
    await val.screenshot({ path: join(OUT, "issue13-item14-dropped.png") });
  });

  it("issue 13 item 15: compare marks the units each run attacked", async () => {
    const control = Number(state.controlHref.match(/\/runs\/(\d+)$/)[1]);
    await page.goto(`${BASE}/compare?a=${control}&b=${state.runId}&layer=relu3&unit=${state.unit}`);
    const units = page.locator('section[aria-label="Units"]');
    await units.getByRole("heading", { name: /B attacked \d+/ }).waitFor();
    assert.ok((await units.locator("td.attacked-by .badge.tagB").count()) > 0, "units tagged B");
    const scatter = page.getByRole("img", { name: /CLIP-δ per unit: A vs B: scatter of \d+ units \(\d+ attacked by B/ });
    await scatter.waitFor();
    await page.screenshot({ path: join(OUT, "issue13-item15-compare.png"), fullPage: true });
  });

  it("issue 13 item 12: push-up success names its k and shows before → after", async () => {
    const deadline = Date.now() + JOB_TIMEOUT;
    let job;
    while (Date.now() < deadline) {
      job = await page.evaluate(async ([id, tok]) => (await fetch(`/api/v1/jobs/${id}`, { headers: { Authorization: `Bearer ${tok}` } })).json(), [state.pushupJob, TOKEN]);
      if (["succeeded", "failed", "cancelled"].includes(job.status)) break;
      await page.waitForTimeout(2000);
    }
    assert.equal(job.status, "succeeded", `push-up audit ${state.pushupJob}: ${job.status} ${job.error ?? ""}`);
    await page.goto(`${BASE}/runs/${job.run_id}`);
    const panel = page.locator('section[aria-label="Push-up success"]');
    await panel.waitFor();
    assert.match(await panel.getByRole("heading").innerText(), /Push-up success · decoy class 8 \(Bag\) on each attacked unit's top-5/);
    const cells = await panel.locator("tbody tr").first().locator("td").allInnerTexts();
    assert.match(cells[2], /^\d+ % → \d+ %$/, `before → after: ${cells.join(" | ")}`);
    await panel.scrollIntoViewIfNeeded();
    await panel.screenshot({ path: join(OUT, "issue13-item12-pushup.png") });
  });

  // ---------------------------------------------------------------- issue 19, item 6
  it("issue 19: index pages: runs filtered and paged, models (delete refused with the reason, or done), image sets, jobs", async () => {
    // the home page: the runs filtered by status (the cancelled push-up), in the address. Its run
    // follows its chain when the cancelled step stops: wait for that in the API first (a loaded
    // machine stops it later), and say what the run is if it never becomes "cancelled"
    let cancelledRun;
    for (let t0 = Date.now(); Date.now() - t0 < 120_000; await new Promise((r) => setTimeout(r, 1000))) {
      const r = await api(`/api/v1/runs?limit=5&q=${encodeURIComponent("e2e push-up to cancel")}`);
      cancelledRun = (r.body ?? [])[0];
      if (cancelledRun?.status === "cancelled") break;
    }
    assert.equal(cancelledRun?.status, "cancelled", `the cancelled push-up's run: ${JSON.stringify(cancelledRun)}`);
    await page.goto(`${BASE}/`);
    const runs = page.getByRole("region", { name: "Runs" });
    await runs.getByRole("combobox", { name: "Status" }).selectOption("cancelled");
    await page.waitForURL(/\?status=cancelled$/);
    // the unfiltered rows stay on screen (marked busy) until the filtered page arrives
    await runs.locator('.scroll-x[aria-busy="false"]').waitFor();
    await runs.getByRole("link", { name: /e2e push-up to cancel/ }).first().waitFor();
    const badges = await runs.locator("tbody .badge[class*=status-]").allInnerTexts();
    assert.ok(badges.length > 0 && badges.every((b) => b === "cancelled"), `status badges: ${badges.join(", ")}`);
    await page.screenshot({ path: join(OUT, "issue19-home-filtered.png"), fullPage: true });
    // models: the demo model has runs: its delete is refused with the server's reason, and hide is offered
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Models", exact: true }).click();
    await page.waitForURL(/\/models$/);
    const models = page.getByRole("region", { name: "Models" });
    await models.getByRole("button", { name: new RegExp(`^Delete model ${state.modelId} `) }).click();
    let dialog = page.getByRole("dialog");
    await dialog.getByRole("button", { name: `Delete model ${state.modelId}` }).click();
    await dialog.getByRole("alert").waitFor();
    assert.ok((await dialog.getByRole("alert").innerText()).length > 30, "the 409 says why");
    await dialog.getByRole("button", { name: `Hide model ${state.modelId} instead` }).waitFor();
    await page.screenshot({ path: join(OUT, "issue19-model-delete-refused.png") });
    await dialog.getByRole("button", { name: "Close", exact: true }).first().click();
    await dialog.waitFor({ state: "detached" });
    // the uploaded copy (item 18) has nothing derived from it: it is deleted after the confirmation
    const uploaded = models.getByRole("button", { name: /^Delete model \d+ \(e2e uploaded cnn\)$/ });
    await uploaded.click();
    dialog = page.getByRole("dialog");
    await dialog.getByRole("button", { name: /^Delete model \d+$/ }).click();
    await dialog.waitFor({ state: "detached" });
    await uploaded.waitFor({ state: "detached" });
    // image sets: status and size; jobs: filtered by kind and status, each linking to its page
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Image sets" }).click();
    await page.getByRole("heading", { level: 1, name: "Image sets" }).waitFor();
    await page.getByRole("region", { name: "Image sets" }).locator("tbody .badge.status-ready").first().waitFor();
    await page.screenshot({ path: join(OUT, "issue19-image-sets.png"), fullPage: true });
    await page.goto(`${BASE}/jobs?kind=audit&status=succeeded`);
    const jobs = page.getByRole("region", { name: "Jobs" });
    await jobs.getByRole("link", { name: new RegExp(`^job ${state.jobId}: e2e push-down$`) }).waitFor();
    assert.equal(await jobs.getByRole("link", { name: /e2e push-up to cancel/ }).count(), 0, "a cancelled job is filtered out");
    await page.screenshot({ path: join(OUT, "issue19-jobs.png"), fullPage: true });
  });

  it("logged no errors in the browser console", () => {
    assert.deepEqual(consoleErrors, []);
  });
});
