// A detection's page: the model verdict with its p-value and evidence, one card per layer
// with its units ranked by suspicion (each row a link to the unit), the population regime's
// class shares with the over-represented class, live progress while it runs (then the
// verdicts without a reload), the failure, and a detection that does not exist.
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch } from "../../test/fetchMock";
import population from "../../test/fixtures/detection-population.json";
import reference from "../../test/fixtures/detection-reference.json";
import { renderRoutes } from "../../test/renderRoutes";
import { DetectionPage } from "./DetectionPage";
import { flaggedText, pText, pValue } from "./DetectionShared";

const renderAt = (path: string) =>
  renderRoutes(path, {
    "/detections/:detection": <DetectionPage />,
    "/detections/:detection/layers/:layer/units/:unit": <p>unit page</p>,
  });

describe("detection page", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("shows the model verdict with its p-value and the evidence that drove it, titled by the detection", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/41$/, body: reference }]);
    renderAt("/detections/41");
    const verdict = await screen.findByRole("region", { name: "Model verdict" });
    expect(screen.getByRole("heading", { level: 1 })).toHaveTextContent("check the push-down");
    expect(document.title).toBe("Detection check the push-down · fvaudit");
    expect(within(verdict).getAllByTestId("verdict")[0]).toHaveTextContent(/^manipulated$/);
    expect(within(verdict).getAllByTestId("verdict")[0]).toHaveClass("verdict-manipulated", "big");
    expect(verdict).toHaveTextContent("p = 4.6e−5");
    expect(within(verdict).getByTestId("evidence")).toHaveTextContent("3 of 17 units flagged");
    expect(within(verdict).getByRole("list", { name: "Layer evidence" })).toHaveTextContent("relu3: weight distance of the whole layer: suspicion 0.970");
    // who took part, each linking to its model (and the attack job whose weights it is)
    expect(within(verdict).getByText("suspect").nextSibling).toHaveTextContent("fmnist-cnn (demo) · attack 31 (final) · attack job 31");
    expect(within(verdict).getByRole("link", { name: "attack job 32" }).getAttribute("href")).toBe("/jobs/32");
  });

  it("gives each layer a card with its verdict, and its units ranked by suspicion, every row linking to the unit", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/41$/, body: reference }]);
    const user = userEvent.setup();
    renderAt("/detections/41");
    const cards = await screen.findAllByRole("region", { name: /^Layer / });
    expect(cards.map((c) => c.getAttribute("aria-label"))).toEqual(["Layer relu3", "Layer relu2"]);
    expect(within(cards[0]).getAllByTestId("verdict")[0]).toHaveTextContent("manipulated · p = 2.3e−5");
    expect(within(cards[1]).getAllByTestId("verdict")[0]).toHaveTextContent("no sign · p = 0.41");
    expect(cards[0]).toHaveTextContent("3 of 11 units flagged, 0.6 expected by chance");
    expect(cards[0]).toHaveTextContent("1 dead units, not ranked");

    const rows = within(cards[0]).getAllByTestId("unit-row");
    const ranked = reference.units.relu3;
    expect(rows.map((r) => within(r).getAllByRole("cell")[0].textContent)).toEqual([...Array.from({ length: 11 }, (_, i) => String(i + 1)), "—"]);
    expect(rows.map((r) => within(r).getByRole("link").getAttribute("href"))).toEqual(ranked.map((u) => `/detections/41/layers/relu3/units/${u.unit}`));
    // suspicion only falls down the table; the flagged units (above 0.95) come first
    const s = ranked.filter((u) => u.suspicion != null).map((u) => u.suspicion!);
    expect(s).toEqual([...s].sort((a, b) => b - a));
    expect(rows.map((r) => r.classList.contains("flagged"))).toEqual(ranked.map((_, i) => i < 3));
    expect(within(rows[11]).getByText("dead")).toBeInTheDocument();
    // the top row: suspicion, driver, and every measure's value · suspicion
    const top = ranked[0];
    const cells = within(rows[0]).getAllByRole("cell").map((c) => c.textContent);
    expect(cells[2]).toBe(top.suspicion!.toFixed(3));
    expect(cells[3]).toBe({ clip_delta: "CLIP-δ", tau_drop: "1 − Kendall-τ", overlap_loss: "1 − top-k overlap", weight_distance: "weight distance" }[top.driver!]);
    expect(cells.slice(4)).toEqual(["clip_delta", "tau_drop", "overlap_loss", "weight_distance"].map(
      (k) => `${top.measures[k as "clip_delta"].value!.toFixed(3)} · ${top.measures[k as "clip_delta"].suspicion!.toFixed(2)}`));
    // a click anywhere on a row opens the unit
    await user.click(within(rows[1]).getAllByRole("cell")[2]);
    expect(screen.getByTestId("where").textContent).toBe(`/detections/41/layers/relu3/units/${ranked[1].unit}`);
  });

  it("population regime: suspect against population-mean class shares, the over-represented class marked", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/42$/, body: population }]);
    renderAt("/detections/42");
    const card = await screen.findByRole("region", { name: "Layer relu3" });
    const chart = within(card).getByRole("img", { name: /Class shares of relu3/ });
    expect(chart.getAttribute("aria-label")).toContain("Bag over-represented");
    expect(chart.querySelectorAll("rect.b-suspect")).toHaveLength(10);
    expect(chart.querySelectorAll("rect.b-population")).toHaveLength(10);
    const flagged = within(card).getByTestId("flagged-class");
    expect(flagged.querySelector("title")!.textContent).toBe("Bag: suspect 30.0 %, population 5.0 %, z = 4.20");
    expect(flagged).toHaveTextContent("▲ over-represented");
    expect(screen.getByRole("region", { name: "Model verdict" })).toHaveTextContent("Over-represented class: Bag");
    expect(within(card).getAllByTestId("unit-row").map((r) => within(r).getByRole("link").textContent)).toEqual(
      population.units.relu3.map((u) => `unit ${u.unit}`));
  });

  it("follows a running detection live, then shows its verdicts without a reload", async () => {
    let n = 0;
    const running = { ...reference, status: "running", verdict: null, p_value: null, result: null, units: {}, finished_at: null,
      progress: { stage: "scan suspect (1/3)", done: 512, total: 1000 } };
    mockFetch([{ path: /^\/api\/v1\/detections\/41$/, body: () => (n++ === 0 ? running : reference) }]);
    renderAt("/detections/41");
    const bar = await screen.findByRole("progressbar", { name: "Detection progress" });
    expect(bar).toHaveAttribute("aria-valuenow", "512");
    expect(screen.getByRole("region", { name: "Progress" })).toHaveTextContent("scan suspect (1/3) 512/1,000");
    expect(screen.queryByRole("region", { name: "Model verdict" })).toBeNull();
    expect(await screen.findByRole("region", { name: "Model verdict" })).toBeInTheDocument();
    expect(screen.queryByRole("progressbar")).toBeNull();
  });

  it("shows a failed detection's error, and a detection that does not exist", async () => {
    mockFetch([
      { path: /^\/api\/v1\/detections\/40$/, body: { ...population, id: 40, status: "failed", result: null, units: {}, error: "layer relu3: the models have different unit counts [64, 128]" } },
      { path: /^\/api\/v1\/detections\/99$/, status: 404, body: { detail: "no job 99" } },
    ]);
    const { unmount } = renderAt("/detections/40");
    expect(await screen.findByRole("alert")).toHaveTextContent("The detection failed");
    expect(screen.getByRole("alert")).toHaveTextContent("the models have different unit counts [64, 128]");
    expect(screen.getByRole("link", { name: "job's page" }).getAttribute("href")).toBe("/jobs/40");
    unmount();
    renderAt("/detections/99");
    const nf = await screen.findByTestId("not-found");
    expect(nf).toHaveTextContent("There is no detection 99");
    expect(nf).toHaveTextContent("no job 99");
    await waitFor(() => expect(document.title).toBe("No detection 99 · fvaudit"));
  });

  it("writes p-values and flag counts the way people read them", () => {
    expect([pValue(0.41), pValue(0.05), pValue(0.012), pValue(2.3e-5), pValue(1)]).toEqual(["0.41", "0.05", "0.012", "2.3e−5", "1"]);
    // a combined p-value of 0 is an underflow, not a certainty
    expect([pText(0), pText(1.7e-77), pText(0.2)]).toEqual(["p < 1e−15", "p = 1.7e−77", "p = 0.2"]);
    expect(flaggedText({ n_flagged: 16, n_units: 128, expected_flagged: 6.4 })).toBe("16 of 128 units flagged, 6.4 expected by chance");
  });
});

// issue 19, item 9: with one clean model every unit got the same suspicion and p < 1e-15; the
// detection now says it cannot conclude, and the page shows why instead of a p-value
describe("an inconclusive detection", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));
  const WARNING =
    "inconclusive: 1 clean model in the population; this check needs at least 3 clean models of the family to tell a manipulation from the ordinary difference between two clean models";
  const noClaims = { verdict: "inconclusive", p_value: null, n_flagged: null, expected_flagged: null, p_units: null };
  const inconclusive = {
    ...population,
    verdict: "inconclusive",
    p_value: null,
    warnings: [WARNING],
    result: {
      ...population.result, verdict: "inconclusive", p_value: null, warnings: [WARNING],
      model: { ...population.result.model, ...noClaims },
      layers: { relu3: { ...population.result.layers.relu3, ...noClaims } },
    },
  };

  it("shows the warning above the verdict, no p-value and no flagged unit", async () => {
    mockFetch([{ path: /^\/api\/v1\/detections\/42$/, body: inconclusive }]);
    renderAt("/detections/42");
    const warn = await screen.findByTestId("detection-warnings");
    expect(warn).toHaveTextContent("Inconclusive: this detection cannot give a verdict.");
    expect(within(warn).getAllByRole("listitem").map((li) => li.textContent)).toEqual([WARNING]); // the detail's and the result's, once
    const verdict = screen.getByRole("region", { name: "Model verdict" });
    expect(within(verdict).getAllByTestId("verdict")[0]).toHaveTextContent(/^inconclusive$/);
    expect(verdict).toHaveTextContent("no p-value (the population is too small to calibrate one)");
    expect(within(verdict).getByTestId("evidence")).toHaveTextContent("8 units ranked, none flagged (too few clean models to calibrate a flag)");
    expect(verdict).not.toHaveTextContent(/p </);
    const card = screen.getByRole("region", { name: "Layer relu3" });
    expect(within(card).getAllByTestId("unit-row").filter((r) => r.classList.contains("flagged"))).toHaveLength(0);
    expect(card).toHaveTextContent("No unit is flagged: with too few clean models the suspicions only rank the units.");
  });

  it("a verdict the page does not know is shown as it is, and warnings on a conclusive verdict are shown too", async () => {
    const odd = {
      ...population, verdict: "needs review", warnings: ["the image set has 3 images of class 8"],
      result: { ...population.result, model: { ...population.result.model, verdict: "needs review" } },
    };
    mockFetch([{ path: /^\/api\/v1\/detections\/42$/, body: odd }]);
    renderAt("/detections/42");
    const warn = await screen.findByTestId("detection-warnings");
    expect(warn).toHaveTextContent("Before trusting this verdict:the image set has 3 images of class 8");
    const badge = within(screen.getByRole("region", { name: "Model verdict" })).getAllByTestId("verdict")[0];
    expect(badge).toHaveTextContent(/^needs review$/);
    expect(badge).toHaveClass("verdict-needs-review");
    expect(badge).toHaveAttribute("title", "verdict “needs review”");
  });

  it("pText and flaggedText without a p-value or counts", () => {
    expect(pText(null)).toBe("no p-value");
    expect(flaggedText({ n_flagged: null, n_units: 1, expected_flagged: null })).toBe("1 unit ranked, none flagged (too few clean models to calibrate a flag)");
  });
});

