// The sweep pages: the list links each sweep; a sweep shows one figure per method (accuracy
// and CLIP-δ against the pruning rate), every point and table row linking to its run, the
// failed point named, and the table exported through the API.
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch } from "../../test/fetchMock";
import detail from "../../test/fixtures/sweep-detail.json";
import sweeps from "../../test/fixtures/sweeps.json";
import { renderRoutes } from "../../test/renderRoutes";
import { methodSeries, pointSeries, SweepList, SweepPage } from "./Sweep";

function renderAt(path: string) {
  return renderRoutes(path, {
    "/sweeps": <SweepList />,
    "/sweeps/:sweep": <SweepPage />,
    "/runs/:run": <p>run page</p>,
  });
}

describe("sweep pages", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("lists the sweeps, each linking to its page", async () => {
    mockFetch([{ path: /^\/api\/v1\/sweeps$/, body: sweeps }]);
    renderAt("/sweeps");
    const link = await screen.findByRole("link", { name: "demo sweep" });
    expect(link.getAttribute("href")).toBe("/sweeps/9");
    expect(screen.getByRole("link", { name: "per-layer rows" }).getAttribute("href")).toBe("/sweeps/4");
    expect(screen.getAllByRole("row")).toHaveLength(3);
    expect(document.title).toBe("Sweeps · fvaudit");
    expect(screen.getByRole("link", { name: "+ Launch a sweep" })).toHaveAttribute("href", "/sweeps/new");
  });

  it("deletes a sweep only after the confirmation, then lists again (issue 19, item 6)", async () => {
    let rows = sweeps;
    const { calls } = mockFetch([
      { path: /^\/api\/v1\/sweeps$/, body: () => rows },
      { method: "DELETE", path: /^\/api\/v1\/sweeps\/9$/, respond: () => ((rows = [sweeps[1]]), { status: 204 }) },
    ]);
    const user = userEvent.setup();
    renderAt("/sweeps");
    await user.click(await screen.findByRole("button", { name: "Delete sweep 9 (demo sweep)" }));
    let dialog = screen.getByRole("dialog", { name: "Delete sweep 9 (demo sweep)?" });
    expect(dialog).toHaveTextContent(
      "This deletes sweep 9 “demo sweep” and its jobs, points and runs, and the pruned models nothing else uses. It cannot be undone.",
    );
    await user.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(calls.filter((c) => c.method === "DELETE")).toHaveLength(0);
    await user.click(screen.getByRole("button", { name: "Delete sweep 9 (demo sweep)" }));
    dialog = screen.getByRole("dialog");
    await user.click(within(dialog).getByRole("button", { name: "Delete sweep 9" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(calls.filter((c) => c.method === "DELETE").map((c) => c.url)).toEqual(["/api/v1/sweeps/9"]);
    await waitFor(() => expect(screen.queryByRole("link", { name: "demo sweep" })).toBeNull());
    expect(screen.getByRole("link", { name: "per-layer rows" })).toBeInTheDocument();
  });

  it("a refused delete (409) shows the server's reason and offers to hide the sweep instead", async () => {
    const reason = "sweep 4 is still running: cancel it first, or hide it";
    const { calls } = mockFetch([
      { path: /^\/api\/v1\/sweeps$/, body: sweeps },
      { method: "DELETE", path: /^\/api\/v1\/sweeps\/4$/, status: 409, body: { detail: reason } },
      { method: "PATCH", path: /^\/api\/v1\/sweeps\/4$/, body: { ...sweeps[1], hidden: true } },
    ]);
    const user = userEvent.setup();
    renderAt("/sweeps");
    await user.click(await screen.findByRole("button", { name: "Delete sweep 4 (per-layer rows)" }));
    const dialog = screen.getByRole("dialog");
    await user.click(within(dialog).getByRole("button", { name: "Delete sweep 4" }));
    const alert = await within(dialog).findByRole("alert");
    expect(alert).toHaveTextContent(reason);
    expect(within(dialog).queryByRole("button", { name: "Delete sweep 4" })).toBeNull();
    await user.click(within(alert).getByRole("button", { name: "Hide sweep 4 instead" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(calls.filter((c) => c.method !== "GET")).toEqual([
      { method: "DELETE", url: "/api/v1/sweeps/4", body: undefined },
      { method: "PATCH", url: "/api/v1/sweeps/4", body: { hidden: true } },
    ]);
  });

  it("'show hidden' asks for the hidden sweeps too, marks them and offers to unhide; the filter is in the address", async () => {
    const { calls } = mockFetch([
      {
        path: /^\/api\/v1\/sweeps$/,
        body: (req: Request) =>
          new URL(req.url).searchParams.get("include_hidden") === "true" ? [sweeps[0], { ...sweeps[1], hidden: true }] : [sweeps[0]],
      },
      { method: "PATCH", path: /^\/api\/v1\/sweeps\/\d+$/, body: sweeps[1] },
    ]);
    const user = userEvent.setup();
    renderAt("/sweeps");
    await screen.findByRole("link", { name: "demo sweep" });
    expect(screen.queryByRole("link", { name: "per-layer rows" })).toBeNull();
    expect(screen.getByRole("button", { name: "Hide sweep 9 (demo sweep)" })).toBeInTheDocument();
    await user.click(screen.getByRole("checkbox", { name: "show hidden" }));
    const hiddenRow = (await screen.findByRole("link", { name: "per-layer rows" })).closest("tr")!;
    expect(hiddenRow).toHaveTextContent("hidden");
    expect(screen.getByTestId("where")).toHaveTextContent("/sweeps?hidden=1");
    expect(calls.filter((c) => c.method === "GET").map((c) => c.url)).toEqual(["/api/v1/sweeps", "/api/v1/sweeps?include_hidden=true"]);
    await user.click(within(hiddenRow).getByRole("button", { name: "Unhide sweep 4 (per-layer rows)" }));
    await waitFor(() => expect(calls.filter((c) => c.method === "PATCH")).toEqual([{ method: "PATCH", url: "/api/v1/sweeps/4", body: { hidden: false } }]));
  });

  it("plots accuracy and CLIP-δ per method against the rate, starting at the unpruned model", () => {
    const s = methodSeries(detail.curves.norm as Record<string, unknown[]>, ["push_down", "push_up"]);
    expect(s.acc[0].points).toEqual([{ x: 0, y: 91.3 }, { x: 25, y: 91.1 }, { x: 50, y: 90.2 }]);
    expect(s.delta.map((d) => d.name)).toEqual(["CLIP-δ push-down", "CLIP-δ push-up"]);
    expect(s.delta[0].points).toEqual([{ x: 0, y: 0.31 }, { x: 25, y: 0.29 }, { x: 50, y: 0.27 }]);
    // the failed push-up of norm 50 % has no value: left out, not drawn at 0
    expect(s.delta[1].points).toEqual([{ x: 0, y: 0.22 }, { x: 25, y: 0.2 }]);
  });

  it("a sweep without pruning (per-layer rows) plots CLIP-δ and accuracy per point, each linking to its run", async () => {
    const rows = [
      { ...detail.rows[0], point: 0, label: "layers=relu1", method: null, run_id: 21, clip_delta: 0.05 },
      { ...detail.rows[0], point: 1, label: "layers=relu3", method: null, run_id: 22, clip_delta: 0.3 },
    ];
    mockFetch([{ path: /^\/api\/v1\/sweeps\/9$/, body: { ...detail, curves: {}, attacks: ["push_down"], rows } }]);
    renderAt("/sweeps/9");
    const fig = await screen.findByRole("region", { name: "Points" });
    expect(within(fig).getAllByRole("img")).toHaveLength(2);
    expect(within(fig).getAllByRole("link").map((a) => a.getAttribute("href"))).toEqual(["/runs/21", "/runs/22"]);
    expect(pointSeries(rows as never, ["push_down"]).delta[0].points).toEqual([{ x: 0, y: 0.05 }, { x: 1, y: 0.3 }]);
  });

  it("shows one figure per method, every point linking to its run, and the results table", async () => {
    mockFetch([{ path: /^\/api\/v1\/sweeps\/9$/, body: detail }]);
    const user = userEvent.setup();
    renderAt("/sweeps/9");
    expect(await screen.findByRole("heading", { level: 1, name: /demo sweep/ })).toBeTruthy();
    const norm = screen.getByRole("region", { name: "Norm pruning" });
    expect(within(norm).getAllByRole("img")).toHaveLength(2);   // accuracy and CLIP-δ charts
    const runs = within(norm).getAllByRole("link").map((a) => a.getAttribute("href"));
    expect(runs).toEqual(["/runs/11", "/runs/12", "/runs/13", "/runs/14", "/runs/15", "/runs/16"]);
    const vul = screen.getByRole("region", { name: "Vulnerability pruning" });
    expect(within(vul).getAllByRole("link").map((a) => a.getAttribute("href"))).toEqual(
      ["/runs/11", "/runs/12", "/runs/17", "/runs/18"]);
    expect(screen.getByText(/Failed points \(the others keep their results\): norm 50%/)).toBeTruthy();

    const table = screen.getByRole("table");
    const rows = within(table).getAllByRole("row");
    expect(rows).toHaveLength(1 + 8);
    const cells = within(rows[7]).getAllByRole("cell").map((c) => c.textContent);
    expect(cells.slice(0, 8)).toEqual(["vulnerability 50%", "Vulnerability pruning", "50 %", "45.9 %", "28.6 %",
                                       "84.50 n=2000", "push-down", "0.120"]);
    // the top-k overlap as a percentage, as on every other page (issue 19, item 4); the page names the sweep (item 11)
    expect(within(rows[1]).getAllByRole("cell")[11].textContent).toBe(`${Math.round(detail.rows[0].topk_overlap! * 100)} %`);
    // issue 22: the share of attacked units relabelled (older sweeps have none: a dash)
    expect(within(rows[1]).getAllByRole("cell")[12].textContent).toBe("—");
    expect(within(table).getByRole("columnheader", { name: "relabelled" })).toBeTruthy();
    expect(document.title).toBe("Sweep 9: demo sweep · fvaudit");
    expect(within(rows[6]).getByText("failed")).toBeTruthy();
    await user.click(within(rows[7]).getByRole("link", { name: "run 17" }));
    expect(screen.getByTestId("where").textContent).toBe("/runs/17");
  });

  it("shows the share of attacked units relabelled, and the decoy's share for a push-up (issue 22)", async () => {
    const rowsWithFlips = detail.rows.map((r, i) => ({ ...r, label_flip_rate: i === 0 ? 0.86 : null,
                                                        label_decoy_rate: i === 0 ? 0.5 : null }));
    mockFetch([{ path: /^\/api\/v1\/sweeps\/9$/, body: { ...detail, rows: rowsWithFlips } }]);
    renderAt("/sweeps/9");
    const table = await screen.findByRole("table");
    const first = within(table).getAllByRole("row")[1];
    expect(within(first).getAllByRole("cell")[12].textContent).toBe("86% (50% decoy)");
  });

  it("exports the table through the API (CSV, markdown)", async () => {
    const { calls } = mockFetch([
      { path: /^\/api\/v1\/sweeps\/9$/, body: detail },
      { path: /^\/api\/v1\/sweeps\/9\/table$/, body: "point,label\n" },
    ]);
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: vi.fn(() => "blob:x"), revokeObjectURL: vi.fn() }));
    const user = userEvent.setup();
    renderAt("/sweeps/9");
    await user.click(await screen.findByRole("button", { name: "Export CSV" }));
    await user.click(screen.getByRole("button", { name: "Export markdown" }));
    expect(calls.filter((c) => c.url.includes("/table")).map((c) => c.url)).toEqual([
      "/api/v1/sweeps/9/table?format=csv", "/api/v1/sweeps/9/table?format=md"]);
  });
});
