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

describe("home page", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("links models to their pages and names the live chain step in the registry's words", async () => {
    mockFetch([
      { path: /^\/api\/v1\/runs$/, body: runs },
      { path: /^\/api\/v1\/jobs$/, body: [chain.job] },
      { path: /^\/api\/v1\/models$/, body: models },
      { path: /^\/api\/v1\/image-sets$/, body: sets },
      { path: /^\/api\/v1\/job-kinds$/, body: kinds },
    ]);
    render(
      <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
        <MemoryRouter>
          <Home />
        </MemoryRouter>
      </QueryClientProvider>,
    );
    const runRow = (await screen.findByRole("link", { name: "#5 relu2+relu3 push-down" })).closest("tr")!;
    expect(within(runRow).getByRole("link", { name: "fmnist-cnn (demo)" })).toHaveAttribute("href", "/models/1");
    expect(within(runRow).getByText("relu2, relu3")).toBeInTheDocument();
    const modelsPanel = screen.getByRole("region", { name: "Models" });
    expect(await within(modelsPanel).findByRole("link", { name: "fmnist-cnn (demo)" })).toHaveAttribute("href", "/models/1");
    const job = screen.getByRole("link", { name: "job 40: relu2+relu3 push-down" }).closest("li")!;
    expect(await within(job).findByText("step 3/9 scan θ_selected · scan 3/10")).toBeInTheDocument();
    expect(document.title).toBe("Runs · fvaudit");
  });
});
