// The data layer: per resource, query-option factories (`runQueries.detail(viewer, id)`, …)
// keyed by one convention (viewer.ts) and the hooks the pages call.
export * from "./detections";
export * from "./imageSets";
export * from "./jobs";
export * from "./manage";
export * from "./models";
export { PAGE_SIZE, type Page } from "./request";
export * from "./runs";
export * from "./server";
export * from "./shares";
export * from "./sweeps";
export * from "./targets";
export { queryKey, useViewer, type Viewer } from "./viewer";
