// One key convention (issue 20, item 6): a shared view and a signed-in view of the same
// address never share a cache entry, so neither shows what the other was allowed to read.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { renderHook, waitFor } from "@testing-library/react";
import type { ReactNode } from "react";
import { afterEach, describe, expect, it } from "vitest";
import { mockFetch } from "../../test/fetchMock";
import { detectionQueries, imageSetQueries, jobQueries, modelQueries, runQueries, shareQueries, sweepQueries, useRun } from ".";
import { setToken } from "../auth";
import type { Viewer } from "./viewer";

const at = (path: string) => window.history.replaceState(null, "", path);

describe("query keys carry the viewer", () => {
  afterEach(() => at("/"));

  it("a run opened through a share link and the same run signed in are two cache entries, each fetched with its own credentials", async () => {
    const { calls } = mockFetch([
      {
        path: /^\/api\/v1\/runs\/3$/,
        body: (req: Request) => ({ id: 3, name: req.headers.has("X-Share-Token") ? "as shared" : "as signed in", status: "succeeded" }),
      },
    ]);
    const qc = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    const wrapper = ({ children }: { children: ReactNode }) => <QueryClientProvider client={qc}>{children}</QueryClientProvider>;

    at("/runs/3?share=shr_abc");
    const shared = renderHook(() => useRun(3), { wrapper });
    await waitFor(() => expect(shared.result.current.data?.name).toBe("as shared"));
    shared.unmount();

    at("/runs/3");
    setToken("fva_signed_in_0123456789");
    const signedIn = renderHook(() => useRun(3), { wrapper });
    await waitFor(() => expect(signedIn.result.current.data?.name).toBe("as signed in"));

    expect(calls.filter((c) => c.url === "/api/v1/runs/3")).toHaveLength(2);
    expect(qc.getQueryCache().findAll({ queryKey: ["run", 3] })).toHaveLength(2);
  });

  it("every resource's key differs between a shared and a signed-in viewer, and starts with the resource's name", () => {
    const shared: Viewer = { token: null, share: "shr_abc" };
    const signedIn: Viewer = { token: "fva_signed_in_0123456789", share: null };
    const both: Viewer = { token: "fva_signed_in_0123456789", share: "shr_abc" };
    const factories: [string, (v: Viewer) => { queryKey: readonly unknown[] }][] = [
      ["run", (v) => runQueries.detail(v, 3)],
      ["units", (v) => runQueries.units(v, 3, "relu3", { sort: "unit", order: "asc", page: 1, page_size: 50, attacked_only: false })],
      ["unit", (v) => runQueries.unit(v, 3, "relu3", 7, "selected")],
      ["model", (v) => modelQueries.detail(v, 1)],
      ["image-sets", (v) => imageSetQueries.usable(v, true)],
      ["job", (v) => jobQueries.detail(v, 12, false)],
      ["sweep", (v) => sweepQueries.detail(v, 5)],
      ["sweeps", (v) => sweepQueries.list(v, false)],
      ["detection", (v) => detectionQueries.detail(v, 9)],
      ["detection-unit", (v) => detectionQueries.unit(v, 9, "relu3", 7)],
      ["shares", (v) => shareQueries.list(v, 3, true)],
    ];
    for (const [name, make] of factories) {
      const keys = [shared, signedIn, both].map((v) => JSON.stringify(make(v).queryKey));
      expect(new Set(keys).size, name).toBe(3);
      expect(make(shared).queryKey[0], name).toBe(name);
    }
  });
});
