// The model page's unit labels (issue 22): each unit's label before any attack (its newest run's
// "before" label) under its image, the units sorted by unit, label or score.
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import type { Route } from "../../test/fetchMock";
import kinds from "../../test/fixtures/job-kinds.json";
import layers from "../../test/fixtures/layers.json";
import synthetic from "../../test/fixtures/model-synthetic.json";
import models from "../../test/fixtures/models.json";
import { getsTo, mockPagedFetch } from "../../test/pagedFetch";
import { renderRoutes } from "../../test/renderRoutes";
import type { LabelHit } from "../search/labelQueries";
import { ModelPage, sortUnits } from "./ModelPage";

const hit = (run: number, unit: number, label: string, score: number | null): LabelHit => ({
  run_id: run, run_name: `run ${run}`, model_id: 1, model_name: "fmnist-cnn (demo)", layer: "relu3", unit, state: "before",
  describer: "class-concept", label, score, p_value: 1e-4, attacked: false, changed: false,
  thumb_url: `/api/v1/image-sets/2/images/${100 + unit}/thumb?sig=s${run}`, unit_path: `/runs/${run}/layers/relu3/units/${unit}`,
});

// in sort=unit order (the newest run first): run 5's labels, then run 3's (unit 0 relabelled since: run 5's wins)
const labels = [hit(5, 0, "Trouser", 0.5), hit(5, 1, "Bag", 0.9), hit(5, 2, "Ankle boot", 0.7), hit(3, 0, "Sandal", 0.99), hit(3, 3, "Coat", 0.4)];

function serve(synth: unknown, rows: LabelHit[] = labels) {
  const routes: (Route & { total?: number })[] = [
    { path: /^\/api\/v1\/job-kinds$/, body: kinds },
    { path: /^\/api\/v1\/models\/1$/, body: models[0] },
    { path: /^\/api\/v1\/models\/1\/layers$/, body: layers },
    { path: /^\/api\/v1\/models\/1\/synthetic$/, body: synth },
    { path: /^\/api\/v1\/models\/1\/synthetic\/relu\d\/\d+\/image\//, body: "png" },
    { path: /^\/api\/v1\/units$/, body: rows, total: rows.length },
  ];
  return mockPagedFetch(routes);
}

const renderAt = (path: string) => renderRoutes(path, { "/models/:model": <ModelPage /> });
/** The captions of a grid's first `n` units: "unit 2Ankle boot 70 %". */
const captions = (grid: HTMLElement, n: number) => within(grid).getAllByRole("listitem").slice(0, n).map((li) => li.textContent);

describe("model page labels", () => {
  beforeEach(() => {
    setToken("fva_test_token_0123456789");
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: vi.fn(() => "blob:synthetic"), revokeObjectURL: vi.fn() }));
  });

  it("shows each unit's newest label under its image, and sorts the units by unit, label or score", async () => {
    const { calls } = serve(synthetic);
    const user = userEvent.setup();
    renderAt("/models/1");
    const relu3 = await screen.findByRole("region", { name: "Layer relu3" });
    await within(relu3).findAllByTestId("unit-label");
    expect(Object.fromEntries(getsTo(calls, "/api/v1/units")[0])).toEqual({ model_id: "1", state: "before", sort: "unit", limit: "500" });
    expect(captions(relu3, 5)).toEqual(["unit 0Trouser 50 %", "unit 1Bag 90 %", "unit 2Ankle boot 70 %", "unit 3Coat 40 %", "unit 4—"]);
    const bag = within(relu3).getByText("Bag").closest("span")!;
    expect(bag).toHaveAttribute("title", "Bag: 90 % of the validation top-k; enrichment p = 1.0e-4 · before the attack of run 5 (run 5)");
    // relu1 has no labels: no captions (relu3's units without one have a dash)
    expect(within(screen.getByRole("region", { name: "Layer relu1" })).queryAllByTestId("unit-label")).toHaveLength(0);
    const panel = screen.getByRole("region", { name: "Unit labels" });
    expect(within(panel).getByRole("heading")).toHaveTextContent("Unit labels 4 units");
    expect(within(panel).getByRole("link", { name: "run 5" })).toHaveAttribute("href", "/runs/5");

    await user.selectOptions(within(panel).getByRole("combobox", { name: "Sort units by" }), "label");
    expect(screen.getByTestId("where")).toHaveTextContent("/models/1?sort=label");
    expect(captions(relu3, 5)).toEqual(["unit 2Ankle boot 70 %", "unit 1Bag 90 %", "unit 3Coat 40 %", "unit 0Trouser 50 %", "unit 4—"]);
    await user.selectOptions(within(panel).getByRole("combobox", { name: "Sort units by" }), "score");
    expect(captions(relu3, 5)).toEqual(["unit 1Bag 90 %", "unit 2Ankle boot 70 %", "unit 0Trouser 50 %", "unit 3Coat 40 %", "unit 4—"]);
    await user.selectOptions(within(panel).getByRole("combobox", { name: "Sort units by" }), "unit");
    expect(screen.getByTestId("where")).toHaveTextContent(/^\/models\/1$/);
    expect(captions(relu3, 2)).toEqual(["unit 0Trouser 50 %", "unit 1Bag 90 %"]);
  });

  it("a layer with labels but no synthetic images: each unit's top image and label, linking to its unit page", async () => {
    serve({ model_id: 1, layers: [] });
    renderAt("/models/1?sort=score");
    expect(await screen.findByText("No synthetic visualizations of this model yet.")).toBeInTheDocument();
    const grid = await screen.findByRole("region", { name: "Unit labels of relu3" });
    expect(captions(grid, 4)).toEqual(["unit 1Bag 90 %", "unit 2Ankle boot 70 %", "unit 0Trouser 50 %", "unit 3Coat 40 %"]);
    const unit1 = within(grid).getAllByRole("link")[0];
    expect(unit1).toHaveAttribute("href", "/runs/5/layers/relu3/units/1");
    expect(within(unit1).getByRole("img", { name: "top image of unit 1 (relu3), before (θ_init) state" })).toHaveAttribute("src", labels[1].thumb_url);
    expect(within(grid).getAllByRole("link")[3]).toHaveAttribute("href", "/runs/3/layers/relu3/units/3");
  });

  it("a model without labels shows no label panel nor captions", async () => {
    serve(synthetic, []);
    renderAt("/models/1");
    const relu3 = await screen.findByRole("region", { name: "Layer relu3" });
    await waitFor(() => expect(screen.queryByRole("region", { name: "Unit labels" })).toBeNull());
    expect(within(relu3).queryAllByTestId("unit-label")).toHaveLength(0);
  });

  it("sorts units without a label last, whatever the order", () => {
    const by = new Map(labels.slice(0, 3).map((h) => [h.unit, h]));
    const units = [{ unit: 4 }, { unit: 2 }, { unit: 0 }, { unit: 1 }];
    expect(sortUnits(units, "label", (u) => by.get(u)).map((u) => u.unit)).toEqual([2, 1, 0, 4]);
    expect(sortUnits(units, "score", (u) => by.get(u)).map((u) => u.unit)).toEqual([1, 2, 0, 4]);
    expect(sortUnits(units, "unit", (u) => by.get(u)).map((u) => u.unit)).toEqual([0, 1, 2, 4]);
  });
});
