// Issue 19: the unit page's two states (item 3), the words when the selected state is θ_init
// (item 2) and the unit list of runs without results (item 5).
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch } from "../../test/fetchMock";
import run from "../../test/fixtures/run-detail.json";
import unit11 from "../../test/fixtures/run-unit-11.json";
import { renderRoutes } from "../../test/renderRoutes";
import { RunSummary } from "./RunSummary";
import { UnitPage } from "./UnitPage";

const pages = {
  "/runs/:run": <RunSummary />,
  "/runs/:run/layers/:layer": <RunSummary />,
  "/runs/:run/layers/:layer/units/:unit": <UnitPage />,
};

const MESSAGE =
  "No evaluated state stayed within the 0.5 pp accuracy budget (drops 1.30, 1.20, 1.15 pp at steps 100, 200, 300): the selected state is θ_init, so the 'selected' results show no attack. The final state (step 300, 1.15 pp over) is shown under 'final'.";

const outcome = (init: boolean) => ({
  selected_step: init ? 0 : 40, final_step: 60, selected_is_init: init, final_over_budget: init, budget_pp: 0.5, message: init ? MESSAGE : null,
});

// the final state's top-k: the selected one's "after" reversed, so the two are told apart by their first tile
const reversed = (t: typeof unit11.topk.val) => ({ before: t.before, after: [...t.after].reverse() });
function unitRoute(calls: string[]) {
  return {
    path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units\/(\d+)$/,
    body: (req: Request, m: RegExpMatchArray) => {
      const st = new URL(req.url).searchParams.get("state") ?? "selected";
      calls.push(`${m[1]}:${st}`);
      return {
        ...unit11, unit: Number(m[1]), state: st, states: ["selected", "final"],
        metrics: { ...unit11.metrics, topk_overlap: st === "final" ? 0.2 : 0.8 },
        topk: st === "final" ? { val: reversed(unit11.topk.val), train: reversed(unit11.topk.train) } : unit11.topk,
      };
    },
  };
}

const afterHeadings = () => screen.getAllByRole("heading", { level: 4 }).map((h) => h.textContent).filter((t) => t!.startsWith("After"));

describe("unit page: selected and final state (item 3)", () => {
  it("names the state shown in the column titles; the other state is one click away and in the address", async () => {
    setToken("fva_test_token_0123456789");
    const calls: string[] = [];
    const { fn } = mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, attack_outcome: outcome(false) } }, unitRoute(calls)]);
    const user = userEvent.setup();
    renderRoutes("/runs/3/layers/relu3/units/11", pages);
    await screen.findByRole("heading", { name: "Training set: top-k" });
    expect(afterHeadings()).toEqual(["After (selected state, step 40)", "After (selected state, step 40)"]);
    expect(screen.getByText("80 %")).toBeInTheDocument(); // the selected state's overlap, as a percentage
    expect(screen.getByText("top-5 overlap")).toBeInTheDocument(); // on the run's k_clip
    const tabs = screen.getByRole("navigation", { name: "State shown as after" });
    expect(within(tabs).getByText("selected state, step 40")).toHaveAttribute("aria-current", "page");
    const toFinal = within(tabs).getByRole("link", { name: "final state, step 60" });
    expect(toFinal).toHaveAttribute("href", "/runs/3/layers/relu3/units/11?state=final");
    await user.click(toFinal);
    expect(screen.getByTestId("where")).toHaveTextContent("/runs/3/layers/relu3/units/11?state=final");
    expect(await screen.findByText("20 %")).toBeInTheDocument();
    expect(afterHeadings()).toEqual(["After (final state, step 60)", "After (final state, step 60)"]);
    expect(calls).toEqual(["11:selected", "11:final"]);
    expect(fn.mock.calls.some(([r]) => String(r instanceof Request ? r.url : r).includes("/units/11?state=final"))).toBe(true);
    // ←/→ keep the state
    await user.keyboard("{ArrowRight}");
    expect(screen.getByTestId("where")).toHaveTextContent("/runs/3/layers/relu3/units/12?state=final");
    await waitFor(() => expect(calls.at(-1)).toBe("12:final"));
  });

  it("a share link keeps working in both states: the token travels with the state", async () => {
    const calls: string[] = [];
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, read_only: true, attack_outcome: outcome(false) } }, unitRoute(calls)]);
    setToken(null);
    renderRoutes("/runs/3/layers/relu3/units/11?share=sharetokensharetoken&state=final", pages);
    expect(await screen.findAllByRole("heading", { name: "After (final state, step 60)" })).toHaveLength(2);
    expect(calls).toEqual(["11:final"]);
    const back = within(screen.getByRole("navigation", { name: "State shown as after" })).getByRole("link", { name: "selected state, step 40" });
    expect(back).toHaveAttribute("href", "/runs/3/layers/relu3/units/11?share=sharetokensharetoken");
  });

  it("a run that stored no final state: a not-found page that leads back to the selected state", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([
      { path: /^\/api\/v1\/runs\/3$/, body: run },
      { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units\/11$/, respond: (req) => (new URL(req.url).searchParams.get("state") === "final" ? { status: 404, body: { detail: "run 3 has no final state" } } : { status: 200, body: unit11 }) },
    ]);
    renderRoutes("/runs/3/layers/relu3/units/11?state=final", pages);
    expect(await screen.findByRole("heading", { name: "Run 3 has no final state stored for unit 11" })).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "Open unit 11 in the selected state" })).toHaveAttribute("href", "/runs/3/layers/relu3/units/11");
  });
});

describe("the selected state is θ_init (item 2)", () => {
  it("the run page says so in words and offers the final state", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([
      { path: /^\/api\/v1\/runs\/3$/, body: { ...run, attack_outcome: outcome(true) } },
      { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: { items: [], total: 0, page: 1, page_size: 25 } },
    ]);
    renderRoutes("/runs/3", pages);
    const note = await screen.findByTestId("selected-is-init");
    expect(note).toHaveTextContent(`The selected state shows no attack. ${MESSAGE}`);
    expect(within(note).getByRole("link", { name: "unit 0, final state" })).toHaveAttribute("href", "/runs/3/layers/relu3/units/0?state=final");
    expect(screen.getByText("after: selected state, step 60 = θ_init")).toBeInTheDocument();
    expect(screen.getByRole("img", { name: /CLIP similarity pre vs post/ }).textContent).toContain("C_jj(init, selected = init)");
  });

  it("the unit page says so and links the unit's final state", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, attack_outcome: outcome(true) } }, unitRoute([])]);
    renderRoutes("/runs/3/layers/relu3/units/11", pages);
    const note = await screen.findByTestId("selected-is-init");
    expect(note).toHaveTextContent(MESSAGE);
    expect(within(note).getByRole("link", { name: "Show this unit in the final state, step 60" })).toHaveAttribute("href", "/runs/3/layers/relu3/units/11?state=final");
    expect(afterHeadings()[0]).toBe("After (selected state = θ_init, step 0)");
  });

  it("nothing is said when a state within budget was found", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, attack_outcome: outcome(false) } }, unitRoute([])]);
    renderRoutes("/runs/3/layers/relu3/units/11", pages);
    await screen.findByRole("heading", { name: "Training set: top-k" });
    expect(screen.queryByTestId("selected-is-init")).toBeNull();
  });
});

describe("the unit list of a run without results (item 5)", () => {
  const bare = { ...run, table: [], rows: [], per_unit: {}, clip_similarity: {}, pushup: null, accuracy: {}, history: [], alpha_trajectory: [], finished_at: null };
  const emptyUnits = { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: { items: [], total: 0, page: 1, page_size: 25 } };

  it("running: says the units come when the run is done, links the job, never 'Loading units…'", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...bare, status: "running" } }, emptyUnits]);
    renderRoutes("/runs/3", pages);
    const n = await screen.findByTestId("unit-list-notice");
    expect(n).toHaveAttribute("data-status", "running");
    expect(n).toHaveTextContent("No units yet: the run is still running. The unit table appears when its metrics step has run.");
    expect(within(n).getByRole("link", { name: "Follow the job's progress" })).toHaveAttribute("href", "/jobs/11");
    expect(screen.queryByText(/Loading units/)).toBeNull();
  });

  it("failed: says it failed, with its reason", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...bare, status: "failed", error: "k = 10 is more than the 6 images of the set" } }, emptyUnits]);
    renderRoutes("/runs/3", pages);
    const n = await screen.findByTestId("unit-list-notice");
    expect(n).toHaveAttribute("data-status", "failed");
    expect(n).toHaveTextContent("No units: the run failed before it measured them.k = 10 is more than the 6 images of the set");
    expect(screen.queryByText(/Loading units/)).toBeNull();
  });

  it("cancelled before its metrics: promises nothing it does not show", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...bare, status: "cancelled", error: "cancelled on request (at step 12)" } }, emptyUnits]);
    renderRoutes("/runs/3", pages);
    const n = await screen.findByTestId("unit-list-notice");
    expect(n).toHaveAttribute("data-status", "cancelled");
    expect(n).toHaveTextContent("No units: the run was cancelled before it measured them. (cancelled on request (at step 12)) Nothing of it can be listed");
    const banner = screen.getAllByRole("status").find((s) => s.classList.contains("banner"))!;
    expect(banner).toHaveTextContent("This run was cancelled before it measured any results (cancelled on request (at step 12)): there is nothing to show.");
    expect(banner).not.toHaveTextContent(/shown below/);
  });

  it("cancelled after its metrics: the units it measured are listed", async () => {
    setToken("fva_test_token_0123456789");
    const units = (await import("../../test/fixtures/run-units.json")).default;
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, status: "cancelled" } }, { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: units }]);
    renderRoutes("/runs/3", pages);
    expect(await screen.findByText(`units 1–25 of ${units.total}`)).toBeInTheDocument();
    expect(screen.queryByTestId("unit-list-notice")).toBeNull();
    expect(screen.getByText(/This run was cancelled; the results it measured before are shown below/)).toBeInTheDocument();
  });

  it("a failing chart stays in its panel: the rest of the run page renders", async () => {
    setToken("fva_test_token_0123456789");
    const units = (await import("../../test/fixtures/run-units.json")).default;
    // a per-unit list that is not an array makes the histogram throw while rendering
    mockFetch([
      { path: /^\/api\/v1\/runs\/3$/, body: { ...run, per_unit: { relu3: { clip_delta: 5, kendall_tau: [1, 0.9999999999999998, 1] } } } },
      { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: units },
    ]);
    const spy = vi.spyOn(console, "error").mockImplementation(() => {});
    renderRoutes("/runs/3", pages);
    expect(await screen.findByText("CLIP-δ histogram could not be shown")).toBeInTheDocument();
    expect(screen.getByRole("img", { name: /Kendall-τ per unit \(selected state\): histogram of 3 values/ })).toBeInTheDocument();
    expect(await screen.findByText(`units 1–25 of ${units.total}`)).toBeInTheDocument();
    spy.mockRestore();
  });
});
