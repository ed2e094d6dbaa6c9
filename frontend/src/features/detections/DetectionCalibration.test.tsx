// Issue 24 on the detection pages (the detector tells manipulation from honest fine-tuning):
// each reference-regime layer's calibration (its clean family, recipes and reach, this model's
// change, the count tests against the family's), the envelope plot, the localised units, the
// "out of calibration" verdict with what to do about it, each clean model's recipe, the unit's
// localisation; and results from before issue 24 still render, without any of it.
// fixtures/detection-calibrated.json is a real engine result (a partial push-down of
// fmnist-cnn against 5 clean fine-tunes of 4 recipes) with the first units of each layer.
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch } from "../../test/fetchMock";
import population from "../../test/fixtures/detection-population.json";
import reference from "../../test/fixtures/detection-reference.json";
import unitFixture from "../../test/fixtures/detection-unit.json";
import { renderRoutes } from "../../test/renderRoutes";
import { defaultMeasure, sizeText } from "./DetectionCalibration";
import { DetectionPage } from "./DetectionPage";
import { DetectionUnitPage } from "./DetectionUnit";
import calibrated from "./fixtures/detection-calibrated.json";

const renderAt = (path: string) =>
  renderRoutes(path, {
    "/detections/:detection": <DetectionPage />,
    "/detections/:detection/layers/:layer/units/:unit": <DetectionUnitPage />,
  });

const relu3 = calibrated.result.layers.relu3;
const cal = relu3.calibration;

/** The fixture with relu3 moved beyond the family's reach: both layers and the model "out of calibration". */
function outOfCalibration() {
  const r = structuredClone(calibrated);
  const L = r.result.layers;
  L.relu3.calibration.size = 0.52;
  L.relu3.calibration.out_of_calibration = true;
  L.relu3.layer_values.change_size = 0.52;
  L.relu3.verdict = "out of calibration";
  L.relu2.calibration.size = 0.31;
  L.relu2.calibration.out_of_calibration = true;
  L.relu2.verdict = "out of calibration";
  // every layer beyond the reach: the model verdict has no p-value (engine model_verdict)
  return {
    ...r, verdict: "out of calibration", p_value: null,
    result: { ...r.result, verdict: "out of calibration", p_value: null, model: { ...r.result.model, verdict: "out of calibration", p_value: null } },
  };
}

describe("a detection calibrated on a clean family (issue 24)", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("shows each layer's calibration: its clean models and recipes, the changes it covers, this model's and the count tests", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/44$/, body: calibrated }]);
    renderAt("/detections/44");
    const card = await screen.findByRole("region", { name: "Layer relu3" });
    const block = within(card).getByRole("group", { name: "Calibration of relu3" });
    expect(within(block).getByTestId("calibration-family")).toHaveTextContent(
      "Calibrated with 5 clean models from 4 recipes: distill-adam-1e-3, distill-adam-3e-3, distill-adam-3e-4, labels-adam-1e-3");
    expect(within(block).getByTestId("calibration-reach")).toHaveTextContent(
      "Covers model changes up to relative weight distance 0.3905 (from 0.0153) · this model: 0.1248 (within the calibration)");
    expect(within(block).queryByTestId("out-of-calibration-layer")).toBeNull();
    // the count tests: 0.05 · 113 flagged and 0.01 · 113 localised by clean models of the family
    expect(within(block).getByTestId("count-flagged")).toHaveTextContent(
      "24 of 113 units flagged (suspicion above 0.95); clean models of the family flag about 5.7 (spread ρ = 0.00, 4 clean models left out in turn) · p = 1.7e−9");
    expect(within(block).getByTestId("count-localised")).toHaveTextContent(
      "4 of 113 units localised (localisation above 0.99); clean models of the family localise about 1.1 (spread ρ = 0.00, 4 clean models left out in turn) · p = 0.027");
    // the clean models one by one, with what each flags against an envelope fitted without it
    const benign = within(block).getByRole("table", { name: "Clean models of the calibration" });
    const rows = within(benign).getAllByRole("row").slice(1).map((r) => within(r).getAllByRole("cell").map((c) => c.textContent));
    expect(rows[0]).toEqual(["clean distill-adam-3e-4 s101", "distill-adam-3e-4", "0.01763", "3 of 113", "0 of 113"]);
    expect(rows[4]).toEqual(["clean distill-adam-3e-3 s1", "distill-adam-3e-3", "0.2407", "—", "—"]); // beyond the others' reach: left out
    // the layer evidence: the localised units' count test, its count an integer
    expect(within(card).getByText(/localised units, against the clean family's count/).closest("li")).toHaveTextContent(
      "localised units, against the clean family's count (4): suspicion 0.973");
  });

  it("draws the envelope plot: the band, each clean model with its whisker, this model's units and median, the reach", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/44$/, body: calibrated }]);
    const user = userEvent.setup();
    renderAt("/detections/44");
    const card = await screen.findByRole("region", { name: "Layer relu3" });
    const plot = within(card).getByRole("img", { name: /^CLIP-δ against the model change in relu3/ });
    expect(plot.getAttribute("aria-label")).toBe(
      "CLIP-δ against the model change in relu3: 5 clean models of the calibration from 0.0153 to 0.3905; this model at 0.1248, its median unit 0.090 against 0.038 expected (95th percentile 0.275); 1 of 2 units flagged");
    expect(plot.querySelector("path.band")).not.toBeNull();
    expect(plot.querySelector("path.expected")).not.toBeNull();
    expect(plot.querySelector("path.upper95")).not.toBeNull();
    // one point per clean model, its title naming it and its recipe, a whisker up to its 95th percentile
    const points = within(plot).getAllByTestId("benign-point");
    expect(points).toHaveLength(cal.benign.length);
    expect(points[0].querySelector("title")!.textContent).toBe(
      "clean distill-adam-3e-4 s101 · recipe distill-adam-3e-4: model change 0.01763, median unit 0.000, 95th percentile 0.047");
    expect(points[0].querySelectorAll("line.whisker")).toHaveLength(2);
    // this model's units at its own size (the dead unit left out), the flagged one in red, and their median
    const live = calibrated.units.relu3.filter((u) => !u.dead && u.measures.clip_delta.value != null);
    const dots = within(plot).getAllByTestId("suspect-unit");
    expect(dots).toHaveLength(live.length);
    expect(dots.map((d) => d.classList.contains("flagged"))).toEqual(live.map((u) => u.suspicion! > 0.95));
    expect(dots[0].querySelector("title")!.textContent).toBe("unit 0: CLIP-δ 0.622 · suspicion 0.982 (flagged) · localisation 0.957");
    expect(within(plot).getByTestId("suspect-median")).toBeInTheDocument();
    // the reach marker, right of this model (it is within the calibration)
    const reach = within(plot).getByTestId("reach-marker");
    expect(reach).toHaveTextContent("reach 0.3905");
    const xReach = Number(reach.querySelector("line")!.getAttribute("x1"));
    const xSuspect = Number(within(plot).getByTestId("suspect").querySelector("line")!.getAttribute("x1"));
    expect(xSuspect).toBeLessThan(xReach);
    // log x: the clean models' order along the axis is the order of their sizes
    const xs = cal.benign.map((b, i) => [b.size, Number(points[i].querySelector("circle")!.getAttribute("cx"))]).sort((p, q) => p[0] - q[0]).map((p) => p[1]);
    expect(xs).toEqual([...xs].sort((p, q) => p - q));
    expect(within(card).getByTestId("envelope")).toHaveTextContent(
      "Each clean model: median unit (dot) and 95th percentile (whisker); line: what the family moves at that size");

    // another measure: the envelope and points follow
    await user.click(within(card).getByRole("button", { name: "1 − Kendall-τ" }));
    expect(within(card).getByRole("button", { name: "1 − Kendall-τ" })).toHaveAttribute("aria-pressed", "true");
    const tau = within(card).getByRole("img", { name: /^1 − Kendall-τ against the model change in relu3/ });
    expect(within(tau).getAllByTestId("benign-point")[4].querySelector("title")!.textContent).toContain("median unit 0.251, 95th percentile 0.813");
    // a click on a unit's dot opens the unit
    await user.click(within(tau).getAllByTestId("suspect-unit")[0]);
    expect(screen.getByTestId("where").textContent).toBe("/detections/44/layers/relu3/units/0");
  });

  it("says what share of the layer's units an interpreter would now label differently (issue 22)", async () => {
    const r = structuredClone(calibrated);
    const lv = r.result.layers.relu3.layer_values as Record<string, number>;
    Object.assign(lv, { label_flip_rate: 0.32, label_flip_to: 8, label_flip_to_share: 0.5 });
    mockFetch([{ path: /^\/api\/v1\/detections\/44$/, body: r }]);
    renderAt("/detections/44");
    const card = await screen.findByRole("region", { name: "Layer relu3" });
    expect(within(card).getByTestId("relabelled")).toHaveTextContent(
      `relabelled: 32% of the live units (50% of those now ${r.result.classes[8]})`);
    // a result without the flip rate (before issue 22) says nothing
    const relu2 = await screen.findByRole("region", { name: "Layer relu2" });
    expect(within(relu2).queryByTestId("relabelled")).toBeNull();
  });

  it("lists the localised units, each linking to its page, and says none when there are none", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/44$/, body: calibrated }]);
    renderAt("/detections/44");
    const card = await screen.findByRole("region", { name: "Layer relu3" });
    const loc = within(card).getByRole("group", { name: "Localised units of relu3" });
    const items = within(loc).getAllByTestId("localised-unit");
    expect(items.map((li) => within(li).getByRole("link").getAttribute("href"))).toEqual(
      relu3.localised_units.map((u) => `/detections/44/layers/relu3/units/${u.unit}`));
    expect(items[2]).toHaveTextContent("unit 126: localisation 0.992 · driven by CLIP-δ · suspicion 0.992");
    expect(items[0]).toHaveTextContent("driven by 1 − Kendall-τ");
    const relu2 = screen.getByRole("region", { name: "Layer relu2" });
    expect(within(within(relu2).getByRole("group", { name: "Localised units of relu2" })).getByTestId("no-localised")).toHaveTextContent(/^none/);
  });

  it("adds a localisation column to the units table and each clean model's recipe to the models", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/44$/, body: calibrated }]);
    renderAt("/detections/44");
    const card = await screen.findByRole("region", { name: "Layer relu3" });
    const table = within(card).getByRole("table", { name: "Units of relu3 by suspicion" });
    expect(within(table).getAllByRole("columnheader").map((h) => h.textContent).slice(0, 5)).toEqual(["rank", "unit", "suspicion", "localisation", "driver"]);
    const rows = within(table).getAllByTestId("unit-row");
    expect(within(rows[0]).getAllByRole("cell")[3].textContent).toBe("0.957");
    expect(within(rows[2]).getAllByRole("cell")[3].textContent).toBe("—"); // the dead unit
    const verdict = screen.getByRole("region", { name: "Model verdict" });
    expect(within(verdict).getByText("population 1").nextSibling).toHaveTextContent("clean distill-adam-3e-4 s101 · recipe distill-adam-3e-4 · attack job 60");
    expect(within(verdict).getByText("population 4").nextSibling).toHaveTextContent("recipe labels-adam-1e-3");
    expect(within(verdict).getByText("suspect").nextSibling).not.toHaveTextContent("recipe");
    expect(within(verdict).queryByTestId("out-of-calibration")).toBeNull();
  });

  it("'out of calibration': its own badge, what it means and what to do, the evidence still shown, no claim", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/44$/, body: outOfCalibration() }]);
    renderAt("/detections/44");
    const verdict = await screen.findByRole("region", { name: "Model verdict" });
    const badge = within(verdict).getAllByTestId("verdict")[0];
    expect(badge).toHaveTextContent(/^out of calibration$/);
    expect(badge).toHaveClass("verdict-out-of-calibration", "big");
    expect(badge).not.toHaveClass("verdict-manipulated");
    expect(badge.getAttribute("title")).toMatch(/^out of calibration: the model moved further/);
    expect(verdict).toHaveClass("verdict-out-of-calibration");
    expect(within(verdict).getByTestId("out-of-calibration")).toHaveTextContent(
      "Out of calibration: this model moved further than any clean model of the calibration: add clean fine-tunes of that size to judge it (layers relu2, relu3). Its evidence is shown below; no claim is made from it.");
    // not "inconclusive": no warning banner, and the flag counts are still shown
    expect(screen.queryByTestId("detection-warnings")).toBeNull();
    expect(within(verdict).getByTestId("evidence")).toHaveTextContent("52 of 175 units flagged");
    expect(verdict).toHaveTextContent("no p-value (no layer could be judged: each moved beyond the calibration)");

    const card = screen.getByRole("region", { name: "Layer relu3" });
    expect(within(card).getAllByTestId("verdict")[0]).toHaveTextContent("out of calibration · p = 3.3e−9");
    expect(within(card).getAllByTestId("verdict")[0]).toHaveClass("verdict-out-of-calibration");
    const note = within(card).getByTestId("out-of-calibration-layer");
    expect(note).toHaveTextContent(
      "Out of calibration: this model moved further than any clean model of the calibration: add clean fine-tunes of that size to judge it (0.52 against at most 0.3905).");
    expect(within(card).getByTestId("calibration-reach")).not.toHaveTextContent("within the calibration");
    // the evidence is still shown: flagged units, and this model right of the reach on the plot
    expect(within(card).getAllByTestId("unit-row")[0]).toHaveClass("flagged");
    const plot = within(card).getByRole("img", { name: /CLIP-δ against the model change in relu3/ });
    expect(plot.getAttribute("aria-label")).toContain("this model at 0.52, out of calibration");
    const xReach = Number(within(plot).getByTestId("reach-marker").querySelector("line")!.getAttribute("x1"));
    const xSuspect = Number(within(plot).getByTestId("suspect").querySelector("line")!.getAttribute("x1"));
    expect(xSuspect).toBeGreaterThan(xReach);
  });

  it("a result from before issue 24 renders as it did: no calibration, plot, localised units, localisation or recipe", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/41$/, body: reference }]);
    renderAt("/detections/41");
    const card = await screen.findByRole("region", { name: "Layer relu3" });
    expect(within(card).getAllByTestId("verdict")[0]).toHaveTextContent("manipulated · p = 2.3e−5");
    expect(within(card).getAllByTestId("unit-row")).toHaveLength(reference.units.relu3.length);
    expect(screen.queryByTestId("calibration")).toBeNull();
    expect(screen.queryByTestId("envelope")).toBeNull();
    expect(screen.queryByRole("group", { name: /Localised units/ })).toBeNull();
    expect(screen.queryAllByRole("columnheader", { name: "localisation" })).toHaveLength(0);
    expect(screen.queryByTestId("recipe")).toBeNull();
    expect(screen.queryByTestId("out-of-calibration")).toBeNull();
    expect(within(card).getByRole("list")).toHaveTextContent("weight distance of the whole layer (0.0413): suspicion 0.970");
  });

  it("the population regime (no calibration, no localised unit, no localisation) shows none of it", async () => {
    const pop = structuredClone(population);
    const relu3Pop = { ...pop.result.layers.relu3, calibration: null, localised_units: [] };
    const body = {
      ...pop, result: { ...pop.result, layers: { relu3: relu3Pop } },
      units: { relu3: pop.units.relu3.map((u) => ({ ...u, localisation: null })) },
    };
    mockFetch([{ path: /^\/api\/v1\/detections\/42$/, body }]);
    renderAt("/detections/42");
    const card = await screen.findByRole("region", { name: "Layer relu3" });
    expect(within(card).getByRole("img", { name: /Class shares of relu3/ })).toBeInTheDocument();
    expect(screen.queryByTestId("calibration")).toBeNull();
    expect(screen.queryByRole("group", { name: /Localised units/ })).toBeNull();
    expect(screen.queryAllByRole("columnheader", { name: "localisation" })).toHaveLength(0);
  });

  it("the unit page shows the unit's localisation next to its suspicion, and marks a localised unit", async () => {
    const row = calibrated.units.relu3[0];
    const unit = (u: number, localisation: number | null) => ({
      ...unitFixture, ...row, unit: u, localisation, detection_id: 44, detection_name: calibrated.name, layer: "relu3", n_units: 128,
      layer_verdict: relu3, models: calibrated.result.models, prev_unit: null, next_unit: null, prev_ranked: null, next_ranked: null,
    });
    mockFetch([
      { path: /^\/api\/v1\/detections\/44$/, body: calibrated },
      { path: /^\/api\/v1\/detections\/44\/layers\/relu3\/units\/0$/, body: unit(0, row.localisation) },
      { path: /^\/api\/v1\/detections\/44\/layers\/relu3\/units\/126$/, body: unit(126, 0.9920731311822165) },
      { path: /^\/api\/v1\/detections\/41$/, body: reference },
      { path: /^\/api\/v1\/detections\/41\/layers\/relu3\/units\/9$/, body: unitFixture },
    ]);
    const first = renderAt("/detections/44/layers/relu3/units/0");
    const ev = await screen.findByRole("region", { name: "Evidence" });
    expect(within(ev).getByTestId("localisation")).toHaveTextContent("localisation0.957");
    await screen.findByTestId("rank");
    expect(screen.queryByTestId("localised")).toBeNull();
    first.unmount();

    const second = renderAt("/detections/44/layers/relu3/units/126");
    expect(await screen.findByTestId("localised")).toHaveTextContent("localised");
    expect(within(screen.getByRole("region", { name: "Evidence" })).getByTestId("localisation")).toHaveTextContent("0.992");
    second.unmount();

    // an older unit: no localisation
    renderAt("/detections/41/layers/relu3/units/9");
    await screen.findByRole("region", { name: "Evidence" });
    expect(screen.queryByTestId("localisation")).toBeNull();
  });

  it("writes model changes with 4 significant digits and opens the plot on CLIP-δ when it has one", () => {
    expect([sizeText(0.1248307949692057), sizeText(0.015300657828065882), sizeText(0.52), sizeText(null)]).toEqual(["0.1248", "0.0153", "0.52", "—"]);
    expect(defaultMeasure(["tau_drop", "clip_delta"])).toBe("clip_delta");
    expect(defaultMeasure(["tau_drop", "overlap_loss"])).toBe("tau_drop");
    expect(defaultMeasure([])).toBeUndefined();
  });
});
