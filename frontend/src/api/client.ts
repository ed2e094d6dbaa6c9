// Typed client of the fvaudit API (paths and shapes generated from the backend's OpenAPI).
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";
import { currentShare, getToken } from "./auth";

export type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type RunListItem = Schemas["RunListItem"];
export type RunDetail = Schemas["RunDetail"];
export type UnitRow = Schemas["UnitRow"];
export type UnitPage = Schemas["UnitPage"];
export type UnitDetail = Schemas["UnitDetail"];
export type Img = Schemas["Img"];
export type ModelOut = Schemas["ModelOut"];
export type LayerOut = Schemas["LayerOut"];
export type ImageSetOut = Schemas["ImageSetOut"];
export type AttackParams = Schemas["AttackParams"];
export type JobStatus = Job["status"];
export type ValidationItem = Schemas["ValidationError"];

export const API = "/api/v1";

/** An API failure with a message that says what to do. */
export class ApiError extends Error {
  status: number;
  detail: unknown;
  constructor(status: number, detail: unknown, message?: string) {
    super(message ?? describe(status, detail));
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
  /** FastAPI 422 items ({loc, msg, type}), or [] */
  get fieldErrors(): ValidationItem[] {
    return this.status === 422 && Array.isArray(this.detail) ? (this.detail as ValidationItem[]) : [];
  }
}

function detailText(detail: unknown): string {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail))
    return detail
      .map((d) => {
        const item = d as { loc?: unknown[]; msg?: string };
        const loc = (item.loc ?? []).filter((p) => p !== "body").join(".");
        return loc ? `${loc}: ${item.msg}` : String(item.msg);
      })
      .join("; ");
  return detail == null ? "" : JSON.stringify(detail);
}

export function describe(status: number, detail: unknown): string {
  const text = detailText(detail);
  switch (status) {
    case 0:
      return `Cannot reach the fvaudit server${text ? ` (${text})` : ""}. Check that it is running (make demo, or fvaudit serve) and reload.`;
    case 401:
      return `${text || "Not authenticated"}. Enter a valid API token (the key button at the top right); the demo prints one at start.`;
    case 403:
      return `${text || "Forbidden"}. This view is read-only; sign in with an API token to change anything.`;
    case 404:
      return `${text || "Not found"}. It may not exist, or it is not shared with you: check the link, or enter an API token that owns it.`;
    case 413:
      return text || "The upload is too large.";
    case 422:
      return `The server refused the request: ${text}`;
    default:
      if (status >= 500) return `The server failed (${status})${text ? `: ${text}` : ""}. Try again; if it persists, check the server log.`;
      return text || `Request failed (${status})`;
  }
}

const auth: Middleware = {
  onRequest({ request }) {
    const token = getToken();
    if (token && !request.headers.has("Authorization")) request.headers.set("Authorization", `Bearer ${token}`);
    const share = currentShare();
    if (share && !request.headers.has("X-Share-Token")) request.headers.set("X-Share-Token", share);
    return request;
  },
  async onResponse({ request, response }) {
    // a shared view with a stale token in this browser: the share link alone is enough to read
    if (response.status === 401 && request.method === "GET" && request.headers.has("X-Share-Token") && request.headers.has("Authorization")) {
      const retry = new Request(request);
      retry.headers.delete("Authorization");
      return globalThis.fetch(retry);
    }
    return response;
  },
};

// fetch resolved per call (not captured at creation), so tests can stub globalThis.fetch
export const client = createClient<paths>({
  baseUrl: typeof window !== "undefined" ? window.location.origin : "",
  fetch: (req: Request) => globalThis.fetch(req) });
client.use(auth);

/** Turn openapi-fetch's {data, error, response} into data or a thrown ApiError. */
export async function unwrap<T>(p: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  let res: { data?: T; error?: unknown; response: Response };
  try {
    res = await p;
  } catch (e) {
    throw new ApiError(0, e instanceof Error ? e.message : String(e));
  }
  if (res.response.ok) return res.data as T;
  const err = res.error as { detail?: unknown } | string | undefined;
  const detail = typeof err === "object" && err && "detail" in err ? err.detail : err;
  throw new ApiError(res.response.status, detail);
}

/** Headers for a hand-made request (downloads, images behind auth). */
export function authHeaders(): Record<string, string> {
  const h: Record<string, string> = {};
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  const share = currentShare();
  if (share) h["X-Share-Token"] = share;
  return h;
}

/** fetch() that turns a network failure (status 0) or a non-2xx answer (the server's detail) into an ApiError. */
export async function fetchOk(url: string, init: RequestInit = {}): Promise<Response> {
  let res: Response;
  try {
    res = await globalThis.fetch(url, init);
  } catch (e) {
    throw new ApiError(0, e instanceof Error ? e.message : String(e));
  }
  if (!res.ok) {
    let detail: unknown = res.statusText;
    try {
      detail = (await res.json()).detail;
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, detail);
  }
  return res;
}

/** Fetch a URL of the API with credentials and save it as a file. */
export async function download(url: string, filename: string): Promise<void> {
  const res = await fetchOk(url, { headers: authHeaders() });
  const blob = await res.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** Every status a job (and the run, sweep or detection it makes) can have, in the order of its life. */
export const STATUSES: JobStatus[] = ["queued", "running", "succeeded", "failed", "cancelled"];
export const TERMINAL: JobStatus[] = ["succeeded", "failed", "cancelled"];
export const isTerminal = (s: string | undefined | null) => !!s && (TERMINAL as string[]).includes(s);

type HasStatus = { status?: string | null } | string | null | undefined;
const statusOf = (x: HasStatus) => (typeof x === "string" ? x : x?.status);

/** Whether a job (or a run, a sweep, a detection: anything with a job's status) is still live: queued or running. */
export const isLive = (x: HasStatus) => {
  const s = statusOf(x);
  return s === "queued" || s === "running";
};

/** Whether any row of a list is live (the list polls while one is). */
export const anyLive = (rows: HasStatus[] | undefined) => !!rows?.some(isLive);
