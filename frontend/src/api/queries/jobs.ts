// Jobs: the latest (the home page), a page of the list, one job (polled until it ends), a
// chain's steps, the succeeded attacks (detection's choices), the kind registry; launch and cancel.
import { queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { anyLive, client, isTerminal, unwrap, type Job } from "../client";
import { listPage } from "./request";
import { queryKey, useViewer, type Viewer } from "./viewer";

export type JobFilters = { kind?: string; status?: string; limit?: number; offset?: number };

/**
 * A POST /jobs body: a registered kind and its spec. Typed loosely on purpose: the specs
 * are the registry's (`GET /api/v1/job-kinds` → `spec_schema`), which grow faster than the
 * generated client; the server's 422 names any field it refuses.
 */
export type LaunchBody = { kind: string; spec: Record<string, unknown> };

export const jobQueries = {
  /** The newest top-level jobs. */
  latest: (v: Viewer) =>
    queryOptions({
      queryKey: queryKey(v, "jobs"),
      queryFn: () => unwrap(client.GET("/api/v1/jobs", { params: { query: { top_level: true, limit: 50 } } })),
      enabled: !!v.token,
      refetchInterval: (q) => (anyLive(q.state.data) ? 3000 : false),
    }),
  /** Top-level jobs (no chain steps), newest first. */
  page: (v: Viewer, f: JobFilters) =>
    queryOptions({ ...listPage<Job>(v, "jobs", f, { top_level: true }), refetchInterval: (q) => (anyLive(q.state.data?.items) ? 3000 : false) }),
  /** Succeeded attack jobs: their weights can be a suspect, a reference or a population member. */
  attackResults: (v: Viewer, enabled: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "jobs", "attack-results"),
      queryFn: () => unwrap(client.GET("/api/v1/jobs", { params: { query: { kind: "attack", status: "succeeded", limit: 500 } } })),
      enabled: enabled && !!v.token,
      staleTime: 30_000,
    }),
  detail: (v: Viewer, id: number, poll: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "job", id),
      queryFn: () => unwrap(client.GET("/api/v1/jobs/{job_id}", { params: { path: { job_id: id } } })),
      enabled: !!v.token && id > 0,
      refetchInterval: (q) => (poll && !isTerminal(q.state.data?.status) ? 2000 : false),
    }),
  /** The direct children of a job (a chain's steps), in `seq` order. */
  children: (v: Viewer, job: Job | null | undefined, refreshKey: unknown) =>
    queryOptions({
      queryKey: queryKey(v, "children", job?.id, job?.status, refreshKey),
      queryFn: async () => {
        const rows = await unwrap(client.GET("/api/v1/jobs", { params: { query: { parent_id: job!.id, limit: 100 } } }));
        return [...rows].sort((a, b) => a.seq - b.seq);
      },
      enabled: !!v.token && !!job && job.children.length > 0,
    }),
  /** The job-kind registry: titles, chain steps with their labels, defaults, spec schemas. */
  kinds: (v: Viewer, enabled: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "job-kinds"),
      queryFn: () => unwrap(client.GET("/api/v1/job-kinds")),
      enabled,
      staleTime: Infinity,
    }),
};

export const useJobs = () => useQuery(jobQueries.latest(useViewer()));
export const useJobsPage = (f: JobFilters) => useQuery(jobQueries.page(useViewer(), f));
export const useAttackJobs = (enabled = true) => useQuery(jobQueries.attackResults(useViewer(), enabled));
export const useJob = (id: number, opts: { poll?: boolean } = {}) => useQuery(jobQueries.detail(useViewer(), id, !!opts.poll));
export const useChildren = (job: Job | null | undefined, refreshKey: unknown = null) => useQuery(jobQueries.children(useViewer(), job, refreshKey));
export const useJobKinds = (enabled = true) => useQuery(jobQueries.kinds(useViewer(), enabled));

export function useCreateJob() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (body: LaunchBody) => unwrap(client.POST("/api/v1/jobs", { body: body as never })),
    onSuccess: () => {
      // a launched job is a row of its kind's list too (a detection, a sweep): without this the
      // list cached before the launch is shown for its stale time without the new job
      for (const key of ["jobs", "runs", "detections", "sweeps"]) qc.invalidateQueries({ queryKey: [key] });
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
