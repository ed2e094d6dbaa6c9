// A run's share links: the list (its owner's), create, revoke.
import { queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap } from "../client";
import { queryKey, useViewer, type Viewer } from "./viewer";

export const shareQueries = {
  list: (v: Viewer, runId: number, enabled: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "shares", runId),
      queryFn: () => unwrap(client.GET("/api/v1/runs/{run_id}/shares", { params: { path: { run_id: runId } } })),
      enabled: enabled && !!v.token && runId > 0,
    }),
};

export const useShares = (runId: number, enabled = true) => useQuery(shareQueries.list(useViewer(), runId, enabled));

export function useCreateShare(runId: number) {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: () => unwrap(client.POST("/api/v1/runs/{run_id}/shares", { params: { path: { run_id: runId } } })),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["shares", runId] }),
  });
}

export function useRevokeShare(runId: number) {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (token: string) => unwrap(client.DELETE("/api/v1/shares/{token}", { params: { path: { token } } })),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["shares", runId] }),
  });
}
