// A two-layer run with the contract's new fields: Table 3.1 rows per layer and state
// (selected / final flagged over budget / α = 0 control linking its run / "all"), the
// accuracy's image counts, the α trajectory on subset vs full set, Fig. 3.7 in numbers,
// and the unit page's synthetic before/after beside the natural top-k.
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import type { RunRow } from "../../api/contract";
import { orderRows } from "../../lib/rows";
import { mockFetch, type Route as FRoute } from "../../test/fetchMock";
import run from "../../test/fixtures/run-detail-multi.json";
import unit11 from "../../test/fixtures/run-unit-11.json";
import units from "../../test/fixtures/run-units.json";
import unitSynth from "../../test/fixtures/unit-synthetic.json";
import { renderRoutes } from "../../test/renderRoutes";
import { RunSummary } from "./RunSummary";
import { UnitPage } from "./UnitPage";

function renderAt(path: string) {
  return renderRoutes(path, {
    "/runs/:run": <RunSummary />,
    "/runs/:run/layers/:layer": <RunSummary />,
    "/runs/:run/layers/:layer/units/:unit": <UnitPage />,
  });
}

const routes = (unit: unknown): FRoute[] => [
  { path: /^\/api\/v1\/runs\/5$/, body: run },
  { path: /^\/api\/v1\/runs\/5\/layers\/relu[23]\/units$/, body: units },
  { path: /^\/api\/v1\/runs\/5\/layers\/relu3\/units\/11$/, body: unit },
  { path: /^\/api\/v1\/runs\/5\/layers\/relu3\/units\/11\/synthetic\//, body: "png" },
];

const texts = (row: HTMLElement) => within(row).getAllByRole("cell").map((c) => c.textContent);

describe("Table 3.1 rows", () => {
  it("orders per layer selected → final → control, the all row last", () => {
    expect(orderRows(run.rows as RunRow[], run.layers).map((r) => `${r.layer}:${r.state}`)).toEqual([
      "relu2:selected", "relu2:final", "relu2:control", "relu3:selected", "relu3:final", "relu3:control",
      "all:selected", "all:final", "all:control",
    ]);
  });
});

describe("run page of a two-layer audit", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("shows every row: selected, final flagged over budget with its step, the control linking its run, the all row", async () => {
    mockFetch(routes(unitSynth));
    renderAt("/runs/5");
    expect(await screen.findByRole("heading", { name: /relu2\+relu3 push-down/ })).toBeInTheDocument();
    expect(document.title).toBe("Run 5: relu2+relu3 push-down · fvaudit");
    const table = within(screen.getByRole("region", { name: "Summary (Table 3.1)" })).getByRole("table");
    const rows = within(table).getAllByRole("row").slice(1);
    expect(rows.map((r) => within(r).getByRole("rowheader").textContent)).toEqual([
      "relu2", "relu2", "relu2", "relu3", "relu3", "relu3", "all layers", "all layers", "all layers",
    ]);
    // relu3 selected: step 1200, CLIP-δ 0.496, τ 0.158, accuracy and the images it was measured on
    expect(texts(rows[3])).toEqual(["selected · step 1,200", "0.496", "0.158", "0.980", "0.950", "25 %", "91.52 % on 10,000 images", "−0.48", "0.187"]);
    // relu3 final: over the budget, flagged, with its step
    expect(rows[4]).toHaveClass("over-budget");
    expect(within(rows[4]).getByText("over budget")).toBeInTheDocument();
    expect(texts(rows[4])[0]).toBe("final · step 1,500over budget");
    expect(rows[3]).not.toHaveClass("over-budget");
    // the control row links to the control run
    const control = within(rows[5]).getByRole("link", { name: "α = 0 control (run 6)" });
    expect(control).toHaveAttribute("href", "/runs/6");
    expect(texts(rows[5]).slice(1, 3)).toEqual(["0.015", "0.955"]);
    expect(texts(rows[6]).slice(1, 3)).toEqual(["0.449", "0.230"]);
    // layer names navigate to the layer; the header links the model and the control run
    expect(within(rows[0]).getByRole("link", { name: "relu2" })).toHaveAttribute("href", "/runs/5/layers/relu2");
    expect(screen.getByRole("link", { name: "fmnist-cnn (demo)" })).toHaveAttribute("href", "/models/1");
    expect(screen.getByRole("link", { name: "α = 0 control: run 6" })).toHaveAttribute("href", "/runs/6");
  });

  it("the α trajectory tells the controller's subset from the full-set confirmation", async () => {
    mockFetch(routes(unitSynth));
    renderAt("/runs/5");
    const table = (await screen.findByRole("columnheader", { name: "full-set accuracy" })).closest("table")!;
    const rows = within(table).getAllByRole("row").slice(1);
    expect(texts(rows[0])).toEqual(["100", "92.10 % on 2,000 images", "−0.10", "—", "—", "0.1 → 0.2"]);
    expect(texts(rows[2])).toEqual(["1500", "91.35 % on 2,000 images", "0.65", "91.41 % on 10,000 images", "0.59", "0.8 → 0.4"]);
    expect(within(rows[2]).getAllByRole("cell")[4]).toHaveClass("bad"); // over the 0.5 pp budget on the full set
    expect(within(rows[1]).getAllByRole("cell")[4]).not.toHaveClass("bad");
  });

  it("Fig. 3.7 in numbers: natural vs synthetic CLIP-δ means per layer, a scatter per unit with attacked units apart", async () => {
    mockFetch(routes(unitSynth));
    const user = userEvent.setup();
    renderAt("/runs/5");
    const fig = await screen.findByRole("region", { name: "Natural vs synthetic (Fig. 3.7)" });
    const means = within(fig).getAllByRole("row").slice(1);
    expect(texts(means[0])).toEqual(["0.402", "0.121", "0.830", "1.310", "6 (4)"]);
    expect(texts(means[1])).toEqual(["0.496", "0.187", "0.710", "1.120", "6 (4)"]);
    const scatter = within(fig).getByRole("img", { name: "CLIP-δ natural vs synthetic · relu2: scatter of 6 units (4 attacked, 2 not attacked)" });
    expect(scatter.querySelectorAll("circle.dot.g-attacked")).toHaveLength(4);
    expect(scatter.querySelectorAll("circle.dot.g-other")).toHaveLength(2);
    // per-layer navigation: the relu3 tab shows relu3's units
    await user.click(screen.getByRole("tab", { name: "relu3" }));
    expect(screen.getByTestId("where")).toHaveTextContent("/runs/5/layers/relu3");
    expect(await screen.findByRole("img", { name: /CLIP-δ natural vs synthetic · relu3: scatter of 6 units/ })).toBeInTheDocument();
    // a dot opens its unit on that layer
    await user.click(document.querySelector("svg[aria-label^='CLIP-δ natural vs synthetic'] circle.dot.g-attacked")!);
    expect(screen.getByTestId("where")).toHaveTextContent(/^\/runs\/5\/layers\/relu3\/units\/\d+$/);
  });
});

describe("scatter by keyboard", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("is one tab stop: arrows walk the units in x order, Enter opens the one shown", async () => {
    mockFetch(routes(unitSynth));
    const user = userEvent.setup();
    renderAt("/runs/5");
    const fig = await screen.findByRole("region", { name: "Natural vs synthetic (Fig. 3.7)" });
    const scatter = within(fig).getByRole("img", { name: /relu2: scatter of 6 units/ });
    await user.tab();
    while (document.activeElement !== scatter && document.activeElement !== document.body) await user.tab();
    expect(document.activeElement).toBe(scatter);
    await user.keyboard("{ArrowRight}{ArrowRight}");
    expect(within(fig).getByText(/unit 1 \(attacked\): \(0\.150, 0\.045\)/)).toBeInTheDocument();
    expect(scatter.querySelectorAll("circle.dot.on")).toHaveLength(1);
    await user.keyboard("{Enter}");
    expect(screen.getByTestId("where")).toHaveTextContent("/runs/5/layers/relu2/units/1");
  });
});

describe("unit page: synthetic visualizations", () => {
  beforeEach(() => {
    setToken("fva_test_token_0123456789");
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: vi.fn(() => "blob:synthetic"), revokeObjectURL: vi.fn() }));
  });

  it("shows every seed before and after beside the natural top-k, with the three numbers", async () => {
    const { calls } = mockFetch(routes(unitSynth));
    renderAt("/runs/5/layers/relu3/units/11");
    const panel = await screen.findByRole("region", { name: "Synthetic visualizations" });
    expect(document.title).toBe("Unit 11 · relu3 · relu2+relu3 push-down · fvaudit");
    const imgs = await within(panel).findAllByRole("img", { name: /^synthetic visualization of unit 11 \(relu3\), seed \d, (before|after)/ });
    expect(imgs).toHaveLength(8);
    expect(within(panel).getByRole("img", { name: "synthetic visualization of unit 11 (relu3), seed 3, after the attack (selected state)" })).toBeInTheDocument();
    const dl = within(panel).getAllByRole("definition").map((d) => d.textContent);
    const dt = within(panel).getAllByRole("term").map((d) => d.textContent);
    expect(Object.fromEntries(dt.map((t, i) => [t, dl[i]]))).toEqual({
      "synthetic CLIP-δ": "0.187", "synthetic transfer": "0.712", "natural–synthetic agreement": "1.125", "CLIP-δ (natural)": "0.022",
    });
    expect(within(panel).getByText(/4 seeds, the same seeds before and after · objective score · 256 steps · 64×64 px/)).toBeInTheDocument();
    // the natural top-k sit beside it, in the same row
    expect(panel.parentElement).toHaveClass("natural-synthetic");
    expect(within(panel.parentElement!).getByRole("heading", { name: /Validation set: top-k/ })).toBeInTheDocument();
    // each image was fetched with the API token (the auth-image helper)
    expect(calls.filter((c) => c.url.includes("/synthetic/")).length).toBe(8);
  });

  it("a run without synthetic visualizations says so and where to get some", async () => {
    mockFetch(routes(unit11));
    renderAt("/runs/5/layers/relu3/units/11");
    const empty = await screen.findByTestId("no-synthetic");
    expect(empty).toHaveTextContent("This run has no synthetic visualizations.");
    expect(within(empty).getByRole("link", { name: "model page" })).toHaveAttribute("href", "/models/1/layers/relu3/units/11");
    expect(within(empty).getByRole("link", { name: "launch form" })).toHaveAttribute("href", "/launch?model=1&layer=relu3");
  });
});
