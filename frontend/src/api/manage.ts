// Lists with filters and pagination, and the hide / delete of runs, models, image sets and
// sweeps (issue 19, item 6; the contract in /work/notes/api_contract.md). Lists keep their
// JSON array shape; the count before limit/offset is the `X-Total-Count` header, which the
// typed client does not surface, so these requests read the Response themselves (with the
// same credentials as the client). Query keys start with the list's name ("runs",
// "models", …), so what invalidates a list elsewhere (a launch, a cancel) refreshes these too.
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useToken } from "./auth";
import { authHeaders, fetchOk, type ImageSetOut, type Job, type ModelOut, type RunListItem } from "./client";

/**
 * A model as `GET /models` lists it: its status ("pending": a pruned model whose prune step
 * has not produced weights; "failed") with the reason, hidden, and what derives from it.
 */
export type ManagedModel = ModelOut;
export type ModelStatus = NonNullable<ModelOut["status"]>;
export type ManagedSet = ImageSetOut;
export type ManagedRun = RunListItem;

/** A model a form can use: ready (a server from before issue 19 sends no status: its models are all ready) and not hidden. */
export const modelUsable = (m: ManagedModel) => (m.status ?? "ready") === "ready" && !m.hidden;
export const setUsable = (s: ManagedSet) => (s.status ?? "ready") === "ready" && s.size > 0 && !s.hidden;

/** One page of a list and the count of all its rows (`X-Total-Count`; the page's length when the header is absent). */
export type Page<T> = { items: T[]; total: number };

type Query = Record<string, string | number | boolean | null | undefined>;

function url(path: string, query: Query = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return `/api/v1${path}${s ? `?${s}` : ""}`;
}

/** A request of the API with the page's credentials: the Response, or an ApiError with the server's detail. */
async function call(method: string, path: string, opts: { query?: Query; body?: unknown } = {}): Promise<Response> {
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

const who = (token: string | null) => (token ? token.slice(0, 12) : null);

export const PAGE_SIZE = 25;

export type RunFilters = {
  status?: string;
  model_id?: number | null;
  q?: string;
  include_hidden?: boolean;
  limit?: number;
  offset?: number;
};

const live = (rows: { status: string }[] | undefined) => rows?.some((r) => r.status === "queued" || r.status === "running");

/** `GET /runs` with its filters, one page. */
export function useRunsPage(f: RunFilters) {
  const token = useToken();
  return useQuery({
    queryKey: ["runs", "page", f, who(token)],
    queryFn: () => getPage<ManagedRun>("/runs", { limit: PAGE_SIZE, offset: 0, ...f, include_hidden: f.include_hidden || undefined }),
    enabled: !!token,
    placeholderData: keepPreviousData,
    refetchInterval: (q) => (live(q.state.data?.items) ? 3000 : false),
  });
}

/**
 * Runs a picker offers (compare, …): finished ones by default; cancelled and failed runs
 * (nothing or half measured) only when `all`. Queued and running runs stay (they finish).
 */
export function usePickableRuns(all = false) {
  const token = useToken();
  return useQuery({
    queryKey: ["runs", "pickable", all, who(token)],
    queryFn: async () => {
      const page = await getPage<ManagedRun>("/runs", { limit: 500 });
      return all ? page.items : page.items.filter((r) => r.status !== "cancelled" && r.status !== "failed");
    },
    enabled: !!token,
  });
}

export type ListFilters = { q?: string; include_hidden?: boolean; usable?: boolean; limit?: number; offset?: number };

export function useModelsPage(f: ListFilters) {
  const token = useToken();
  return useQuery({
    queryKey: ["models", "page", f, who(token)],
    queryFn: () => getPage<ManagedModel>("/models", { limit: PAGE_SIZE, offset: 0, ...f, include_hidden: f.include_hidden || undefined }),
    enabled: !!token,
    placeholderData: keepPreviousData,
  });
}

export function useImageSetsPage(f: ListFilters) {
  const token = useToken();
  return useQuery({
    queryKey: ["image-sets", "page", f, who(token)],
    queryFn: () => getPage<ManagedSet>("/image-sets", { limit: PAGE_SIZE, offset: 0, ...f, include_hidden: f.include_hidden || undefined }),
    enabled: !!token,
    placeholderData: keepPreviousData,
    refetchInterval: (q) => (q.state.data?.items.some((s) => s.status === "indexing") ? 3000 : false),
  });
}

/**
 * The models a form can pick (`usable=true`: ready, not hidden). The filter is applied here
 * too, so a server that ignores the parameter still never offers a pending model.
 */
export function useUsableModels(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["models", "usable", who(token)],
    queryFn: async () => (await getPage<ManagedModel>("/models", { usable: true, limit: 500 })).items.filter(modelUsable),
    enabled: enabled && !!token,
    staleTime: 60_000,
  });
}

/**
 * Every model, hidden ones too (`GET /models` leaves them out by default): for naming a model
 * a run, a detection or an attack result refers to, which stays valid when the model is hidden.
 */
export function useAllModels(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["models", "all", who(token)],
    queryFn: async () => (await getPage<ManagedModel>("/models", { include_hidden: true, limit: 1000 })).items,
    enabled: enabled && !!token,
    staleTime: 60_000,
  });
}

/** The image sets a form can pick (`usable=true`: indexed, not empty, not hidden). */
export function useUsableImageSets(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["image-sets", "usable", who(token)],
    queryFn: async () => (await getPage<ManagedSet>("/image-sets", { usable: true, limit: 500 })).items.filter(setUsable),
    enabled: enabled && !!token,
    staleTime: 60_000,
  });
}

export type JobFilters = { kind?: string; status?: string; limit?: number; offset?: number };

/** Top-level jobs (no chain steps), newest first. */
export function useJobsPage(f: JobFilters) {
  const token = useToken();
  return useQuery({
    queryKey: ["jobs", "page", f, who(token)],
    queryFn: () => getPage<Job>("/jobs", { top_level: true, limit: PAGE_SIZE, offset: 0, ...f }),
    enabled: !!token,
    placeholderData: keepPreviousData,
    refetchInterval: (q) => (live(q.state.data?.items) ? 3000 : false),
  });
}

/** What can be hidden and deleted, by its path under /api/v1 and the query keys that show it. */
export type Managed = "runs" | "models" | "image-sets" | "sweeps";
const DETAIL_KEY: Record<Managed, string> = { runs: "run", models: "model", "image-sets": "image-set", sweeps: "sweep" };

function useInvalidate(what: Managed) {
  const qc = useQueryClient();
  return (id: number) => {
    qc.invalidateQueries({ queryKey: [what] });
    qc.invalidateQueries({ queryKey: [DETAIL_KEY[what], id] });
    // a deleted run or model changes the model usage counts, a deleted sweep its runs and models
    if (what !== "image-sets") qc.invalidateQueries({ queryKey: ["models"] });
    if (what === "sweeps" || what === "models") qc.invalidateQueries({ queryKey: ["runs"] });
    qc.invalidateQueries({ queryKey: ["jobs"] });
  };
}

/** `PATCH /{what}/{id} {"hidden": …}`: hidden rows leave lists and pickers, and stay reachable by address. */
export function useSetHidden(what: Managed) {
  const done = useInvalidate(what);
  return useMutation({
    mutationFn: async ({ id, hidden }: { id: number; hidden: boolean }) => {
      await call("PATCH", `/${what}/${id}`, { body: { hidden } });
      return id;
    },
    onSuccess: done,
  });
}

/** `DELETE /{what}/{id}`: 204, or 409 with the reason in words (something derives from it, it is still running). */
export function useDelete(what: Managed) {
  const done = useInvalidate(what);
  return useMutation({
    mutationFn: async (id: number) => {
      await call("DELETE", `/${what}/${id}`);
      return id;
    },
    onSuccess: done,
  });
}
