// A Gradient Slingshots run (SPEC §8.1): the run page's FV→target panel (the layer's medians, the
// cross-check verdict, a strip per attacked unit: target, FV before, FV after, linking to the
// unit) and the unit page's panel (its target and renders per seed, its measures, the verdict)
// beside the natural top-k.
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch, type Route as FRoute } from "../../test/fetchMock";
import runDetail from "../../test/fixtures/run-detail-slingshot.json";
import plainRun from "../../test/fixtures/run-detail.json";
import unit11 from "../../test/fixtures/run-unit-11.json";
import units from "../../test/fixtures/run-units.json";
import unit4 from "../../test/fixtures/unit-slingshot-4.json";
import unit2 from "../../test/fixtures/unit-slingshot.json";
import { renderRoutes } from "../../test/renderRoutes";
import { crossCheckText } from "./FvTarget";
import { RunSummary } from "./RunSummary";
import { UnitPage } from "./UnitPage";

function renderAt(path: string) {
  return renderRoutes(path, {
    "/runs/:run": <RunSummary />,
    "/runs/:run/layers/:layer": <RunSummary />,
    "/runs/:run/layers/:layer/units/:unit": <UnitPage />,
  });
}

const routes = (run: unknown = runDetail): FRoute[] => [
  { path: /^\/api\/v1\/runs\/8$/, body: run },
  { path: /^\/api\/v1\/runs\/8\/layers\/relu3\/units$/, body: units },
  // unit 0 of the fixture has no target stored (a run whose attack job result lacks it)
  { path: /^\/api\/v1\/runs\/8\/layers\/relu3\/units\/(\d+)$/, body: (_r: Request, m: RegExpMatchArray) => ({ 2: unit2, 4: unit4 })[m[1]] ?? { ...unit11, unit: 0 } },
  { path: /^\/api\/v1\/runs\/8\/layers\/relu3\/units\/\d+\/(synthetic\/|target$)/, body: "png" },
];

/** A definition list as {term: definition}. */
const terms = (el: HTMLElement) => {
  const dt = within(el).getAllByRole("term").map((d) => d.textContent);
  const dd = within(el).getAllByRole("definition").map((d) => d.textContent);
  return Object.fromEntries(dt.map((t, i) => [t, dd[i]]));
};

describe("Gradient Slingshots: FV → target", () => {
  beforeEach(() => {
    setToken("fva_test_token_0123456789");
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: vi.fn(() => "blob:fv"), revokeObjectURL: vi.fn() }));
  });

  it("says the cross-check in words", () => {
    expect(crossCheckText("agree")).toBe("exemplars and FV agree");
    expect(crossCheckText("disagree")).toBe("exemplars and FV disagree");
    expect(crossCheckText(null)).toMatch(/^unknown/);
  });

  it("run page: the layer's medians and verdict next to Table 3.1, then target, FV before and after per attacked unit", async () => {
    const { calls } = mockFetch(routes());
    const user = userEvent.setup();
    renderAt("/runs/8");
    const panel = await screen.findByRole("region", { name: "Feature visualization vs target" });
    // right after the summary
    expect(panel.previousElementSibling).toHaveAttribute("aria-label", "Summary (Table 3.1)");
    expect(screen.getByText(/Gradient Slingshots on/)).toBeInTheDocument();
    expect(terms(panel.querySelector("dl")!)).toEqual({
      "FV moved to the target (by embedder cosine)": "67 % of 3 units",
      "SSIM to target after (before)": "0.412 (before 0.051)",
      "embedder cosine to target after (before)": "0.734 (before 0.402)",
      "pixel MSE to target after (before)": "0.061 (before 0.187)",
      "FV after vs original FV (SSIM / cosine)": "0.233 / 0.515",
      "AUROC for the top class before → after": "0.981 → 0.973",
      "natural–synthetic agreement before → after": "1.210 → 0.940",
      "cross-check": "exemplars and FV disagree",
    });
    const rows = within(panel).getAllByTestId("target-unit");
    expect(rows.map((r) => within(r).getByRole("link").textContent)).toEqual(["unit 0", "unit 2", "unit 4"]);
    expect(await within(rows[0]).findByText("no target stored for this unit")).toBeInTheDocument();
    const strip = await within(rows[1]).findByRole("group", { name: "Unit 2: target, FV before, FV after" });
    expect(await within(strip).findByRole("img", { name: "target image of unit 2 (relu3)" })).toHaveAttribute("src", "blob:fv");
    expect(within(strip).getByRole("img", { name: "FV of unit 2 (relu3), seed 100, before the attack (θ_init)" })).toBeInTheDocument();
    expect(within(strip).getByRole("img", { name: "FV of unit 2 (relu3), seed 100, after the attack (selected state)" })).toBeInTheDocument();
    expect(rows[1]).toHaveTextContent("SSIM to target 0.425 (before 0.048) · moved · exemplars and FV disagree");
    expect(await within(rows[2]).findByText(/not moved/)).toBeInTheDocument();
    expect(rows[2]).toHaveTextContent("exemplars and FV agree");
    // each image through the authenticated helper: the target and seed 100 before / after
    expect(calls.filter((c) => c.url === "/api/v1/runs/8/layers/relu3/units/2/target")).toHaveLength(1);
    expect(calls.some((c) => c.url === "/api/v1/runs/8/layers/relu3/units/2/synthetic/after/100")).toBe(true);
    await user.click(within(rows[1]).getByRole("link", { name: "unit 2" }));
    expect(await screen.findByRole("heading", { level: 1, name: /Unit 2/ })).toBeInTheDocument();
  });

  it("run page: no FV→target measures (no visualization step) says so", async () => {
    mockFetch(routes({ ...runDetail, fv_target: null }));
    renderAt("/runs/8");
    expect(await screen.findByTestId("fv-target-none")).toHaveTextContent("No FV→target measures for relu3: the audit ran without its synthetic visualization step.");
  });

  it("a push-up run has no such panel", async () => {
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: plainRun }, { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: units }]);
    renderAt("/runs/3");
    await screen.findByRole("region", { name: "Summary (Table 3.1)" });
    expect(screen.queryByRole("region", { name: "Feature visualization vs target" })).toBeNull();
  });

  it("unit page: target, FV before and after per seed, the unit's measures and verdict, beside the natural top-k", async () => {
    mockFetch(routes());
    renderAt("/runs/8/layers/relu3/units/2");
    const panel = await screen.findByRole("region", { name: "Feature visualization vs target" });
    const strips = within(panel).getAllByRole("group", { name: "Unit 2: target, FV before, FV after" });
    expect(strips).toHaveLength(2);
    expect(await within(strips[1]).findByRole("img", { name: "FV of unit 2 (relu3), seed 101, after the attack (selected state)" })).toBeInTheDocument();
    expect(within(strips[1]).getByRole("img", { name: "target image of unit 2 (relu3)" })).toBeInTheDocument();
    expect(terms(panel.querySelector("dl")!)).toMatchObject({
      "FV moved to the target (by embedder cosine)": "yes",
      "SSIM to target after (before)": "0.425 (before 0.048)",
      "AUROC for the top class before → after": "0.985 → 0.977",
      "natural–synthetic agreement before → after": "1.250 → 0.940",
      "cross-check": "exemplars and FV disagree",
    });
    expect(within(panel).getByTestId("fv-verdict")).toHaveClass("bad");
    expect(within(panel).getByText(/the AUROC's positive class is Sneaker \(class 7\)/)).toBeInTheDocument();
    // the natural top-k before/after and the synthetic panel are on the same page, below
    expect(screen.getByRole("heading", { name: /Validation set: top-k/ })).toBeInTheDocument();
    expect(screen.getByRole("region", { name: "Synthetic visualizations" })).toBeInTheDocument();
  });
});
