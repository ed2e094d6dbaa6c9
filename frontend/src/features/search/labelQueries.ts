// Unit labels (issue 22): `GET /api/v1/units`, the class-concept label of each unit of the
// caller's runs in each state, searched by label prefix (`q`) or browsed by run or model.
// Query-option factories keyed by the one convention (api/queries/viewer.ts), like the
// factories of api/queries/ (this file sits with its feature: api/ is the generated layer).
import { keepPreviousData, queryOptions, useQuery } from "@tanstack/react-query";
import type { Schemas } from "../../api/client";
import { PAGE_SIZE, queryKey, useViewer, type Viewer } from "../../api/queries";
import { getPage, type Query } from "../../api/queries/request";
import { retryUnless } from "../../api/queries/viewer";

export type LabelHit = Schemas["LabelHit"];
/** The states a label is stored for: before = θ_init; selected and final: the attacked model's. */
export type LabelState = "before" | "selected" | "final";
export type LabelSort = "score" | "label" | "unit";

export type LabelFilters = {
  /** label prefix, case-insensitive; optional only with run_id or model_id (browse) */
  q?: string;
  state?: LabelState | "any";
  layer?: string;
  sort?: LabelSort;
  changed?: boolean;
  attacked?: boolean;
  run_id?: number;
  model_id?: number;
  limit?: number;
  offset?: number;
};

export const LABEL_STATES: LabelState[] = ["before", "selected", "final"];
export const STATE_WORDS: Record<LabelState, string> = { before: "before (θ_init)", selected: "selected", final: "final" };

/** The request's query: "any" state and unset filters are left out (the API's defaults). */
export function labelQuery(f: LabelFilters): Query {
  return {
    q: f.q?.trim() || undefined,
    state: f.state && f.state !== "any" ? f.state : undefined,
    layer: f.layer || undefined,
    sort: f.sort,
    changed: f.changed,
    attacked: f.attacked,
    run_id: f.run_id,
    model_id: f.model_id,
    limit: f.limit ?? PAGE_SIZE,
    offset: f.offset || undefined,
  };
}

/** Whether the API can answer: a label to search for, or a run or model to browse. */
const askable = (f: LabelFilters) => !!f.q?.trim() || !!f.run_id || !!f.model_id;

/** At most this many rows of one browse (pages of 500, the API's largest). */
const BROWSE_CAP = 10_000;

/** No retry of a refused query (422), an unknown run or model, or a missing credential: asking again changes nothing. */
const noRetryOf = retryUnless(422, 404, 401, 403);
const retry = (n: number, e: Error) => noRetryOf(n, e);

export const labelQueries = {
  /** One page of hits and their count (`X-Total-Count`), the last page kept on screen while the next loads. */
  page: (v: Viewer, f: LabelFilters) =>
    queryOptions({
      queryKey: queryKey(v, "labels", "page", f),
      queryFn: () => getPage<LabelHit>("/units", labelQuery(f)),
      enabled: !!(v.token || v.share) && askable(f),
      placeholderData: keepPreviousData,
      retry,
    }),
  /** Every hit of a browse (a run's or a model's labels), page after page of 500; `total` counts them all. */
  all: (v: Viewer, f: LabelFilters, enabled = true) =>
    queryOptions({
      queryKey: queryKey(v, "labels", "all", f),
      queryFn: async () => {
        const items: LabelHit[] = [];
        let total = 0;
        for (let offset = 0; offset < BROWSE_CAP; offset += 500) {
          const page = await getPage<LabelHit>("/units", labelQuery({ ...f, limit: 500, offset }));
          items.push(...page.items);
          total = page.total;
          if (items.length >= total || page.items.length < 500) break;
        }
        return { items, total: Math.max(total, items.length) };
      },
      enabled: enabled && !!(v.token || v.share) && askable(f),
      retry,
    }),
};

export const useLabelsPage = (f: LabelFilters) => useQuery(labelQueries.page(useViewer(), f));
export const useAllLabels = (f: LabelFilters, enabled = true) => useQuery(labelQueries.all(useViewer(), f, enabled));

/** "80 %": a label's share of the unit's validation top-k. */
export const shareText = (v: number | null | undefined) => (v == null || Number.isNaN(v) ? "—" : `${Math.round(100 * v)} %`);

/** The tooltip of a label: its share of the top-k and its enrichment p-value. */
export const labelTitle = (h: { score: number | null; p_value: number | null }) =>
  `${shareText(h.score)} of the validation top-k; enrichment p = ${h.p_value == null ? "—" : h.p_value.toExponential(1)}`;

/**
 * The unit page of a hit: its `unit_path`, in the hit's state when that is the final one
 * (the unit page shows the selected state unless `?state=final`).
 */
export const hitHref = (h: LabelHit) => (h.state === "final" ? `${h.unit_path}?state=final` : h.unit_path);

/** The first hit of each (layer, unit): in `sort=unit` order (newest run first) the newest run's label. */
export function firstPerUnit(hits: LabelHit[]): Map<string, LabelHit> {
  const out = new Map<string, LabelHit>();
  for (const h of hits) {
    const k = unitKey(h.layer, h.unit);
    if (!out.has(k)) out.set(k, h);
  }
  return out;
}

export const unitKey = (layer: string, unit: number) => `${layer}\u0000${unit}`;
