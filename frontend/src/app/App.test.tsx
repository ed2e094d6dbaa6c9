// An address the dashboard does not know: a page that says so, with a title that names it.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { describe, expect, it } from "vitest";
import { setToken } from "../api/auth";
import { mockFetch } from "../test/fetchMock";
import sets from "../test/fixtures/image-sets.json";
import sweepKind from "../test/fixtures/job-kind-sweep.json";
import kinds from "../test/fixtures/job-kinds.json";
import models from "../test/fixtures/models.json";
import { AppRoutes } from "./App";

/** The whole app's routes at an address, as main.tsx mounts them (a memory router, no retries). */
function renderApp(path: string) {
  return render(
    <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
      <MemoryRouter initialEntries={[path]}>
        <AppRoutes />
      </MemoryRouter>
    </QueryClientProvider>,
  );
}

describe("routes", () => {
  it("an unknown address is a not-found page titled so (issue 13, item 17)", async () => {
    mockFetch([{ path: /^\/api\/v1\/health$/, body: { status: "ok", database: "ok", broker: "ok", mode: "service", version: "0" } }]);
    renderApp("/no/such/page");
    expect(screen.getByRole("heading", { name: "No such page" })).toBeInTheDocument();
    await waitFor(() => expect(document.title).toBe("No such page · fvaudit"));
  });

  it("the index pages and the sweep form have their addresses and a link in the main navigation (issue 19)", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([
      { path: /^\/api\/v1\/health$/, body: { status: "ok", database: "ok", broker: "ok", mode: "service", version: "0" } },
      { path: /^\/api\/v1\/me$/, body: { user: "u", is_admin: false } },
      { path: /^\/api\/v1\/(models|image-sets|jobs|runs|sweeps)$/, body: (_r: Request, m: RegExpMatchArray) => ({ models, "image-sets": sets })[m[1]] ?? [] },
      { path: /^\/api\/v1\/job-kinds$/, body: [...kinds, sweepKind] },
    ]);
    const pages: [string, string][] = [["/models", "Models"], ["/image-sets", "Image sets"], ["/jobs", "Jobs"], ["/sweeps/new", "Launch a sweep"], ["/sweeps", "Sweeps"]];
    for (const [path, heading] of pages) {
      const { unmount } = renderApp(path);
      expect(await screen.findByRole("heading", { level: 1, name: heading })).toBeInTheDocument();
      const nav = screen.getByRole("navigation", { name: "Main" });
      expect([...nav.querySelectorAll("a")].map((a) => a.getAttribute("href"))).toEqual([
        "/", "/models", "/image-sets", "/jobs", "/launch", "/register", "/compare", "/sweeps", "/sweeps/new", "/detections", "/search",
      ]);
      if (path === "/sweeps/new") expect(nav.querySelector('a[aria-current="page"]')).toHaveTextContent("New sweep");
      // the sweeps list links to the form
      if (path === "/sweeps") expect(screen.getByRole("link", { name: "+ Launch a sweep" })).toHaveAttribute("href", "/sweeps/new");
      unmount();
    }
  });

  it("the header's label search opens /search?q= (issue 22)", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([
      { path: /^\/api\/v1\/health$/, body: { status: "ok", database: "ok", broker: "ok", mode: "service", version: "0" } },
      { path: /^\/api\/v1\/me$/, body: { user: "u", is_admin: false } },
      { path: /^\/api\/v1\/models$/, body: models },
      { path: /^\/api\/v1\/units$/, body: [] },
    ]);
    const user = userEvent.setup();
    renderApp("/models");
    await screen.findByRole("heading", { level: 1, name: "Models" });
    await user.type(screen.getByRole("searchbox", { name: "Search unit labels" }), "ankle b{Enter}");
    expect(await screen.findByRole("heading", { level: 1, name: "Search unit labels" })).toBeInTheDocument();
    expect(screen.getByRole("searchbox", { name: "Unit label starts with" })).toHaveValue("ankle b");
    // on the search page, its own box is the one
    expect(screen.queryByRole("searchbox", { name: "Search unit labels" })).toBeNull();
    expect(await screen.findByText(/No unit labelled “ankle b…”/)).toBeInTheDocument();
  });

  it("one guard: a page that needs a token asks for one, a run opened through a share link does not (issue 20)", async () => {
    mockFetch([
      { path: /^\/api\/v1\/health$/, body: { status: "ok", database: "ok", broker: "ok", mode: "service", version: "0" } },
      { path: /^\/api\/v1\/runs\/3$/, respond: () => ({ status: 404, body: { detail: "run 3 not found" } }) },
    ]);
    for (const [path, signIn] of [["/", true], ["/jobs/12", true], ["/models/1/layers/relu3/units/7", true], ["/sweeps", true], ["/sweeps/4", true], ["/runs/3", true], ["/runs/3?share=shr_abc", false]] as const) {
      const { unmount } = renderApp(path);
      expect(screen.queryAllByRole("heading", { name: "Sign in with an API token" }), path).toHaveLength(signIn ? 1 : 0);
      unmount();
    }
  });
});
