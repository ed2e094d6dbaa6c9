// Detections (SPEC §6): the list, one detection (polled while live), one unit of it.
import { queryOptions, useQuery } from "@tanstack/react-query";
import { anyLive, client, isLive, unwrap } from "../client";
import { queryKey, retryUnless, useViewer, type Viewer } from "./viewer";

export const detectionQueries = {
  list: (v: Viewer) =>
    queryOptions({
      queryKey: queryKey(v, "detections"),
      queryFn: () => unwrap(client.GET("/api/v1/detections", { params: { query: { limit: 200 } } })),
      enabled: !!v.token,
      refetchInterval: (q) => (anyLive(q.state.data) ? 3000 : false),
    }),
  detail: (v: Viewer, id: number) =>
    queryOptions({
      queryKey: queryKey(v, "detection", id),
      queryFn: () => unwrap(client.GET("/api/v1/detections/{detection_id}", { params: { path: { detection_id: id } } })),
      enabled: !!v.token && Number.isInteger(id) && id > 0,
      retry: retryUnless(404),
      refetchInterval: (q) => (isLive(q.state.data) ? 2000 : false),
    }),
  unit: (v: Viewer, id: number, layer: string, unit: number) =>
    queryOptions({
      queryKey: queryKey(v, "detection-unit", id, layer, unit),
      queryFn: () =>
        unwrap(
          client.GET("/api/v1/detections/{detection_id}/layers/{layer}/units/{unit}", {
            params: { path: { detection_id: id, layer, unit } },
          }),
        ),
      enabled: !!v.token && id > 0 && !!layer && Number.isInteger(unit) && unit >= 0,
      retry: retryUnless(404, 409),
    }),
};

export const useDetections = () => useQuery(detectionQueries.list(useViewer()));
export const useDetection = (id: number) => useQuery(detectionQueries.detail(useViewer(), id));
export const useDetectionUnit = (id: number, layer: string, unit: number) => useQuery(detectionQueries.unit(useViewer(), id, layer, unit));
