// End-to-end: a Gradient Slingshots audit (SPEC §8.1) launched from the form in Chromium against
// the real stack. The form: the "Gradient Slingshots" kind, relu3 and a few units, a target
// picked from the training set by class (Ankle boot) with its preview; a non-image upload is
// refused (422) next to the file field, a real PNG is accepted with its preview; tiny settings
// (6 steps, batch 32, 200 evaluation images, 2 seeds × 8 render steps, no control). The job runs
// on the worker; its run page shows the FV→target panel with the API's numbers and verdict and a
// strip per attacked unit; an attacked unit's page shows its target, FV before and after (each
// image decoded), its measures and the natural top-k galleries.
// Self-contained (it registers what it needs), tiny.
//
//   FVAUDIT_URL=http://127.0.0.1:PORT FVAUDIT_ADMIN_TOKEN=fva_... node --test e2e/slingshot.test.mjs
//
// Screenshots: $FVAUDIT_E2E_OUT/slingshot-form.png, slingshot-upload-422.png, slingshot-run.png,
// slingshot-unit.png (default <repo>/test-output/e2e).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { crc32, deflateSync } from "node:zlib";
import { chromium } from "playwright-core";

import { api, setupDemo, waitJob } from "./api.mjs";
import { ARGS, BASE, CHROMIUM, OUT, TOKEN, assertTitle } from "./env.mjs";

const LAYER = "relu3";
const UNITS = "0, 2, 4";
// unique per run: a stack reused across runs lists earlier runs of the same test
const NAME = `e2e slingshot ${Date.now().toString(36)}`;
const NAME_RE = NAME.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The page's number format (lib/format.ts num): 3 decimals, a typographic minus, "—" for none. */
const num = (v) => (v == null || Number.isNaN(v) ? "—" : v.toFixed(3).replace(/^-/, "−"));
const verdictText = (v) =>
  v === "agree" ? "exemplars and FV agree" : v === "disagree" ? "exemplars and FV disagree" : "unknown (no natural–synthetic agreement measured)";

/** Waits until every image the locator matches has decoded pixels (an image fetched with the token
 * is a "loading …" placeholder first; a lazy one loads when scrolled to). */
async function decoded(locator) {
  await locator.first().waitFor();
  const n = await locator.count();
  assert.ok(n > 0, "no image to check");
  for (let i = 0; i < n; i++) {
    const img = locator.nth(i).and(page.locator("img"));
    await img.waitFor();
    await img.scrollIntoViewIfNeeded();
    await img.evaluate((el) => el.decode());
    assert.ok((await img.evaluate((el) => el.naturalWidth)) > 0, `image ${await img.getAttribute("alt")} has no pixels`);
  }
}

/** A grey PNG of w×h pixels, a diagonal gradient with this run's own seed (its bytes are new to the store). */
function greyPng(w, h) {
  const seed = Date.now() % 251;
  const rows = [];
  for (let y = 0; y < h; y++) rows.push(Buffer.from([0, ...Array.from({ length: w }, (_, x) => (x * 7 + y * 5 + seed) % 256)]));
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 0, 0, 0, 0], 8); // 8-bit greyscale
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(Buffer.concat(rows))), chunk("IEND", Buffer.alloc(0))]);
}

let browser;
let page;
const state = {};
const consoleErrors = [];

describe("Gradient Slingshots against the real backend + worker", { timeout: 30 * 60_000 }, () => {
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await ctx.newPage();
    page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && !/404|401|409|422|Failed to load resource/.test(m.text())) consoleErrors.push(m.text());
    });
    state.ids = await setupDemo("e2e slingshot");
  });

  after(async () => {
    await browser?.close();
  });

  it("fills the form: the kind, relu3 and units, a target of the training set (Ankle boot) with its preview", async () => {
    const { model, train, val } = state.ids;
    await page.goto(`${BASE}/?token=${TOKEN}`);
    await page.getByRole("button", { name: /admin/ }).waitFor();
    await page.goto(`${BASE}/launch?model=${model}&layer=${LAYER}&kind=slingshot`);
    const form = page.getByRole("form", { name: "Launch" });
    await form.waitFor();
    await assertTitle(page, /^Launch an audit · fvaudit$/);
    const kind = form.getByRole("radio", { name: /Gradient Slingshots/ });
    await kind.waitFor();
    assert.ok(await kind.isChecked());
    await form.getByText("the unit's synthetic visualization converges to a target image").waitFor();
    await form.getByLabel("Run name", { exact: true }).fill(NAME);
    await form.getByLabel("Training set", { exact: true }).selectOption(String(train));
    await form.getByLabel("Validation set", { exact: true }).selectOption(String(val));
    const layer = form.getByRole("checkbox", { name: new RegExp(`— ${LAYER} ·|^${LAYER} ·`) });
    await layer.waitFor();
    assert.ok(await layer.isChecked());
    await form.getByRole("radio", { name: "several" }).check();
    await form.getByLabel("Unit indices").fill(UNITS);

    const target = form.getByRole("group", { name: "Target image" });
    await target.getByLabel("Image set").selectOption(String(train));
    await target.getByLabel("Browse class").selectOption({ label: "9: Ankle boot" });
    const first = target.getByRole("button", { name: /^image \d+, Ankle boot$/ }).first();
    await first.waitFor();
    const imageId = Number((await first.getAttribute("title")).match(/^image (\d+):/)[1]);
    await first.click();
    assert.equal(await target.getByLabel("Image id").inputValue(), String(imageId));
    const preview = target.getByTestId("target-preview");
    await preview.getByText(`image ${imageId} of e2e slingshot train · Ankle boot`).waitFor();
    await decoded(preview.getByRole("img", { name: `target: image ${imageId} of e2e slingshot train` }));
    state.imageId = imageId;

    await form.getByLabel("steps", { exact: true }).fill("6");
    await form.getByLabel("batch size", { exact: true }).fill("32");
    await form.getByLabel("seeds per unit").fill("2");
    await form.getByLabel("visualization steps").fill("8");
    await form.getByRole("checkbox", { name: /the α = 0 control/ }).uncheck();
    await form.getByText("Advanced: evaluation, accuracy budget, CLIP, Slingshots").click();
    await form.getByLabel("evaluate every").fill("3");
    await form.getByLabel("evaluation subset").fill("200");
    // the Slingshots settings sit in the advanced section, at the registry's defaults
    const sl = form.getByRole("group", { name: "Slingshots settings" });
    assert.equal(await sl.getByLabel("γ").inputValue(), "1000");
    assert.equal(await sl.getByLabel("loss normalisation").inputValue(), "cosine");
    await page.screenshot({ path: join(OUT, "slingshot-form.png"), fullPage: true });
  });

  it("uploads a target at once: a non-image is refused next to the file field, a PNG shows its preview", async () => {
    const form = page.getByRole("form", { name: "Launch" });
    const target = form.getByRole("group", { name: "Target image" });
    await target.getByRole("radio", { name: "upload a PNG or JPEG" }).check();
    const file = target.getByLabel("Target image file");
    await file.setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("these are notes, not pixels\n") });
    const err = page.locator("#e-target_file");
    await err.waitFor();
    assert.equal((await err.textContent()).trim(), "not an image: upload a PNG or JPEG");
    assert.equal(await file.getAttribute("aria-invalid"), "true");
    await page.screenshot({ path: join(OUT, "slingshot-upload-422.png"), fullPage: true });
    // a real PNG: stored, and its preview from the API
    await file.setInputFiles({ name: "boot.png", mimeType: "image/png", buffer: greyPng(32, 24) });
    const preview = target.getByTestId("target-preview");
    await preview.getByText(/^boot\.png · 32×24 PNG \(grey\) · \d+ KB$/).waitFor();
    await decoded(preview.getByRole("img", { name: "target: the uploaded boot.png" }));
    assert.equal(await err.count(), 0);
    // back to the image of the set: the audit aims at it
    await target.getByRole("radio", { name: "an image of a registered set" }).check();
    assert.equal(await target.getByLabel("Image id").inputValue(), String(state.imageId));
  });

  it("launches the audit the form describes and follows it to its run", async () => {
    const form = page.getByRole("form", { name: "Launch" });
    await form.getByRole("button", { name: "Launch gradient slingshots" }).click();
    await page.waitForURL(/\/jobs\/\d+$/);
    state.job = Number(new URL(page.url()).pathname.split("/").pop());
    const j = (await api(`/api/v1/jobs/${state.job}`)).body;
    assert.equal(j.kind, "audit");
    assert.equal(j.spec.name, NAME);
    assert.deepEqual(
      { kind: j.spec.attack.kind, layers: j.spec.attack.layers, units: j.spec.attack.units, steps: j.spec.attack.steps, batch_size: j.spec.attack.batch_size,
        eval_every: j.spec.attack.eval_every, eval_size: j.spec.attack.eval_size, control: j.spec.control, n_synth: j.spec.n_synth, synth_steps: j.spec.synth_steps },
      { kind: "slingshot", layers: [LAYER], units: [0, 2, 4], steps: 6, batch_size: 32, eval_every: 3, eval_size: 200, control: false, n_synth: 2, synth_steps: 8 },
    );
    assert.deepEqual(j.spec.attack.target_images.map((t) => [t.image_set_id, t.image_id]), [[state.ids.train, state.imageId]]);
    const job = await waitJob(state.job);
    assert.equal(job.status, "succeeded", `audit ${state.job}: ${job.status} ${job.error ?? ""}`);
    state.run = job.run_id;
    const open = page.getByRole("link", { name: /Open the results/ });
    await open.waitFor({ timeout: 60_000 });
    await open.click();
    await page.waitForURL(new RegExp(`/runs/${state.run}$`));
  });

  it("the run page shows the API's FV→target medians and verdict, and target, FV before, FV after per attacked unit", async () => {
    await page.getByRole("heading", { level: 1, name: new RegExp(NAME_RE) }).waitFor();
    const run = (await api(`/api/v1/runs/${state.run}`)).body;
    const agg = run.fv_target?.[LAYER];
    assert.ok(agg, `run ${state.run} has no fv_target for ${LAYER}: ${JSON.stringify(run.fv_target)}`);
    const attacked = [...run.layer_info[LAYER].attacked].sort((a, b) => a - b);
    assert.ok(attacked.length >= 1 && attacked.every((u) => [0, 2, 4].includes(u)), JSON.stringify(attacked));
    assert.equal(agg.units, attacked.length);
    const panel = page.getByRole("region", { name: "Feature visualization vs target" });
    await panel.waitFor();
    const text = async (id) => (await panel.getByTestId(id).first().textContent()).trim();
    await panel.getByTestId("fv-moved").first().waitFor();
    assert.equal(await text("fv-moved"), `${Math.round(agg.moved_share * 100)} % of ${agg.units} unit${agg.units === 1 ? "" : "s"}`);
    assert.equal(await text("fv-ssim"), `${num(agg.ssim_target_after)} (before ${num(agg.ssim_target_before)})`);
    assert.equal(await text("fv-cos"), `${num(agg.cos_target_after)} (before ${num(agg.cos_target_before)})`);
    assert.equal(await text("fv-auroc"), `${num(agg.auroc_before)} → ${num(agg.auroc_after)}`);
    assert.equal(await text("fv-agreement"), `${num(agg.agreement_before)} → ${num(agg.agreement_after)}`);
    assert.equal(await text("fv-verdict"), verdictText(agg.cross_check));
    const rows = panel.getByTestId("target-unit");
    await rows.nth(attacked.length - 1).waitFor();
    assert.equal(await rows.count(), attacked.length);
    for (let i = 0; i < attacked.length; i++) {
      const u = attacked[i];
      const row = rows.nth(i);
      assert.equal((await row.getByRole("link").first().textContent()).trim(), `unit ${u}`);
      const strip = row.getByRole("group", { name: `Unit ${u}: target, FV before, FV after` });
      await decoded(strip.getByRole("img"));
      assert.equal(await strip.getByRole("img").count(), 3);
      const d = (await api(`/api/v1/runs/${state.run}/layers/${LAYER}/units/${u}`)).body;
      await row.getByText(`SSIM to target ${num(d.fv_target.measures.ssim_target_after)} (before ${num(d.fv_target.measures.ssim_target_before)})`).waitFor();
    }
    await panel.scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(OUT, "slingshot-run.png"), fullPage: true });
    state.unit = attacked[0];
  });

  it("an attacked unit's page: its target, FV before and after decoded, its measures and verdict, the natural galleries", async () => {
    const u = state.unit;
    const panel = page.getByRole("region", { name: "Feature visualization vs target" });
    await panel.getByTestId("target-unit").first().getByRole("link", { name: `unit ${u}` }).click();
    await page.waitForURL(new RegExp(`/runs/${state.run}/layers/${LAYER}/units/${u}$`));
    await page.getByRole("heading", { level: 1, name: new RegExp(`^Unit ${u}`) }).waitFor();
    const d = (await api(`/api/v1/runs/${state.run}/layers/${LAYER}/units/${u}`)).body;
    assert.ok(d.fv_target, JSON.stringify(d));
    const unitPanel = page.getByRole("region", { name: "Feature visualization vs target" });
    await unitPanel.waitFor();
    const strips = unitPanel.getByRole("group", { name: `Unit ${u}: target, FV before, FV after` });
    await strips.nth(d.synthetic.before.length - 1).waitFor();
    assert.equal(await strips.count(), d.synthetic.before.length);
    await decoded(unitPanel.getByRole("img", { name: `target image of unit ${u} (${LAYER})` }));
    await decoded(unitPanel.getByRole("img", { name: new RegExp(`^FV of unit ${u} \\(${LAYER}\\), seed \\d+, before the attack`) }));
    await decoded(unitPanel.getByRole("img", { name: new RegExp(`^FV of unit ${u} \\(${LAYER}\\), seed \\d+, after the attack`) }));
    const m = d.fv_target.measures;
    const text = async (id) => (await unitPanel.getByTestId(id).textContent()).trim();
    assert.equal(await text("fv-moved"), d.fv_target.moved == null ? "—" : d.fv_target.moved ? "yes" : "no");
    assert.equal(await text("fv-ssim"), `${num(m.ssim_target_after)} (before ${num(m.ssim_target_before)})`);
    assert.equal(await text("fv-auroc"), `${num(m.auroc_before)} → ${num(m.auroc_after)}`);
    assert.equal(await text("fv-verdict"), verdictText(d.fv_target.cross_check));
    // the natural top-k before/after of both sets, beside the synthetic panel
    for (const title of ["Training set: top-k", "Validation set: top-k (the set the metrics use)"]) {
      const g = page.getByRole("region", { name: title });
      await g.waitFor();
      const tiles = g.getByTestId("tile");
      await tiles.first().waitFor();
      assert.equal(await tiles.count(), d.topk[title.startsWith("Training") ? "train" : "val"].before.length + d.topk[title.startsWith("Training") ? "train" : "val"].after.length);
      await decoded(g.getByRole("img").first());
    }
    await page.getByRole("region", { name: "Synthetic visualizations" }).waitFor();
    await page.screenshot({ path: join(OUT, "slingshot-unit.png"), fullPage: true });
    assert.deepEqual(consoleErrors, []);
  });
});
