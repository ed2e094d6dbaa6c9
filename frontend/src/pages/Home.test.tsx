// The home page links every model to its page (runs table and models table) and names
// a running chain's step from the job-kind registry.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen, within } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../api/auth";
import type { RunListItem } from "../api/client";
import chain from "../test/fixtures/job-chain.json";
import kinds from "../test/fixtures/job-kinds.json";
import models from "../test/fixtures/models.json";
import sets from "../test/fixtures/image-sets.json";
import { mockFetch } from "../test/fetchMock";
import { Home } from "./Home";

const runs: RunListItem[] = [
  {
    id: 5, name: "relu2+relu3 push-down", status: "running", model: "fmnist-cnn (demo)", model_id: 1, layers: ["relu2", "relu3"],
    attack_kind: "push_down", created_at: "2026-12-01T10:00:00Z", finished_at: null, headline: {}, job_id: 40,
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
});
