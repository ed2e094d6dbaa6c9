// Unit labels on a run's pages (issue 22): the run page's "label changed" list of attacked units
// relabelled by the attack, and the unit page's SemanticLens scores before → after.
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import type { Route } from "../../test/fetchMock";
import run from "../../test/fixtures/run-detail.json";
import unit11 from "../../test/fixtures/run-unit-11.json";
import units from "../../test/fixtures/run-units.json";
import { getsTo, mockPagedFetch } from "../../test/pagedFetch";
import { renderRoutes } from "../../test/renderRoutes";
import type { LabelHit } from "../search/labelQueries";
import { RunSummary } from "./RunSummary";
import { UnitPage } from "./UnitPage";

function renderAt(path: string) {
  return renderRoutes(path, {
    "/runs/:run": <RunSummary />,
    "/runs/:run/layers/:layer": <RunSummary />,
    "/runs/:run/layers/:layer/units/:unit": <UnitPage />,
  });
}

const hit = (unit: number, state: string, label: string, score: number, changed: boolean): LabelHit => ({
  run_id: 3, run_name: run.name, model_id: 1, model_name: "fmnist-cnn (demo)", layer: "relu3", unit, state, describer: "class-concept",
  label, score, p_value: 1e-5, attacked: true, changed, thumb_url: `/api/v1/image-sets/2/images/${unit}/thumb?sig=x`,
  unit_path: `/runs/3/layers/relu3/units/${unit}`,
});

// the label index of run 3: units 11 and 40 relabelled Bag in the selected state, 12 in the final one only
const index: LabelHit[] = [
  hit(11, "before", "T-shirt/top", 0.6, false), hit(12, "before", "Sneaker", 0.7, false), hit(40, "before", "Ankle boot", 0.5, false),
  hit(11, "selected", "Bag", 0.8, true), hit(40, "selected", "Bag", 0.9, true), hit(12, "selected", "Sneaker", 0.7, false),
  hit(11, "final", "Bag", 0.9, true), hit(40, "final", "Bag", 1, true), hit(12, "final", "Bag", 0.6, true),
];

function serve(runBody: unknown = run, unitBody: unknown = unit11, rows: LabelHit[] = index) {
  const match = (u: URL) =>
    rows.filter((h) => {
      const p = u.searchParams;
      return (!p.get("state") || h.state === p.get("state")) && (p.get("changed") == null || String(h.changed) === p.get("changed"))
        && (p.get("attacked") == null || String(h.attacked) === p.get("attacked")) && Number(p.get("run_id")) === h.run_id;
    }).sort((a, b) => a.layer.localeCompare(b.layer) || a.unit - b.unit); // sort=unit: one run, so layer and unit
  const routes: (Route & { total?: (u: URL) => number })[] = [
    { path: /^\/api\/v1\/runs\/3$/, body: runBody },
    { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: units },
    { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units\/(\d+)$/, body: (_r: Request, m: RegExpMatchArray) => ({ ...(unitBody as object), unit: Number(m[1]) }) },
    { path: /^\/api\/v1\/units$/, body: (req: Request) => match(new URL(req.url)), total: (u) => match(u).length },
  ];
  return mockPagedFetch(routes);
}

describe("the run page's “label changed” list", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("lists the attacked units relabelled in the main state, each label before → after, from the label index", async () => {
    const { calls } = serve();
    const user = userEvent.setup();
    renderAt("/runs/3");
    const panel = await screen.findByRole("region", { name: "Units" });
    await within(panel).findByText(`units 1–25 of ${units.total}`);
    await user.click(within(panel).getByRole("checkbox", { name: "label changed" }));
    expect(screen.getByTestId("where")).toHaveTextContent("/runs/3?relabelled=1");
    const table = await within(panel).findByRole("table", { name: "Units whose label changed" });
    await waitFor(() => expect(within(table).getAllByTestId("label-before")[0]).toHaveTextContent("T-shirt/top"));
    const asked = getsTo(calls, "/api/v1/units");
    expect(Object.fromEntries(asked[0])).toEqual({ run_id: "3", state: "selected", changed: "true", attacked: "true", sort: "unit", limit: "500" });
    expect(Object.fromEntries(asked[1])).toEqual({ run_id: "3", state: "before", attacked: "true", sort: "unit", limit: "500" });
    const rows = within(table).getAllByTestId("label-changed-unit");
    expect(rows.map((r) => r.textContent)).toEqual([
      "unit 11relu3T-shirt/top 60 %→Bag 80 % changed",
      "unit 40relu3Ankle boot 50 %→Bag 90 % changed",
    ]);
    expect(within(rows[0]).getByRole("link", { name: "unit 11" })).toHaveAttribute("href", "/runs/3/layers/relu3/units/11");
    expect(within(panel).getByText(/2 attacked units whose label/)).toBeInTheDocument();
    await waitFor(() => expect(screen.getByTestId("label-changed")).toHaveAttribute("aria-busy", "false"));
    // the unit table is back when the filter is off
    await user.click(within(panel).getByRole("checkbox", { name: "label changed" }));
    expect(await within(panel).findByText(`units 1–25 of ${units.total}`)).toBeInTheDocument();
  });

  it("when the selected state is θ_init the main state is the final one; links open the unit in it; a share link keeps its token", async () => {
    const attack_outcome = { selected_step: 0, final_step: 400, selected_is_init: true, final_over_budget: true, budget_pp: 0.5, message: null };
    const { calls } = serve({ ...run, attack_outcome, read_only: true });
    renderAt("/runs/3?relabelled=1&share=shr_abcdefghijklmnop");
    const table = await screen.findByRole("table", { name: "Units whose label changed" });
    expect(getsTo(calls, "/api/v1/units")[0].get("state")).toBe("final");
    await waitFor(() => expect(within(table).getAllByTestId("label-changed-unit")).toHaveLength(3));
    expect(within(table).getByRole("link", { name: "unit 12" })).toHaveAttribute(
      "href", "/runs/3/layers/relu3/units/12?state=final&share=shr_abcdefghijklmnop");
    await waitFor(() => expect(within(table).getAllByTestId("label-before")[1]).toHaveTextContent("Sneaker 70 %"));
  });

  it("says when no attacked unit was relabelled", async () => {
    serve(run, unit11, index.map((h) => ({ ...h, changed: false })));
    renderAt("/runs/3?relabelled=1");
    expect(await screen.findByText(/No attacked unit's label changed in the selected state/)).toBeInTheDocument();
  });
});

describe("the unit page's interpretability scores", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  const scores = {
    before: { clarity: 0.81234, polysemanticity: 0.1, redundancy: 0.42 },
    after: { clarity: 0.3, polysemanticity: 0.55, redundancy: null },
  };
  const labels = { before: { label: 0, name: "T-shirt/top", share: 0.6, p_value: 1.2e-4 }, after: { label: 8, name: "Bag", share: 0.8, p_value: 3.4e-7 } };

  it("shows clarity, polysemanticity and redundancy before → after beside the label, measured with the run's embedder", async () => {
    serve(run, { ...unit11, labels, scores });
    renderAt("/runs/3/layers/relu3/units/11");
    expect(await screen.findByTestId("unit-labels")).toHaveTextContent("T-shirt/top 60 % → Bag 80 % changed");
    expect(screen.getByTestId("unit-score-clarity")).toHaveTextContent("0.812 → 0.300");
    expect(screen.getByTestId("unit-score-polysemanticity")).toHaveTextContent("0.100 → 0.550");
    expect(screen.getByTestId("unit-score-redundancy")).toHaveTextContent("0.420 → —");
    expect(screen.getByText("Clarity before → after").closest("div")).toHaveAttribute("title", expect.stringMatching(/^how much the embeddings/));
    expect(screen.getByTestId("unit-scores-note")).toHaveTextContent(`by the run's embedder, ${run.embedder}`);
    // the fixture's run used a stand-in embedder: its warning is repeated here
    expect(screen.getByTestId("embedder-warning")).toHaveTextContent(/^Embedder: CLIP embedder 'open_clip:ViT-B-32:openai' unavailable/);
  });

  it("a unit without scores (a run measured before them) shows none", async () => {
    serve(run, { ...unit11, labels });
    renderAt("/runs/3/layers/relu3/units/11");
    await screen.findByTestId("unit-labels");
    expect(screen.queryByTestId("unit-score-clarity")).toBeNull();
    expect(screen.queryByTestId("unit-scores-note")).toBeNull();
    expect(screen.queryByTestId("embedder-warning")).toBeNull();
  });
});
