// Image sets: the list (a page, the forms' usable ones), one set (polled while indexing), a
// class's sample images, and registering one.
import { queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap, type ImageSetOut } from "../client";
import type { ListFilters } from "./models";
import { getPage, listPage } from "./request";
import { queryKey, useViewer, type Viewer } from "./viewer";

/** A set a form can use: indexed, not empty, not hidden. */
export const setUsable = (s: ImageSetOut) => (s.status ?? "ready") === "ready" && s.size > 0 && !s.hidden;

export const imageSetQueries = {
  page: (v: Viewer, f: ListFilters) =>
    queryOptions({
      ...listPage<ImageSetOut>(v, "image-sets", f),
      refetchInterval: (q) => (q.state.data?.items.some((s) => s.status === "indexing") ? 3000 : false),
    }),
  /** The image sets a form can pick (`usable=true`: indexed, not empty, not hidden). */
  usable: (v: Viewer, enabled: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "image-sets", "usable"),
      queryFn: async () => (await getPage<ImageSetOut>("/image-sets", { usable: true, limit: 500 })).items.filter(setUsable),
      enabled: enabled && !!v.token,
      staleTime: 60_000,
    }),
  /** One image set with its skipped files; polled while it is being indexed. */
  detail: (v: Viewer, id: number | null, enabled: boolean) =>
    queryOptions({
      queryKey: queryKey(v, "image-set", id),
      queryFn: () => unwrap(client.GET("/api/v1/image-sets/{set_id}", { params: { path: { set_id: id! } } })),
      enabled: enabled && !!v.token && id != null,
      refetchInterval: (q) => ((q.state.data as { status?: string } | undefined)?.status === "indexing" ? 2000 : false),
    }),
  samples: (v: Viewer, setId: number | null | undefined, classIndex: number | null | undefined, n: number, offset: number) =>
    queryOptions({
      queryKey: queryKey(v, "samples", setId, classIndex, n, offset),
      queryFn: () =>
        unwrap(
          client.GET("/api/v1/image-sets/{set_id}/classes/{class_index}/samples", {
            params: { path: { set_id: setId!, class_index: classIndex! }, query: { n, offset } },
          }),
        ),
      enabled: !!v.token && setId != null && classIndex != null,
      staleTime: Infinity,
    }),
};

export const useImageSetsPage = (f: ListFilters) => useQuery(imageSetQueries.page(useViewer(), f));
export const useUsableImageSets = (enabled = true) => useQuery(imageSetQueries.usable(useViewer(), enabled));
export const useImageSet = (id: number | null, enabled = true) => useQuery(imageSetQueries.detail(useViewer(), id, enabled));
export const useSamples = (setId: number | null | undefined, classIndex: number | null | undefined, n = 8, offset = 0) =>
  useQuery(imageSetQueries.samples(useViewer(), setId, classIndex, n, offset));

/** `POST /image-sets`: 201 with the set (Fashion-MNIST), 202 with the set indexing and its job (a folder). */
export function useRegisterImageSet() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (body: { name: string; source: string; limit?: number }) => unwrap(client.POST("/api/v1/image-sets", { body })),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["image-sets"] }),
  });
}
