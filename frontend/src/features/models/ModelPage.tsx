// A model's synthetic visualizations, Microscope-like: every layer with one image per
// unit (`GET /api/v1/models/{id}/synthetic`), each unit a permalink to all its seeds
// (`/models/:id/layers/:layer/units/:unit`). The images come from visualize jobs that
// run on the model alone, no attack needed; an empty state says how to render some.
import { useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import type { LayerOut, ModelOut } from "../../api/client";
import type { ModelSynthetic } from "../../api/contract";
import { modelUsable, useLayers, useModel, useModelSynthetic, useModelSyntheticUnit } from "../../api/queries";
import { AuthImage } from "../../components/AuthImage";
import { ManageActions } from "../../components/Manage";
import { PageHead } from "../../components/PageHead";
import { Empty, ErrorBox, Loading, StatusBadge } from "../../components/States";
import { useArrowKeys } from "../../lib/keys";
import { enc } from "../../lib/share";
import { usePageTitle } from "../../lib/title";
import { HitThumb } from "../search/Search";
import { firstPerUnit, labelTitle, shareText, unitKey, useAllLabels, type LabelHit } from "../search/labelQueries";
import { RenderSynthetic } from "./RenderSynthetic";

const GRID_FIRST = 96; // a layer shows this many units until "show all"

export const modelPath = (id: number) => `/models/${id}`;
export const modelUnitPath = (id: number, layer: string, unit: number) => `/models/${id}/layers/${enc(layer)}/units/${unit}`;

function useModelParams() {
  const p = useParams();
  return { modelId: Number(p.model), layer: p.layer ?? "", unit: Number(p.unit) };
}

export function ModelPage() {
  const { modelId } = useModelParams();
  const model = useModel(modelId);
  const layers = useLayers(modelId > 0 ? modelId : null);
  const synth = useModelSynthetic(modelId);
  // each unit's label under the model's own weights: the "before" label of its newest run (issue 22)
  const labels = useAllLabels({ model_id: modelId, state: "before", sort: "unit" }, modelId > 0);
  const [sp, setSp] = useSearchParams();
  const sort: UnitSort = sp.get("sort") === "label" || sp.get("sort") === "score" ? (sp.get("sort") as UnitSort) : "unit";
  usePageTitle(model.data ? `Model ${model.data.name}: synthetic visualizations` : `Model ${modelId}`);

  if (!(modelId > 0)) return <ErrorBox error={new Error("No such model: the address must be /models/<number>.")} />;
  if (model.isLoading) return <Loading what={`Loading model ${modelId}`} />;
  if (model.error) return <ErrorBox error={model.error} retry={() => model.refetch()} title={(model.error as { status?: number }).status === 404 ? `There is no model ${modelId}` : undefined} />;
  const m = model.data! as ModelOut;
  // only a ready model has weights to audit (a pruned model is "pending" until its prune step made them; a server
  // from before issue 19 sends no status: its models are all ready)
  const status = m.status ?? "ready";
  const usable = modelUsable(m);
  const byLayer = new Map((synth.data?.layers ?? []).map((l) => [l.layer, l.units]));
  const all = layers.data ?? [];
  const withImages = all.filter((l) => byLayer.get(l.name)?.length);
  // a layer the server has images for but the model's layer list does not name (renamed since): still shown
  const extra = (synth.data?.layers ?? []).filter((l) => l.units.length && !all.some((x) => x.name === l.layer));
  const labelOf = labelLookup(labels.data?.items);
  // the layers with labels but no synthetic images: their units' top images and labels
  const labelled = labelsByLayer(labels.data?.items);
  const layerOrder = [...all.map((l) => l.name), ...extra.map((l) => l.layer)];
  const labelOnly = [...labelled.keys()]
    .filter((l) => !byLayer.get(l)?.length && !extra.some((e) => e.layer === l))
    .sort((a, b) => rank(layerOrder, a) - rank(layerOrder, b) || a.localeCompare(b));
  const labelsPanel = (
    <UnitLabelsPanel
      hits={labels.data?.items}
      error={labels.error}
      sort={sort}
      onSort={(v) => {
        const n = new URLSearchParams(sp);
        if (v === "unit") n.delete("sort");
        else n.set("sort", v);
        setSp(n, { replace: true });
      }}
    />
  );
  const labelGrids = labelOnly.map((l) => (
    <LabelGrid key={`labels-${l}`} layer={l} info={all.find((x) => x.name === l)} hits={labelled.get(l)!} sort={sort} />
  ));

  return (
    <div className="page model">
      <PageHead
        title={m.name}
        crumbs={<><Link to="/">Runs</Link> / model {m.id}</>}
        actions={
          <div className="actions">
            {usable && (
              <>
                <Link className="button primary" to={`/launch?model=${m.id}`}>
                  Audit this model…
                </Link>
                <Link className="button" to={`/detections?suspect=${m.id}#check`}>
                  Check this model…
                </Link>
              </>
            )}
            <ManageActions what="models" id={m.id} name={m.name} hidden={m.hidden} />
          </div>
        }
      >
        <span className="mono">{m.registry_name}</span> · {m.n_layers} layers · {m.n_classes} classes · weights{" "}
        <span className="mono small" title={m.weights}>
          {m.weights.length > 48 ? `${m.weights.slice(0, 48)}…` : m.weights}
        </span>
      </PageHead>
      {status !== "ready" && (
        <div className={`banner ${status === "failed" ? "error" : "warn"}`} role="note" data-testid="model-status">
          <StatusBadge status={status} />{" "}
          {status === "pending"
            ? "This pruned model has no weights yet: its prune step has not produced them, so it cannot be audited or checked."
            : "This model cannot be used: its prune step failed."}
          {m.status_reason ? ` ${m.status_reason}` : ""}
          {m.prune_job_id != null && (
            <>
              {" "}
              <Link to={`/jobs/${m.prune_job_id}`}>Open its prune job {m.prune_job_id}</Link>.
            </>
          )}
        </div>
      )}
      {status === "ready" && m.hidden && (
        <div className="banner" role="note" data-testid="model-status">
          This model is hidden: it is left out of the lists and the launch forms' pickers. Unhide it to pick it again.
        </div>
      )}

      {labelsPanel}
      {synth.error ? (
        <ErrorBox error={synth.error} retry={() => synth.refetch()} />
      ) : synth.isLoading || layers.isLoading ? (
        <Loading what="Loading synthetic visualizations" />
      ) : withImages.length + extra.length === 0 ? (
        <>
          <section className="panel" aria-label="No synthetic visualizations">
            <Empty>
              <p>
                <strong>No synthetic visualizations of this model yet.</strong> They are rendered by a <em>visualize</em> job: gradient
                ascent from noise, a few seeds per unit, on the model as it is (no attack needed). Choose a layer and render one; an
                audit with “synthetic visualization” on renders them too, before and after its attack.
              </p>
              {all.length > 0 && <RenderSynthetic modelId={m.id} layers={all} />}
            </Empty>
          </section>
          {labelGrids}
        </>
      ) : (
        <>
          <nav className="panel layer-jump" aria-label="Layers">
            <h2>Layers</h2>
            <ul className="row wrap">
              {all.map((l) => {
                const n = byLayer.get(l.name)?.length ?? 0;
                return (
                  <li key={l.name}>
                    {n ? <a href={`#layer-${l.name}`} className="mono">{l.name}</a> : <span className="mono muted">{l.name}</span>}{" "}
                    <span className="muted small">{n ? `${n} units` : "not rendered"}</span>
                  </li>
                );
              })}
            </ul>
          </nav>
          {[...withImages.map((l) => ({ layer: l.name, info: l as LayerOut | undefined })), ...extra.map((l) => ({ layer: l.layer, info: undefined }))].map(({ layer, info }) => (
            <LayerGrid
              key={layer}
              modelId={m.id}
              layer={layer}
              info={info}
              units={byLayer.get(layer) ?? extra.find((e) => e.layer === layer)!.units}
              labelOf={labelled.has(layer) ? labelOf : null}
              sort={sort}
            />
          ))}
          {labelGrids}
          {all.length > withImages.length && (
            <section className="panel" aria-label="Render another layer">
              <h2>Render another layer</h2>
              <RenderSynthetic modelId={m.id} layers={all.filter((l) => !byLayer.get(l.name)?.length)} />
            </section>
          )}
        </>
      )}
    </div>
  );
}

function LayerGrid({ modelId, layer, info, units, labelOf, sort }: {
  modelId: number; layer: string; info?: LayerOut; units: ModelSynthetic["layers"][number]["units"]; labelOf: LabelLookup | null; sort: UnitSort;
}) {
  const [all, setAll] = useState(false);
  const sorted = sortUnits(units, sort, (u) => labelOf?.(layer, u));
  const shown = all ? sorted : sorted.slice(0, GRID_FIRST);
  return (
    <section className="panel" id={`layer-${layer}`} aria-label={`Layer ${layer}`}>
      <div className="section-head">
        <h2>
          <span className="mono">{layer}</span>
          {info?.label && <span className="muted small"> {info.label}</span>}
          <span className="muted small">
            {" "}
            · {units.length}
            {info ? ` of ${info.units}` : ""} units · job {[...new Set(units.map((u) => u.job_id))].join(", ")}
          </span>
        </h2>
      </div>
      <ul className="unit-grid">
        {shown.map((u) => (
          <li key={u.unit}>
            <Link to={modelUnitPath(modelId, layer, u.unit)} title={`unit ${u.unit}: all seeds`}>
              <AuthImage src={u.url} size={96} alt={`synthetic visualization of unit ${u.unit} (${layer})${u.seed != null ? `, seed ${u.seed}` : ""}`} />
              <span className="cap">unit {u.unit}</span>
              {labelOf && <UnitLabelCap hit={labelOf(layer, u.unit)} />}
            </Link>
          </li>
        ))}
      </ul>
      <ShowAll n={sorted.length} all={all} setAll={setAll} />
    </section>
  );
}

export type UnitSort = "unit" | "label" | "score";
type LabelLookup = (layer: string, unit: number) => LabelHit | undefined;

const rank = (order: string[], layer: string) => (order.indexOf(layer) >= 0 ? order.indexOf(layer) : order.length);

/** (layer, unit) → the unit's newest label, or null while there are none (no labels: no captions). */
function labelLookup(hits: LabelHit[] | undefined): LabelLookup | null {
  if (!hits?.length) return null;
  const first = firstPerUnit(hits);
  return (layer, unit) => first.get(unitKey(layer, unit));
}

/** Each layer's units with a label, one hit per unit (its newest run's). */
function labelsByLayer(hits: LabelHit[] | undefined): Map<string, LabelHit[]> {
  const out = new Map<string, LabelHit[]>();
  for (const h of firstPerUnit(hits ?? []).values()) out.set(h.layer, [...(out.get(h.layer) ?? []), h]);
  return out;
}

/**
 * Units in the order asked: by unit; by label (A → Z, the best score first within a label);
 * by score (the label's share of the top-k, best first). Units without a label come last.
 */
export function sortUnits<T extends { unit: number }>(units: T[], sort: UnitSort, labelOf: (unit: number) => LabelHit | undefined): T[] {
  const byUnit = (a: T, b: T) => a.unit - b.unit;
  if (sort === "unit") return [...units].sort(byUnit);
  const score = (h: LabelHit | undefined) => h?.score ?? -Infinity;
  return [...units].sort((a, b) => {
    const ha = labelOf(a.unit);
    const hb = labelOf(b.unit);
    if (!ha || !hb) return ha ? -1 : hb ? 1 : byUnit(a, b);
    if (sort === "label") {
      const c = ha.label.localeCompare(hb.label, "en", { sensitivity: "base" });
      if (c) return c;
    }
    return score(hb) - score(ha) || byUnit(a, b);
  });
}

/** A unit's label under its image: the class and its share of the top-k (the p-value and run in the tooltip). */
function UnitLabelCap({ hit }: { hit: LabelHit | undefined }) {
  if (!hit)
    return (
      <span className="unit-label none" data-testid="unit-label" title="no label: the unit is dead, or no audit of this layer measured labels">
        —
      </span>
    );
  return (
    <span className="unit-label" data-testid="unit-label" title={`${hit.label}: ${labelTitle(hit)} · before the attack of run ${hit.run_id} (${hit.run_name})`}>
      {hit.label} <span className="muted">{shareText(hit.score)}</span>
    </span>
  );
}

/** The model's unit labels: what they are, where they come from, and the units' order on the page. */
function UnitLabelsPanel({ hits, error, sort, onSort }: { hits: LabelHit[] | undefined; error: unknown; sort: UnitSort; onSort: (s: UnitSort) => void }) {
  const status = (error as { status?: number } | null)?.status;
  if (error && status !== 404)
    return (
      <p className="muted small" role="note">
        The unit labels could not be loaded: {error instanceof Error ? error.message : String(error)}
      </p>
    );
  if (!hits?.length) return null;
  const units = firstPerUnit(hits);
  const runs = [...new Set([...units.values()].map((h) => h.run_id))].sort((a, b) => b - a);
  return (
    <section className="panel" aria-label="Unit labels">
      <div className="section-head">
        <h2>
          Unit labels <span className="muted small">{units.size.toLocaleString("en")} units</span>
        </h2>
        <label className="label-sort">
          sort units by{" "}
          <select aria-label="Sort units by" value={sort} onChange={(e) => onSort(e.target.value as UnitSort)}>
            <option value="unit">unit</option>
            <option value="label">label</option>
            <option value="score">score</option>
          </select>
        </label>
      </div>
      <p className="muted small">
        Under each unit, its label under the model's own weights (θ_init): the class most over-represented in its validation
        top-k, with its share of the top-k, from the newest audit that measured the unit (
        {runs.slice(0, 4).map((r, i) => (
          <span key={r}>
            {i > 0 && ", "}
            <Link to={`/runs/${r}`}>run {r}</Link>
          </span>
        ))}
        {runs.length > 4 ? ", …" : ""}). <Link to="/search">Search the labels</Link> of every run.
      </p>
    </section>
  );
}

/** A layer with labels but no synthetic images: each unit's top image (before the attack) and label, linking to its unit page in the run. */
function LabelGrid({ layer, info, hits, sort }: { layer: string; info?: LayerOut; hits: LabelHit[]; sort: UnitSort }) {
  const [all, setAll] = useState(false);
  const byUnit = new Map(hits.map((h) => [h.unit, h]));
  const sorted = sortUnits(hits, sort, (u) => byUnit.get(u));
  const shown = all ? sorted : sorted.slice(0, GRID_FIRST);
  return (
    <section className="panel" id={`labels-${layer}`} aria-label={`Unit labels of ${layer}`}>
      <div className="section-head">
        <h2>
          <span className="mono">{layer}</span>
          {info?.label && <span className="muted small"> {info.label}</span>}
          <span className="muted small">
            {" "}
            · {hits.length}
            {info ? ` of ${info.units}` : ""} units labelled · no synthetic visualizations: each unit's top validation image before the attack
          </span>
        </h2>
      </div>
      <ul className="unit-grid">
        {shown.map((h) => (
          <li key={h.unit}>
            <Link to={h.unit_path} title={`unit ${h.unit} in run ${h.run_id} (${h.run_name})`}>
              <HitThumb h={h} size={64} />
              <span className="cap">unit {h.unit}</span>
              <UnitLabelCap hit={h} />
            </Link>
          </li>
        ))}
      </ul>
      <ShowAll n={sorted.length} all={all} setAll={setAll} />
    </section>
  );
}

export function ModelUnitPage() {
  const { modelId, layer, unit } = useModelParams();
  const navigate = useNavigate();
  const model = useModel(modelId);
  const layers = useLayers(modelId > 0 ? modelId : null);
  const q = useModelSyntheticUnit(modelId, layer, unit);
  const info = layers.data?.find((l) => l.name === layer);
  usePageTitle(`Unit ${Number.isFinite(unit) ? unit : "?"} · ${layer} · ${model.data?.name ?? `model ${modelId}`}`);
  const prev = unit > 0 ? unit - 1 : null;
  const next = info ? (unit + 1 < info.units ? unit + 1 : null) : unit + 1;
  useArrowKeys(prev, next, (to) => navigate(modelUnitPath(modelId, layer, to)));

  if (!(modelId > 0) || !Number.isInteger(unit) || unit < 0)
    return <ErrorBox error={new Error("No such unit: the address must be /models/<model>/layers/<layer>/units/<number>.")} />;
  const missing = (q.error as { status?: number } | null)?.status === 404 || (q.data && q.data.images.length === 0);
  const groups = groupImages(q.data?.images ?? []);

  return (
    <div className="page model-unit">
      <div className="page-head">
        <div>
          <p className="crumbs">
            <Link to={modelPath(modelId)}>{model.data?.name ?? `model ${modelId}`}</Link> /{" "}
            <Link to={`${modelPath(modelId)}#layer-${layer}`} className="mono">
              {layer}
            </Link>{" "}
            / unit {unit}
          </p>
          <h1>
            Unit {unit} <span className="mono muted">{layer}</span>
          </h1>
          {info && <p className="muted">{info.label ? `${info.label} · ` : ""}{info.module_type} · {info.units} units</p>}
        </div>
        <div className="actions">
          <nav className="unit-nav" aria-label="Units">
            <button type="button" disabled={prev == null} onClick={() => prev != null && navigate(modelUnitPath(modelId, layer, prev))} title="Previous unit (← key)">
              ← unit {prev ?? ""}
            </button>
            <button type="button" disabled={next == null} onClick={() => next != null && navigate(modelUnitPath(modelId, layer, next))} title="Next unit (→ key)">
              unit {next ?? ""} →
            </button>
          </nav>
        </div>
      </div>
      {q.isLoading ? (
        <Loading what={`Loading unit ${unit}`} />
      ) : missing ? (
        <section className="panel">
          <Empty>
            <p>
              <strong>No synthetic visualization of unit {unit} of {layer} yet.</strong> Render the layer with a visualize job.
            </p>
            {info && <RenderSynthetic modelId={modelId} layers={[info]} initial={layer} compact />}
          </Empty>
        </section>
      ) : q.error ? (
        <ErrorBox error={q.error} retry={() => q.refetch()} />
      ) : (
        groups.map((g) => (
          <section key={g.key} className="panel" aria-label={`${g.title}`}>
            <h2>
              {g.title} <span className="muted small">{g.meta}</span>
            </h2>
            <ul className="seed-grid">
              {g.images.map((im, i) => (
                <li key={`${im.seed ?? i}-${im.url}`}>
                  <figure>
                    <AuthImage src={im.url} size={160} alt={`synthetic visualization of unit ${unit} (${layer}), seed ${im.seed ?? "?"}${im.state ? `, ${stateName(im.state)}` : ""}`} />
                    <figcaption className="small">seed {im.seed ?? "?"}</figcaption>
                  </figure>
                </li>
              ))}
            </ul>
          </section>
        ))
      )}
      <p className="muted small hint-keys">Keys: ← / → previous / next unit.</p>
    </div>
  );
}

/** "init" → "θ_init": the weights a visualization was rendered under. */
export const stateName = (state: string) => (/^(init|selected|final)$/.test(state) ? `θ_${state}` : state);

type UnitImage = NonNullable<ReturnType<typeof useModelSyntheticUnit>["data"]>["images"][number];

/** One group per visualize job and weights state, newest job first: the seeds of one render side by side. */
export function groupImages(images: UnitImage[]) {
  const map = new Map<string, UnitImage[]>();
  for (const im of images) {
    const key = `${im.job_id}:${im.state ?? ""}`;
    map.set(key, [...(map.get(key) ?? []), im]);
  }
  return [...map.entries()]
    .sort((a, b) => b[1][0].job_id - a[1][0].job_id)
    .map(([key, ims]) => {
      const f = ims[0];
      const state = f.state ? ` · ${stateName(f.state)}` : "";
      return {
        key,
        title: `Job ${f.job_id}${state}`,
        meta: [f.objective && `objective ${f.objective}`, f.steps != null && `${f.steps} steps`, f.size != null && `${f.size}×${f.size} px`, `${ims.length} seed${ims.length === 1 ? "" : "s"}`]
          .filter(Boolean)
          .join(" · "),
        images: [...ims].sort((a, b) => (a.seed ?? 0) - (b.seed ?? 0)),
      };
    });
}

/** "show all N units" / "show the first …" under a grid longer than GRID_FIRST (nothing otherwise). */
function ShowAll({ n, all, setAll }: { n: number; all: boolean; setAll: (f: (v: boolean) => boolean) => void }) {
  if (n <= GRID_FIRST) return null;
  return (
    <button type="button" className="link" onClick={() => setAll((v) => !v)}>
      {all ? `show the first ${GRID_FIRST}` : `show all ${n} units`}
    </button>
  );
}
