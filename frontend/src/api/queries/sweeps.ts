// Pruning sweeps: the list (hidden ones only when asked) and one sweep, polled while live.
import { queryOptions, useQuery } from "@tanstack/react-query";
import { anyLive, client, isLive, unwrap } from "../client";
import { queryKey, useViewer, type Viewer } from "./viewer";

export const sweepQueries = {
  /** `GET /sweeps`: hidden sweeps only when asked (the list leaves them out by default). */
  list: (v: Viewer, includeHidden: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "sweeps", { include_hidden: includeHidden }),
      queryFn: () => unwrap(client.GET("/api/v1/sweeps", { params: { query: includeHidden ? { include_hidden: true } : {} } })),
      enabled: !!v.token,
      refetchInterval: (q) => (anyLive(q.state.data) ? 5000 : false),
    }),
  detail: (v: Viewer, id: number) =>
    queryOptions({
      queryKey: queryKey(v, "sweep", id),
      queryFn: () => unwrap(client.GET("/api/v1/sweeps/{sweep_id}", { params: { path: { sweep_id: id } } })),
      enabled: !!v.token && Number.isInteger(id) && id > 0,
      refetchInterval: (q) => (isLive(q.state.data) ? 5000 : false),
    }),
};

export const useSweeps = (includeHidden: boolean) => useQuery(sweepQueries.list(useViewer(), includeHidden));
export const useSweep = (id: number) => useQuery(sweepQueries.detail(useViewer(), id));
