// Models: the list (a page, the forms' usable ones, every one), one model, its layers, its
// synthetic visualizations, the architectures that can be registered, and registering one.
import { keepPreviousData, queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap, type ModelOut } from "../client";
import { getPage, listPage } from "./request";
import { queryKey, retryUnless, useViewer, type Viewer } from "./viewer";

/**
 * A model a form can use: ready (a server from before issue 19 sends no status: its models
 * are all ready; "pending" is a pruned model whose prune step has not produced weights) and not hidden.
 */
export const modelUsable = (m: ModelOut) => (m.status ?? "ready") === "ready" && !m.hidden;

export type ListFilters = { q?: string; include_hidden?: boolean; usable?: boolean; limit?: number; offset?: number };

export const modelQueries = {
  page: (v: Viewer, f: ListFilters) => listPage<ModelOut>(v, "models", f),
  /**
   * The models a form can pick (`usable=true`: ready, not hidden). The filter is applied here
   * too, so a server that ignores the parameter still never offers a pending model.
   */
  usable: (v: Viewer, enabled: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "models", "usable"),
      queryFn: async () => (await getPage<ModelOut>("/models", { usable: true, limit: 500 })).items.filter(modelUsable),
      enabled: enabled && !!v.token,
      staleTime: 60_000,
    }),
  /**
   * Every model, hidden ones too (`GET /models` leaves them out by default): for naming a model
   * a run, a detection or an attack result refers to, which stays valid when the model is hidden.
   */
  all: (v: Viewer, enabled: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "models", "all"),
      queryFn: async () => (await getPage<ModelOut>("/models", { include_hidden: true, limit: 1000 })).items,
      enabled: enabled && !!v.token,
      staleTime: 60_000,
    }),
  detail: (v: Viewer, modelId: number) =>
    queryOptions({
      queryKey: queryKey(v, "model", modelId),
      queryFn: () => unwrap(client.GET("/api/v1/models/{model_id}", { params: { path: { model_id: modelId } } })),
      enabled: !!v.token && modelId > 0,
      staleTime: 60_000,
      retry: retryUnless(404),
    }),
  layers: (v: Viewer, modelId: number | null | undefined) =>
    queryOptions({
      queryKey: queryKey(v, "layers", modelId),
      queryFn: () => unwrap(client.GET("/api/v1/models/{model_id}/layers", { params: { path: { model_id: modelId! } } })),
      enabled: !!v.token && !!modelId,
      staleTime: Infinity,
    }),
  synthetic: (v: Viewer, modelId: number) =>
    queryOptions({
      queryKey: queryKey(v, "model-synthetic", modelId),
      queryFn: () => unwrap(client.GET("/api/v1/models/{model_id}/synthetic", { params: { path: { model_id: modelId } } })),
      enabled: !!v.token && modelId > 0,
    }),
  syntheticUnit: (v: Viewer, modelId: number, layer: string, unit: number) =>
    queryOptions({
      queryKey: queryKey(v, "model-synthetic-unit", modelId, layer, unit),
      queryFn: () =>
        unwrap(client.GET("/api/v1/models/{model_id}/synthetic/{layer}/{unit}", { params: { path: { model_id: modelId, layer, unit } } })),
      enabled: !!v.token && modelId > 0 && !!layer && unit >= 0,
      placeholderData: keepPreviousData,
      retry: retryUnless(404),
    }),
  /** Architectures that can be registered by name (`GET /models/registry`). */
  registry: (v: Viewer) =>
    queryOptions({
      queryKey: queryKey(v, "model-registry"),
      queryFn: () => unwrap(client.GET("/api/v1/models/registry")),
      enabled: !!v.token,
      staleTime: Infinity,
    }),
};

export const useModelsPage = (f: ListFilters) => useQuery(modelQueries.page(useViewer(), f));
export const useUsableModels = (enabled = true) => useQuery(modelQueries.usable(useViewer(), enabled));
export const useAllModels = (enabled = true) => useQuery(modelQueries.all(useViewer(), enabled));
export const useModel = (modelId: number) => useQuery(modelQueries.detail(useViewer(), modelId));
export const useLayers = (modelId: number | null | undefined) => useQuery(modelQueries.layers(useViewer(), modelId));
export const useModelSynthetic = (modelId: number) => useQuery(modelQueries.synthetic(useViewer(), modelId));
export const useModelSyntheticUnit = (modelId: number, layer: string, unit: number) =>
  useQuery(modelQueries.syntheticUnit(useViewer(), modelId, layer, unit));
export const useModelRegistry = () => useQuery(modelQueries.registry(useViewer()));

export function useRegisterModel() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (body: { name: string; registry_name: string; pretrained: boolean; checkpoint_path?: string }) =>
      unwrap(client.POST("/api/v1/models", { body })),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["models"] }),
  });
}
