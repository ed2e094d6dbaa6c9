// Lists with filters and pagination (issue 19, item 6): lists keep their JSON array shape;
// the count before limit/offset is the `X-Total-Count` header, which the typed client does
// not surface, so these requests read the Response themselves (with the client's credentials).
import { keepPreviousData, queryOptions } from "@tanstack/react-query";
import { authHeaders, fetchOk } from "../client";
import { queryKey, type Viewer } from "./viewer";

/** One page of a list and the count of all its rows (`X-Total-Count`; the page's length when the header is absent). */
export type Page<T> = { items: T[]; total: number };

export type Query = Record<string, string | number | boolean | null | undefined>;

export const PAGE_SIZE = 25;

function url(path: string, query: Query = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return `/api/v1${path}${s ? `?${s}` : ""}`;
}

/** A request of the API with the page's credentials: the Response, or an ApiError with the server's detail. */
export async function call(method: string, path: string, opts: { query?: Query; body?: unknown } = {}): Promise<Response> {
  const headers: Record<string, string> = { ...authHeaders() };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  return fetchOk(url(path, opts.query), {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
}

export async function getPage<T>(path: string, query: Query): Promise<Page<T>> {
  const res = await call("GET", path, { query });
  const items = (await res.json()) as T[];
  const header = res.headers.get("X-Total-Count");
  const total = header != null && /^\d+$/.test(header) ? Number(header) : (Number(query.offset) || 0) + items.length;
  return { items, total };
}

/** The query of page `f` of a list: the first page by default, hidden rows only when asked. */
const pageQuery = (f: Query & { include_hidden?: boolean }): Query => ({ limit: PAGE_SIZE, offset: 0, ...f, include_hidden: f.include_hidden || undefined });

/**
 * One page of the list `GET /<resource>` with its filters (asked for only with a token), the
 * last page kept on screen while the next one loads; `extra` adds to the request's query.
 */
export const listPage = <T>(v: Viewer, resource: string, f: Query & { include_hidden?: boolean }, extra: Query = {}) =>
  queryOptions({
    queryKey: queryKey(v, resource, "page", f),
    queryFn: () => getPage<T>(`/${resource}`, { ...extra, ...pageQuery(f) }),
    enabled: !!v.token,
    placeholderData: keepPreviousData,
  });
