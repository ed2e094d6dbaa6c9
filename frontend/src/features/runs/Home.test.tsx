// The home page links every model to its page (runs table and models table) and names
// a running chain's step from the job-kind registry.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import type { RunListItem } from "../../api/client";
import { mockFetch } from "../../test/fetchMock";
import sets from "../../test/fixtures/image-sets.json";
import chain from "../../test/fixtures/job-chain.json";
import kinds from "../../test/fixtures/job-kinds.json";
import models from "../../test/fixtures/models.json";
import { getsTo, mockPagedFetch } from "../../test/pagedFetch";
import { renderRoutes } from "../../test/renderRoutes";
import { Home } from "./Home";

const runs: RunListItem[] = [
  {
    id: 5, name: "relu2+relu3 push-down", status: "running", model: "fmnist-cnn (demo)", model_id: 1, layers: ["relu2", "relu3"],
    attack_kind: "push_down", created_at: "2026-12-01T10:00:00Z", finished_at: null, headline: {}, job_id: 40, hidden: false,
    attack_outcome: { selected_step: null, final_step: null, selected_is_init: false, final_over_budget: false, budget_pp: 0.5, message: null },
  },
];

function serve(runList: RunListItem[], jobs: unknown[]) {
  mockFetch([
    { path: /^\/api\/v1\/runs$/, body: runList },
    { path: /^\/api\/v1\/jobs$/, body: jobs },
    { path: /^\/api\/v1\/models$/, body: models },
    { path: /^\/api\/v1\/image-sets$/, body: sets },
    { path: /^\/api\/v1\/job-kinds$/, body: kinds },
  ]);
}

function renderHome() {
  render(
    <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
      <MemoryRouter>
        <Home />
      </MemoryRouter>
    </QueryClientProvider>,
  );
}

// tests with many interactions get 15 s (the default 5 s is tight on 2 shared cores)
describe("home page", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("links models to their pages and names the live chain step in the registry's words", async () => {
    serve(runs, [chain.job]);
    renderHome();
    const runRow = (await screen.findByRole("link", { name: "#5 relu2+relu3 push-down" })).closest("tr")!;
    expect(within(runRow).getByRole("link", { name: "fmnist-cnn (demo)" })).toHaveAttribute("href", "/models/1");
    expect(within(runRow).getByText("relu2, relu3")).toBeInTheDocument();
    const modelsPanel = screen.getByRole("region", { name: "Models" });
    expect(await within(modelsPanel).findByRole("link", { name: "fmnist-cnn (demo)" })).toHaveAttribute("href", "/models/1");
    const job = screen.getByRole("link", { name: "job 40: relu2+relu3 push-down" }).closest("li")!;
    expect(await within(job).findByText("step 3/9 scan θ_selected · scan 3/10")).toBeInTheDocument();
    expect(document.title).toBe("Runs · fvaudit");
  });

  it("the jobs heading counts the jobs it lists (issue 13, item 17)", async () => {
    // 13 jobs, 8 of them in progress: all 8 are listed, and the heading says 8, not 6
    const jobs = Array.from({ length: 13 }, (_, i) => ({
      ...chain.job, id: 100 - i, children: [], status: i < 8 ? "running" : "succeeded", spec: { name: `job ${100 - i}` },
    }));
    serve([], jobs);
    renderHome();
    const panel = await screen.findByRole("region", { name: "Recent jobs" });
    expect(within(panel).getByRole("heading")).toHaveTextContent("Jobs 8 in progress · the 8 most recent");
    expect(within(panel).getAllByRole("listitem")).toHaveLength(8);
  });

  // issue 19, item 6: 81 runs on one 5,000-px page became a page of 25 with filters
  const many: RunListItem[] = Array.from({ length: 81 }, (_, i) => ({
    ...runs[0], id: 81 - i, name: `run ${81 - i}`, status: i % 3 ? "succeeded" : "cancelled", job_id: null,
  }));
  function servePaged() {
    return mockPagedFetch([
      {
        path: /^\/api\/v1\/runs$/,
        // the server's paging: limit / offset over the filtered rows, their count in X-Total-Count
        body: (req: Request) => {
          const q = new URL(req.url).searchParams;
          const rows = many.filter((r) => !q.get("status") || r.status === q.get("status"));
          return rows.slice(Number(q.get("offset") ?? 0), Number(q.get("offset") ?? 0) + Number(q.get("limit") ?? 500));
        },
        total: (u) => many.filter((r) => !u.searchParams.get("status") || r.status === u.searchParams.get("status")).length,
      },
      { path: /^\/api\/v1\/runs\/\d+$/, method: "PATCH", body: runs[0] },
      { path: /^\/api\/v1\/runs\/81$/, method: "DELETE", status: 204 },
      { path: /^\/api\/v1\/runs\/80$/, method: "DELETE", status: 409, body: { detail: "run 80 has a job still running (job 412): cancel it first" } },
      { path: /^\/api\/v1\/jobs$/, body: [] },
      { path: /^\/api\/v1\/models$/, body: models, total: 1 },
      { path: /^\/api\/v1\/image-sets$/, body: sets, total: 2 },
      { path: /^\/api\/v1\/job-kinds$/, body: kinds },
    ]);
  }

  it("shows 25 of 81 runs and pages through them with the API's limit/offset", async () => {
    const { calls } = servePaged();
    const user = userEvent.setup();
    renderRoutes("/", { "/": <Home /> });
    const panel = await screen.findByRole("region", { name: "Runs" });
    await within(panel).findByRole("link", { name: "#81 run 81" });
    expect(within(panel).getAllByRole("row")).toHaveLength(26); // the header and 25 runs
    expect(within(panel).getByRole("navigation", { name: "Pages of runs" })).toHaveTextContent("1–25 of 81");
    expect(within(panel).getByRole("heading")).toHaveTextContent("Runs 81 in all");
    await user.click(within(panel).getByRole("button", { name: "last »" }));
    await within(panel).findByRole("link", { name: "#6 run 6" });
    expect(getsTo(calls, "/api/v1/runs").at(-1)!.get("offset")).toBe("75");
    expect(within(panel).getAllByRole("row")).toHaveLength(7);
    expect(screen.getByTestId("where")).toHaveTextContent("/?offset=75");
  });

  it("status, model, name and hidden filters go into the request, from the first page", async () => {
    const { calls } = servePaged();
    const user = userEvent.setup();
    renderRoutes("/?offset=25", { "/": <Home /> });
    const panel = await screen.findByRole("region", { name: "Runs" });
    await within(panel).findByRole("link", { name: "#56 run 56" });
    await user.selectOptions(within(panel).getByRole("combobox", { name: "Status" }), "cancelled");
    await within(panel).findByText("27 matching");
    let q = getsTo(calls, "/api/v1/runs").at(-1)!;
    expect([q.get("status"), q.get("offset"), q.get("limit")]).toEqual(["cancelled", "0", "25"]);
    await user.selectOptions(within(panel).getByRole("combobox", { name: "Model" }), "1");
    await waitFor(() => expect(getsTo(calls, "/api/v1/runs").at(-1)!.get("model_id")).toBe("1"));
    await user.type(within(panel).getByRole("searchbox", { name: "Run name contains" }), "run 7{Enter}");
    await waitFor(() => expect(getsTo(calls, "/api/v1/runs").at(-1)!.get("q")).toBe("run 7"));
    await user.click(within(panel).getByRole("checkbox", { name: "show hidden" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/runs").at(-1)!.get("include_hidden")).toBe("true"));
    q = getsTo(calls, "/api/v1/runs").at(-1)!;
    expect([q.get("status"), q.get("model_id"), q.get("q")]).toEqual(["cancelled", "1", "run 7"]);
    expect(screen.getByTestId("where")).toHaveTextContent("/?status=cancelled&model=1&q=run+7&hidden=1");
  });

  it("hides a run, deletes one after the confirmation, and shows why one cannot be deleted", async () => {
    const { calls } = servePaged();
    const user = userEvent.setup();
    renderRoutes("/", { "/": <Home />, "/runs/:run": <p>run page</p> });
    await user.click(await screen.findByRole("button", { name: "Hide run 79 (run 79)" }));
    await waitFor(() => expect(calls.filter((c) => c.method === "PATCH")).toEqual([{ method: "PATCH", url: "/api/v1/runs/79", body: { hidden: true } }]));
    // the row's buttons do not open the run
    expect(screen.queryByText("run page")).toBeNull();
    await user.click(screen.getByRole("button", { name: "Delete run 81 (run 81)" }));
    const dialog = screen.getByRole("dialog", { name: "Delete run 81 (run 81)?" });
    expect(dialog).toHaveTextContent("its unit results, synthetic images and share links");
    expect(calls.filter((c) => c.method === "DELETE")).toHaveLength(0);
    await user.click(within(dialog).getByRole("button", { name: "Delete run 81" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    await user.click(screen.getByRole("button", { name: "Delete run 80 (run 80)" }));
    await user.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Delete run 80" }));
    expect(await within(screen.getByRole("dialog")).findByRole("alert")).toHaveTextContent("run 80 has a job still running (job 412): cancel it first");
    expect(calls.filter((c) => c.method === "DELETE").map((c) => c.url)).toEqual(["/api/v1/runs/81", "/api/v1/runs/80"]);
  });

  it("marks a run whose selected state is θ_init, with the server's words as its tooltip (issue 19, item 2)", async () => {
    const message = "No evaluated state stayed within the 0.5 pp accuracy budget: the selected state is θ_init.";
    const init = { ...runs[0], id: 6, name: "demo", status: "succeeded" as const, attack_outcome: { ...runs[0].attack_outcome, selected_is_init: true, message } };
    serve([init, runs[0]], []);
    renderHome();
    const row = (await screen.findByRole("link", { name: "#6 demo" })).closest("tr")!;
    expect(within(row).getByTestId("selected-is-init")).toHaveTextContent("selected = θ_init");
    expect(within(row).getByTestId("selected-is-init")).toHaveAttribute("title", message);
    expect(within(screen.getByRole("link", { name: "#5 relu2+relu3 push-down" }).closest("tr")!).queryByTestId("selected-is-init")).toBeNull();
  });
});
