// TanStack Query hooks over the typed client. Query keys carry the share token so a
// shared view and a signed-in view never mix cached data.
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap, type Job } from "./client";
import { currentShare, useToken } from "./auth";

const who = (token: string | null) => ({ t: token ? token.slice(0, 12) : null, s: currentShare() });

export function useHealth() {
  return useQuery({
    queryKey: ["health"],
    queryFn: () => unwrap(client.GET("/api/v1/health")),
    staleTime: 30_000,
    retry: 1,
  });
}

export function useMe() {
  const token = useToken();
  return useQuery({
    queryKey: ["me", token],
    queryFn: () => unwrap(client.GET("/api/v1/me")),
    enabled: !!token,
    retry: false,
    staleTime: 60_000,
  });
}

export function useRuns(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["runs", who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/runs", { params: { query: { limit: 500 } } })),
    enabled: enabled && !!token,
    refetchInterval: (q) => (q.state.data?.some((r) => r.status === "queued" || r.status === "running") ? 3000 : false),
  });
}

export function useJobs(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["jobs", who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/jobs", { params: { query: { top_level: true, limit: 50 } } })),
    enabled: enabled && !!token,
    refetchInterval: (q) => (q.state.data?.some((j) => j.status === "queued" || j.status === "running") ? 3000 : false),
  });
}

export function useModels(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["models", who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/models")),
    enabled: enabled && !!token,
    staleTime: 60_000,
  });
}

export function useLayers(modelId: number | null | undefined) {
  const token = useToken();
  return useQuery({
    queryKey: ["layers", modelId, who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/models/{model_id}/layers", { params: { path: { model_id: modelId! } } })),
    enabled: !!token && !!modelId,
    staleTime: Infinity,
  });
}

export function useImageSets(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["image-sets", who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/image-sets")),
    enabled: enabled && !!token,
    staleTime: 60_000,
  });
}

export function useSamples(setId: number | null | undefined, classIndex: number | null | undefined, n = 8, offset = 0) {
  const token = useToken();
  return useQuery({
    queryKey: ["samples", setId, classIndex, n, offset, who(token)],
    queryFn: () =>
      unwrap(
        client.GET("/api/v1/image-sets/{set_id}/classes/{class_index}/samples", {
          params: { path: { set_id: setId!, class_index: classIndex! }, query: { n, offset } },
        }),
      ),
    enabled: !!token && setId != null && classIndex != null,
    staleTime: Infinity,
  });
}

export function useJob(id: number, opts: { poll?: boolean } = {}) {
  const token = useToken();
  return useQuery({
    queryKey: ["job", id, who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/jobs/{job_id}", { params: { path: { job_id: id } } })),
    enabled: !!token && id > 0,
    refetchInterval: (q) =>
      opts.poll && !["succeeded", "failed", "cancelled"].includes(q.state.data?.status ?? "") ? 2000 : false,
  });
}

export function useRun(id: number) {
  const token = useToken();
  return useQuery({
    queryKey: ["run", id, who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/runs/{run_id}", { params: { path: { run_id: id } } })),
    enabled: id > 0,
    retry: (n, e) => (e as { status?: number }).status !== 404 && (e as { status?: number }).status !== 401 && n < 2,
    refetchInterval: (q) => (q.state.data && ["queued", "running"].includes(q.state.data.status) ? 3000 : false),
  });
}

export type UnitQuery = {
  sort: "unit" | "clip_delta" | "kendall_tau" | "clip_w" | "kendall_tau_w" | "topk_overlap";
  order: "asc" | "desc";
  page: number;
  page_size: number;
  attacked_only: boolean;
};

export function useUnits(runId: number, layer: string | undefined, q: UnitQuery, enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["units", runId, layer, q, who(token)],
    queryFn: () =>
      unwrap(
        client.GET("/api/v1/runs/{run_id}/layers/{layer}/units", {
          params: { path: { run_id: runId, layer: layer! }, query: q },
        }),
      ),
    enabled: enabled && runId > 0 && !!layer,
    placeholderData: keepPreviousData,
  });
}

/** Every unit row of a layer (pages of 1000), for comparisons. */
export function useAllUnits(runId: number | null, layer: string | undefined) {
  const token = useToken();
  return useQuery({
    queryKey: ["all-units", runId, layer, who(token)],
    queryFn: async () => {
      const rows = [];
      for (let page = 1; ; page++) {
        const res = await unwrap(
          client.GET("/api/v1/runs/{run_id}/layers/{layer}/units", {
            params: { path: { run_id: runId!, layer: layer! }, query: { page, page_size: 1000, sort: "unit" } },
          }),
        );
        rows.push(...res.items);
        if (rows.length >= res.total || res.items.length === 0) break;
      }
      return rows;
    },
    enabled: !!runId && !!layer,
  });
}

/** Which trained state a unit page shows as "after": the selected one (within the accuracy budget) or the final one. */
export type UnitState = "selected" | "final";

/**
 * One unit of a run; `state` picks the "after" side (`?state=`, issue 19 item 3). The
 * selected state is the API's default, so it is not sent.
 */
export function useUnit(runId: number, layer: string, unit: number, state: UnitState = "selected") {
  const token = useToken();
  return useQuery({
    queryKey: ["unit", runId, layer, unit, state, who(token)],
    queryFn: () =>
      unwrap(
        client.GET("/api/v1/runs/{run_id}/layers/{layer}/units/{unit}", {
          params: { path: { run_id: runId, layer, unit }, query: state === "final" ? { state } : {} },
        }),
      ),
    enabled: runId > 0 && !!layer && unit >= 0,
    placeholderData: keepPreviousData,
    retry: (n, e) => (e as { status?: number }).status !== 404 && n < 2,
  });
}

export function useShares(runId: number, enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["shares", runId, who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/runs/{run_id}/shares", { params: { path: { run_id: runId } } })),
    enabled: enabled && !!token && runId > 0,
  });
}

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

/**
 * A POST /jobs body: a registered kind and its spec. Typed loosely on purpose: the specs
 * are the registry's (`GET /api/v1/job-kinds` → `spec_schema`), which grow faster than the
 * generated client; the server's 422 names any field it refuses.
 */
export type LaunchBody = { kind: string; spec: Record<string, unknown> };

export function useCreateJob() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (body: LaunchBody) => unwrap(client.POST("/api/v1/jobs", { body: body as never })),
    onSuccess: () => {
      qc.invalidateQueries({ queryKey: ["jobs"] });
      qc.invalidateQueries({ queryKey: ["runs"] });
    },
  });
}

export function useCancelJob() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (id: number) => unwrap(client.POST("/api/v1/jobs/{job_id}/cancel", { params: { path: { job_id: id } } })),
    onSuccess: (job: Job) => {
      qc.invalidateQueries({ queryKey: ["job", job.id] });
      qc.invalidateQueries({ queryKey: ["jobs"] });
      qc.invalidateQueries({ queryKey: ["runs"] });
    },
  });
}

/** The job-kind registry: titles, chain steps with their labels, defaults, spec schemas. */
export function useJobKinds(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["job-kinds", who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/job-kinds")),
    enabled,
    staleTime: Infinity,
  });
}

/** The direct children of a job (a chain's steps), in `seq` order. */
export function useChildren(job: Job | null | undefined, refreshKey: unknown = null) {
  const token = useToken();
  return useQuery({
    queryKey: ["children", job?.id, job?.status, refreshKey, who(token)],
    queryFn: async () => {
      const rows = await unwrap(client.GET("/api/v1/jobs", { params: { query: { parent_id: job!.id, limit: 100 } } }));
      return [...rows].sort((a, b) => a.seq - b.seq);
    },
    enabled: !!token && !!job && job.children.length > 0,
  });
}

export function useModelSynthetic(modelId: number) {
  const token = useToken();
  return useQuery({
    queryKey: ["model-synthetic", modelId, who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/models/{model_id}/synthetic", { params: { path: { model_id: modelId } } })),
    enabled: !!token && modelId > 0,
  });
}

export function useModelSyntheticUnit(modelId: number, layer: string, unit: number) {
  const token = useToken();
  return useQuery({
    queryKey: ["model-synthetic-unit", modelId, layer, unit, who(token)],
    queryFn: () =>
      unwrap(client.GET("/api/v1/models/{model_id}/synthetic/{layer}/{unit}", { params: { path: { model_id: modelId, layer, unit } } })),
    enabled: !!token && modelId > 0 && !!layer && unit >= 0,
    placeholderData: keepPreviousData,
    retry: (n, e) => (e as { status?: number }).status !== 404 && n < 2,
  });
}

export function useModel(modelId: number) {
  const token = useToken();
  return useQuery({
    queryKey: ["model", modelId, who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/models/{model_id}", { params: { path: { model_id: modelId } } })),
    enabled: !!token && modelId > 0,
    staleTime: 60_000,
    retry: (n, e) => (e as { status?: number }).status !== 404 && n < 2,
  });
}

/** Architectures that can be registered by name (`GET /models/registry`). */
export function useModelRegistry(enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["model-registry", who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/models/registry")),
    enabled: enabled && !!token,
    staleTime: Infinity,
  });
}

export function useRegisterModel() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (body: { name: string; registry_name: string; pretrained: boolean; checkpoint_path?: string }) =>
      unwrap(client.POST("/api/v1/models", { body })),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["models"] }),
  });
}

/** `POST /image-sets`: 201 with the set (Fashion-MNIST), 202 with the set indexing and its job (a folder). */
export function useRegisterImageSet() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (body: { name: string; source: string; limit?: number }) => unwrap(client.POST("/api/v1/image-sets", { body })),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["image-sets"] }),
  });
}

/** One image set with its skipped files; polled while it is being indexed. */
export function useImageSet(id: number | null, enabled = true) {
  const token = useToken();
  return useQuery({
    queryKey: ["image-set", id, who(token)],
    queryFn: () => unwrap(client.GET("/api/v1/image-sets/{set_id}", { params: { path: { set_id: id! } } })),
    enabled: enabled && !!token && id != null,
    refetchInterval: (q) => ((q.state.data as { status?: string } | undefined)?.status === "indexing" ? 2000 : false),
  });
}
