// An address the dashboard does not know: a page that says so, with a title that names it.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen, waitFor } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { describe, expect, it } from "vitest";
import { AppRoutes } from "./App";
import { mockFetch } from "./test/fetchMock";

describe("routes", () => {
  it("an unknown address is a not-found page titled so (issue 13, item 17)", async () => {
    mockFetch([{ path: /^\/api\/v1\/health$/, body: { status: "ok", database: "ok", broker: "ok", mode: "service", version: "0" } }]);
    render(
      <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
        <MemoryRouter initialEntries={["/no/such/page"]}>
          <AppRoutes />
        </MemoryRouter>
      </QueryClientProvider>,
    );
    expect(screen.getByRole("heading", { name: "No such page" })).toBeInTheDocument();
    await waitFor(() => expect(document.title).toBe("No such page · fvaudit"));
  });
});
