// mockFetch with the `X-Total-Count` header of paginated lists: a route's `total` (a number, or
// a function of the request's URL) is sent as that header, as the API does for its lists.
import { vi } from "vitest";
import { mockFetch, type Route } from "./fetchMock";

export type PagedRoute = Route & { total?: number | ((url: URL) => number) };

export function mockPagedFetch(routes: PagedRoute[]) {
  const m = mockFetch(routes);
  const inner = m.fn;
  const outer = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = input instanceof Request ? input : new Request(new URL(String(input), "http://localhost:3000"), init);
    const res = await inner(req.clone());
    const url = new URL(req.url);
    const route = routes.find((r) => url.pathname.match(r.path) && (r.method ?? "GET") === req.method);
    if (route?.total === undefined) return res;
    const headers = new Headers(res.headers);
    headers.set("X-Total-Count", String(typeof route.total === "function" ? route.total(url) : route.total));
    return new Response(res.body, { status: res.status, headers });
  });
  vi.stubGlobal("fetch", outer);
  return { ...m, fn: outer };
}

/** The GET requests to a path, as "path?query" strings. */
export function getsTo(calls: { method: string; url: string }[], path: string): URLSearchParams[] {
  return calls.filter((c) => c.method === "GET" && c.url.split("?")[0] === path).map((c) => new URLSearchParams(c.url.split("?")[1] ?? ""));
}
