// Runs: the list (a page, the pickers' list), one run, its units, one unit.
// A run, its units and a unit are readable through a share link: no token needed for those.
import { keepPreviousData, queryOptions, useQuery } from "@tanstack/react-query";
import { anyLive, client, isLive, unwrap, type RunListItem } from "../client";
import { getPage, listPage } from "./request";
import { queryKey, retryUnless, useViewer, type Viewer } from "./viewer";

export type RunFilters = {
  status?: string;
  model_id?: number | null;
  q?: string;
  include_hidden?: boolean;
  limit?: number;
  offset?: number;
};

export type UnitQuery = {
  sort: "unit" | "clip_delta" | "kendall_tau" | "clip_w" | "kendall_tau_w" | "topk_overlap";
  order: "asc" | "desc";
  page: number;
  page_size: number;
  attacked_only: boolean;
};

/** Which trained state a unit page shows as "after": the selected one (within the accuracy budget) or the final one. */
export type UnitState = "selected" | "final";

const unitsOf = (runId: number, layer: string, query: Partial<UnitQuery>) =>
  unwrap(client.GET("/api/v1/runs/{run_id}/layers/{layer}/units", { params: { path: { run_id: runId, layer }, query } }));

export const runQueries = {
  /** `GET /runs` with its filters, one page. */
  page: (v: Viewer, f: RunFilters) =>
    queryOptions({ ...listPage<RunListItem>(v, "runs", f), refetchInterval: (q) => (anyLive(q.state.data?.items) ? 3000 : false) }),
  /**
   * Runs a picker offers (compare, …): finished ones by default; cancelled and failed runs
   * (nothing or half measured) only when `all`. Queued and running runs stay (they finish).
   */
  pickable: (v: Viewer, all: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "runs", "pickable", all),
      queryFn: async () => {
        const page = await getPage<RunListItem>("/runs", { limit: 500 });
        return all ? page.items : page.items.filter((r) => r.status !== "cancelled" && r.status !== "failed");
      },
      enabled: !!v.token,
    }),
  detail: (v: Viewer, id: number) =>
    queryOptions({
      queryKey: queryKey(v, "run", id),
      queryFn: () => unwrap(client.GET("/api/v1/runs/{run_id}", { params: { path: { run_id: id } } })),
      enabled: id > 0,
      retry: retryUnless(404, 401),
      refetchInterval: (q) => (isLive(q.state.data) ? 3000 : false),
    }),
  units: (v: Viewer, runId: number, layer: string | undefined, q: UnitQuery, enabled = true) =>
    queryOptions({
      queryKey: queryKey(v, "units", runId, layer, q),
      queryFn: () => unitsOf(runId, layer!, q),
      enabled: enabled && runId > 0 && !!layer,
      placeholderData: keepPreviousData,
    }),
  /** Every unit row of a layer (pages of 1000), for comparisons. */
  allUnits: (v: Viewer, runId: number | null, layer: string | undefined) =>
    queryOptions({
      queryKey: queryKey(v, "all-units", runId, layer),
      queryFn: async () => {
        const rows = [];
        for (let page = 1; ; page++) {
          const res = await unitsOf(runId!, layer!, { page, page_size: 1000, sort: "unit" });
          rows.push(...res.items);
          if (rows.length >= res.total || res.items.length === 0) break;
        }
        return rows;
      },
      enabled: !!runId && !!layer,
    }),
  /**
   * One unit of a run; `state` picks the "after" side (`?state=`, issue 19 item 3). The
   * selected state is the API's default, so it is not sent.
   */
  unit: (v: Viewer, runId: number, layer: string, unit: number, state: UnitState) =>
    queryOptions({
      queryKey: queryKey(v, "unit", runId, layer, unit, state),
      queryFn: () =>
        unwrap(
          client.GET("/api/v1/runs/{run_id}/layers/{layer}/units/{unit}", {
            params: { path: { run_id: runId, layer, unit }, query: state === "final" ? { state } : {} },
          }),
        ),
      enabled: runId > 0 && !!layer && unit >= 0,
      placeholderData: keepPreviousData,
      retry: retryUnless(404),
    }),
};

export const useRunsPage = (f: RunFilters) => useQuery(runQueries.page(useViewer(), f));
export const usePickableRuns = (all = false) => useQuery(runQueries.pickable(useViewer(), all));
export const useRun = (id: number) => useQuery(runQueries.detail(useViewer(), id));
export const useUnits = (runId: number, layer: string | undefined, q: UnitQuery, enabled = true) =>
  useQuery(runQueries.units(useViewer(), runId, layer, q, enabled));
export const useAllUnits = (runId: number | null, layer: string | undefined) => useQuery(runQueries.allUnits(useViewer(), runId, layer));
export const useUnit = (runId: number, layer: string, unit: number, state: UnitState = "selected") =>
  useQuery(runQueries.unit(useViewer(), runId, layer, unit, state));
