// The compare page marks which units each run attacked (issue 13, item 15).
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import type { UnitRow } from "../../api/client";
import { mockFetch } from "../../test/fetchMock";
import run from "../../test/fixtures/run-detail.json";
import { renderRoutes } from "../../test/renderRoutes";
import { Compare } from "./Compare";

const row = (unit: number, attacked: boolean, clip_delta: number): UnitRow => ({
  unit, attacked, dead: false, clip_delta, kendall_tau: 0.5, clip_w: 1, kendall_tau_w: 0.9, topk_overlap: 0.5,
});
// A attacked units 0 and 1, B attacked units 1 and 2; unit 3 neither
const unitsA = [row(0, true, 0.4), row(1, true, 0.3), row(2, false, 0.2), row(3, false, 0.1)];
const unitsB = [row(0, false, 0.05), row(1, true, 0.5), row(2, true, 0.6), row(3, false, 0.02)];

describe("compare", () => {
  it("marks the units run A and run B attacked, in the table and the A-vs-B scatter", async () => {
    setToken("fva_test_token_0123456789");
    const runB = { ...run, id: 4, name: "relu3 push-down", attack: { ...run.attack, kind: "push_down" } };
    mockFetch([
      { path: /^\/api\/v1\/runs$/, body: [{ ...run, headline: {} }, { ...runB, headline: {} }] },
      { path: /^\/api\/v1\/runs\/3$/, body: run },
      { path: /^\/api\/v1\/runs\/4$/, body: runB },
      { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: { items: unitsA, total: 4, page: 1, page_size: 1000 } },
      { path: /^\/api\/v1\/runs\/4\/layers\/relu3\/units$/, body: { items: unitsB, total: 4, page: 1, page_size: 1000 } },
    ]);
    renderRoutes("/compare?a=3&b=4&layer=relu3", { "/compare": <Compare /> });
    const panel = await screen.findByRole("region", { name: "Units" });
    expect(within(panel).getByRole("heading")).toHaveTextContent("Units · relu3 (4 live units; A attacked 2, B attacked 2)");
    const table = within(panel).getByRole("table");
    const byUnit = Object.fromEntries(
      within(table).getAllByRole("row").slice(1).map((r) => {
        const cells = within(r).getAllByRole("cell");
        return [cells[0].textContent, cells[1].textContent];
      }),
    );
    expect(byUnit).toEqual({ "unit 0": "A", "unit 1": "AB", "unit 2": "B", "unit 3": "none" });
    expect(within(table).getAllByTitle("run B attacked unit 2")).toHaveLength(1);
    const scatter = screen.getByRole("img", { name: /CLIP-δ per unit: A vs B/ });
    expect(scatter).toHaveAccessibleName("CLIP-δ per unit: A vs B: scatter of 4 units (2 attacked by B, 2 not attacked by B)");
    expect(scatter.querySelectorAll('circle[data-group="b"]')).toHaveLength(2);
  });

  it("an α = 0 control calls its units targeted, not attacked; a run whose selected state is θ_init says so (issue 19)", async () => {
    setToken("fva_test_token_0123456789");
    const control = { ...run, id: 5, name: "relu3 control", attack: { ...run.attack, kind: "finetune" } };
    const message = "No evaluated state stayed within the 0.5 pp accuracy budget: the selected state is θ_init, so the 'selected' results show no attack.";
    const attackRun = { ...run, id: 4, name: "relu3 push-down", attack: { ...run.attack, kind: "push_down" }, attack_outcome: { selected_step: 0, final_step: 200, selected_is_init: true, final_over_budget: true, budget_pp: 0.5, message } };
    mockFetch([
      { path: /^\/api\/v1\/runs$/, body: [{ ...control, headline: {} }, { ...attackRun, headline: {} }] },
      { path: /^\/api\/v1\/runs\/5$/, body: control },
      { path: /^\/api\/v1\/runs\/4$/, body: attackRun },
      { path: /^\/api\/v1\/runs\/5\/layers\/relu3\/units$/, body: { items: unitsA, total: 4, page: 1, page_size: 1000 } },
      { path: /^\/api\/v1\/runs\/4\/layers\/relu3\/units$/, body: { items: unitsB, total: 4, page: 1, page_size: 1000 } },
    ]);
    renderRoutes("/compare?a=5&b=4&layer=relu3&unit=1", { "/compare": <Compare /> });
    const panel = await screen.findByRole("region", { name: "Units" });
    expect(within(panel).getByRole("heading")).toHaveTextContent(
      "Units · relu3 (4 live units; A targeted 2, B attacked 2; targeted = the units an α = 0 control mirrors, not attacked)",
    );
    expect(within(panel).getAllByTitle("run A targeted unit 0")).toHaveLength(1);
    const note = screen.getByTestId("selected-is-init");
    expect(note).toHaveTextContent(message);
    expect(note).toHaveTextContent("(Run B: #4 relu3 push-down.)");
    expect(within(note).getByRole("link", { name: "unit 1 in the final state" })).toHaveAttribute("href", "/runs/4/layers/relu3/units/1?state=final");
    expect(screen.getAllByTestId("selected-is-init")).toHaveLength(1); // the control had a state within budget
  });

  it("a run without units (failed before its metrics) says so instead of an empty comparison (issue 19, item 5)", async () => {
    setToken("fva_test_token_0123456789");
    const failed = { ...run, id: 6, name: "relu3 failed", status: "failed", error: "k = 10 is more than the 6 images of the set", table: [] };
    mockFetch([
      { path: /^\/api\/v1\/runs$/, body: [{ ...run, headline: {} }, { ...failed, headline: {} }] },
      { path: /^\/api\/v1\/runs\/3$/, body: run },
      { path: /^\/api\/v1\/runs\/6$/, body: failed },
      { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: { items: unitsA, total: 4, page: 1, page_size: 1000 } },
      { path: /^\/api\/v1\/runs\/6\/layers\/relu3\/units$/, body: { items: [], total: 0, page: 1, page_size: 1000 } },
    ]);
    renderRoutes("/compare?a=3&b=6&layer=relu3", { "/compare": <Compare /> });
    const notice = await screen.findByTestId("unit-list-notice");
    expect(notice).toHaveTextContent("No units: the run failed before it measured them.k = 10 is more than the 6 images of the set");
    expect(screen.getByRole("heading", { name: "Run B: #6 relu3 failed" })).toBeInTheDocument();
    expect(screen.queryByText(/Loading units/)).toBeNull();
  });

  it("the pickers leave out cancelled and failed runs unless 'show cancelled and failed runs' is ticked (issue 19, item 6)", async () => {
    setToken("fva_test_token_0123456789");
    const item = (id: number, name: string, status: string) => ({ ...run, id, name, status, headline: {} });
    const all = [item(9, "running audit", "running"), item(8, "cancelled audit", "cancelled"), item(7, "failed audit", "failed"), item(3, "relu3 push-down", "succeeded")];
    const { calls } = mockFetch([{ path: /^\/api\/v1\/runs$/, body: all }]);
    const user = userEvent.setup();
    renderRoutes("/compare", { "/compare": <Compare /> });
    const pickA = await screen.findByRole("combobox", { name: "Run A" });
    const names = (select: HTMLElement) => within(select).getAllByRole("option").map((o) => o.textContent);
    expect(names(pickA)).toEqual(["choose a run", "#9 running audit (running)", "#3 relu3 push-down (succeeded)"]);
    expect(names(screen.getByRole("combobox", { name: "Run B" }))).toEqual(["none: A before vs after", "#9 running audit (running)", "#3 relu3 push-down (succeeded)"]);
    // hidden runs are the server's to leave out: the picker asks for the default list
    expect(calls.filter((c) => c.url.startsWith("/api/v1/runs")).map((c) => c.url)).toEqual(["/api/v1/runs?limit=500"]);
    await user.click(screen.getByRole("checkbox", { name: "show cancelled and failed runs" }));
    await waitFor(() => expect(names(screen.getByRole("combobox", { name: "Run A" }))).toHaveLength(5));
    expect(names(screen.getByRole("combobox", { name: "Run A" }))).toEqual([
      "choose a run", "#9 running audit (running)", "#8 cancelled audit (cancelled)", "#7 failed audit (failed)", "#3 relu3 push-down (succeeded)",
    ]);
    await user.click(screen.getByRole("checkbox", { name: "show cancelled and failed runs" }));
    await waitFor(() => expect(names(screen.getByRole("combobox", { name: "Run A" }))).toHaveLength(3));
  });

  it("a cancelled run the address names stays selected in its picker though the list leaves it out", async () => {
    setToken("fva_test_token_0123456789");
    const cancelled = { ...run, id: 8, name: "cancelled audit", status: "cancelled", table: [] };
    mockFetch([
      { path: /^\/api\/v1\/runs$/, body: [{ ...run, headline: {} }, { ...cancelled, headline: {} }] },
      { path: /^\/api\/v1\/runs\/3$/, body: run },
      { path: /^\/api\/v1\/runs\/8$/, body: cancelled },
      { path: /^\/api\/v1\/runs\/\d+\/layers\/relu3\/units$/, body: { items: [], total: 0, page: 1, page_size: 1000 } },
    ]);
    renderRoutes("/compare?a=3&b=8&layer=relu3", { "/compare": <Compare /> });
    await screen.findByRole("heading", { name: "Run B: #8 cancelled audit" });
    const pickB = screen.getByRole<HTMLSelectElement>("combobox", { name: "Run B" });
    expect(pickB.value).toBe("8");
    expect(within(pickB).getAllByRole("option").map((o) => o.textContent)).toEqual(["none: A before vs after", "#8 cancelled audit (cancelled)"]);
    expect(screen.getByRole<HTMLInputElement>("checkbox", { name: "show cancelled and failed runs" }).checked).toBe(false);
  });
});
