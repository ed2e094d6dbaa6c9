// A tiny fetch router for component tests: fixture responses by method + path.
import { vi } from "vitest";

export type Route = {
  method?: string;
  path: RegExp;
  status?: number;
  body?: unknown | ((req: Request, m: RegExpMatchArray) => unknown);
  /** per-call status and body (wins over status/body) */
  respond?: (req: Request, m: RegExpMatchArray) => { status: number; body?: unknown };
};

/** A request body as JSON, or its text (a multipart upload). */
const parsed = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
};

export function mockFetch(routes: Route[]) {
  const calls: { method: string; url: string; body: unknown }[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = input instanceof Request ? input : new Request(new URL(String(input), "http://localhost:3000"), init);
    const url = new URL(req.url);
    const text = req.method === "GET" || req.method === "HEAD" ? "" : await req.clone().text();
    calls.push({ method: req.method, url: url.pathname + url.search, body: text ? parsed(text) : undefined });
    for (const r of routes) {
      const m = url.pathname.match(r.path);
      if (m && (r.method ?? "GET") === req.method) {
        const out = r.respond
          ? r.respond(req, m)
          : { status: r.status ?? 200, body: typeof r.body === "function" ? (r.body as (q: Request, m: RegExpMatchArray) => unknown)(req, m) : r.body };
        return new Response(out.body === undefined || out.status === 204 ? null : JSON.stringify(out.body), {
          status: out.status,
          headers: { "Content-Type": "application/json" },
        });
      }
    }
    return new Response(JSON.stringify({ detail: `no fixture for ${req.method} ${url.pathname}` }), { status: 404, headers: { "Content-Type": "application/json" } });
  });
  vi.stubGlobal("fetch", fn);
  return { fn, calls };
}
