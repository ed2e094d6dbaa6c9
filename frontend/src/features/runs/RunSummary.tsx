import { useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { download, isLive } from "../../api/client";
import type { AlphaEvent, RunDetailFull } from "../../api/contract";
import { useToken } from "../../api/auth";
import { type UnitQuery, useRun, useUnits } from "../../api/queries";
import { Histogram, LineChart, Scatter } from "../../components/Charts";
import { CopyButton } from "../../components/CopyButton";
import { ShareDialog } from "./ShareDialog";
import { RunRows } from "./RunRows";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { ErrorBox, Loading, NotFound, SelectedIsInit, StatusBadge, When } from "../../components/States";
import { SyntheticSummary } from "./SyntheticSummary";
import { FIRST_ORDER, UnitListNotice, unitListNotice, UnitTable, type SortKey } from "./UnitTable";
import { runLayers } from "../../lib/chain";
import { attackLabel, clip, DASH, metricLabel, nImages, num, overlap, pct, share, signed, tau, unitRole } from "../../lib/format";
import { attackOutcome } from "../../lib/rows";
import { layerPath, runPath, unitPath, useRunHref, useShareParam } from "../../lib/share";
import { usePageTitle } from "../../lib/title";

const SORTS: SortKey[] = ["unit", "clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap"];

export function RunSummary() {
  const params = useParams();
  const runId = Number(params.run);
  const run = useRun(runId);
  const share = useShareParam();
  const layers = run.data ? runLayers(run.data) : [];
  const noSuchLayer = params.layer != null && layers.length > 0 && !layers.includes(params.layer);
  usePageTitle(
    run.data
      ? noSuchLayer
        ? `Layer ${params.layer} not found · Run ${run.data.id}: ${run.data.name}`
        : `Run ${run.data.id}: ${run.data.name}${params.layer ? ` · ${params.layer}` : ""}`
      : `Run ${params.run}`,
  );
  if (!(runId > 0)) return <ErrorBox error={new Error("No such run: the address must be /runs/<number>.")} />;
  if (run.isLoading) return <Loading what={`Loading run ${runId}`} />;
  if (run.error) {
    const status = (run.error as { status?: number }).status;
    if (share && status === 404)
      return (
        <ErrorBox
          title="This share link does not work"
          error={new Error("The link was revoked by its owner, or it is mistyped. Ask the owner for a new link.")}
        />
      );
    return <ErrorBox error={run.error} retry={() => run.refetch()} />;
  }
  if (noSuchLayer) return <LayerNotFound runId={runId} runName={run.data!.name} layer={params.layer!} layers={layers} />;
  return <RunBody run={run.data!} layerParam={params.layer} />;
}

/** `/runs/1/layers/relu2` when run 1 has no relu2: not another layer's results in its place. */
export function LayerNotFound({ runId, runName, layer, layers }: { runId: number; runName: string; layer: string; layers: string[] }) {
  const href = useRunHref();
  return (
    <NotFound title={`Run ${runId} has no layer ${layer}`}>
      <p>
        <Link to={href(runPath(runId))}>{runName}</Link> measured {layers.length === 1 ? "one layer" : `${layers.length} layers`}:{" "}
        {layers.map((l, i) => (
          <span key={l}>
            {i > 0 && ", "}
            <Link className="mono" to={href(layerPath(runId, l))}>
              {l}
            </Link>
          </span>
        ))}
        .
      </p>
    </NotFound>
  );
}

function RunBody({ run, layerParam }: { run: RunDetailFull; layerParam?: string }) {
  const navigate = useNavigate();
  const href = useRunHref();
  const token = useToken();
  const [sp, setSp] = useSearchParams();
  const [shareOpen, setShareOpen] = useState(false);
  const [dlError, setDlError] = useState<unknown>(null);
  const layers = runLayers(run);
  const layer = layerParam && layers.includes(layerParam) ? layerParam : layers[0];
  const attack = (run.attack ?? {}) as Record<string, unknown>;
  const readOnly = run.read_only || !token;

  const sortParam = sp.get("sort") as SortKey | null;
  const sort: SortKey = sortParam && SORTS.includes(sortParam) ? sortParam : "clip_delta";
  const order = sp.get("order") === "asc" || sp.get("order") === "desc" ? (sp.get("order") as "asc" | "desc") : FIRST_ORDER[sort];
  const q: UnitQuery = {
    sort,
    order,
    page: Math.max(1, Number(sp.get("page")) || 1),
    page_size: 25,
    attacked_only: sp.get("attacked") !== "0",
  };
  // a run without results (queued, running, failed or cancelled before its metrics) has no unit rows to ask for
  const unitsAsked = run.status === "succeeded" || !!run.table.length;
  const units = useUnits(run.id, layer, q, unitsAsked);
  const notice = unitListNotice(run.status, units.data, unitsAsked);
  const update = (changes: Record<string, string | null>) => {
    const next = new URLSearchParams(sp);
    for (const [k, v] of Object.entries(changes)) v == null ? next.delete(k) : next.set(k, v);
    setSp(next, { replace: true });
  };

  const info = (run.layer_info?.[layer ?? ""] ?? {}) as { units?: number; attacked?: number[]; dead?: number[]; n_images?: number };
  const perUnit = run.per_unit?.[layer ?? ""] ?? {};
  const sim = (run.clip_similarity?.[layer ?? ""] ?? []) as { unit: number; pre: number; post: number }[];
  const hist = (run.history ?? []) as { step: number; loss?: number; l_attack?: number; l_maintain?: number; alpha?: number }[];
  const traj = (run.alpha_trajectory ?? []) as AlphaEvent[];
  const hasFull = traj.some((t) => t.full_accuracy != null || t.full_drop_pp != null);
  const rows = run.rows ?? [];
  const budget = typeof attack.acc_budget_pp === "number" ? attack.acc_budget_pp : null;
  const acc = run.accuracy ?? {};
  const done = run.status === "succeeded";
  const outcome = attackOutcome(run);
  const role = unitRole(attack.kind as string | undefined);
  const hasResults = rows.length > 0 || run.table.length > 0;
  // the final state of one unit, for "offer the final state" (the first attacked one of the layer)
  const firstAttacked = [...(info.attacked ?? [])].sort((x, y) => x - y)[0];
  const finalUnitHref = layer && firstAttacked != null ? href(`${unitPath(run.id, layer, firstAttacked)}?state=final`) : null;

  return (
    <div className="page run">
      <div className="page-head">
        <div>
          {!readOnly && (
            <p className="crumbs">
              <Link to="/">Runs</Link> / run {run.id}
            </p>
          )}
          <h1>
            {run.name} <StatusBadge status={run.status} />
            {readOnly && <span className="badge readonly">read-only</span>}
          </h1>
          <p className="muted">
            {run.model_id != null ? <Link to={`/models/${run.model_id}`}>{run.model ?? `model ${run.model_id}`}</Link> : (run.model ?? "model ?")} · {attackLabel(run.attack?.kind as string)} on <span className="mono">{layers.join(", ")}</span>
            {attack.units ? ` · units ${(attack.units as number[]).length <= 8 ? (attack.units as number[]).join(", ") : `${(attack.units as number[]).length} chosen`}` : " · all units"}
            {attack.steps != null && ` · ${attack.steps} steps`}
            {attack.lr != null && ` · lr ${attack.lr}`}
            {" · α "}
            {attack.kind === "finetune" ? "0" : attack.alpha == null ? "dynamic" : String(attack.alpha)}
            {attack.score_norm ? ` · ${attack.score_norm}` : ""}
            {` · k ${attack.k ?? DASH}, k_clip ${run.k_clip}`}
            {" · "}
            <When iso={run.created_at} />
            {run.control_run_id != null && (
              <>
                {" · "}
                <Link to={href(runPath(run.control_run_id))}>α = 0 control: run {run.control_run_id}</Link>
              </>
            )}
          </p>
        </div>
        <div className="actions">
          {!readOnly && (
            <button type="button" className="primary" onClick={() => setShareOpen(true)}>
              Share…
            </button>
          )}
          <CopyButton text={() => window.location.href} label="Copy link" />
          {!readOnly && (
            <Link className="button" to={`/compare?a=${run.id}&layer=${encodeURIComponent(layer ?? "")}`}>
              Compare…
            </Link>
          )}
          <button
            type="button"
            onClick={() => download(`/api/v1/runs/${run.id}/export.csv`, `run-${run.id}.csv`).catch(setDlError)}
            title="One CSV row per unit: metrics and top-k ids before/after"
          >
            CSV
          </button>
          <button type="button" onClick={() => download(`/api/v1/runs/${run.id}/export.json`, `run-${run.id}.json`).catch(setDlError)}>
            JSON
          </button>
        </div>
      </div>
      {dlError != null && <ErrorBox error={dlError} title="Export failed" />}
      {shareOpen && <ShareDialog runId={run.id} runName={run.name} onClose={() => setShareOpen(false)} />}

      {!done && (
        <div className={`banner${run.status === "failed" ? " error" : ""}`} role="status">
          {run.status === "failed" ? (
            <>
              This run failed: <span className="mono">{run.error ?? "no message"}</span>.{" "}
            </>
          ) : run.status === "cancelled" ? (
            hasResults ? (
              "This run was cancelled; the results it measured before are shown below. "
            ) : (
              <>
                This run was cancelled before it measured any results{run.error ? ` (${run.error})` : ""}: there is nothing to show.{" "}
              </>
            )
          ) : (
            "This run is still in progress; the results appear when it is done. "
          )}
          {run.job_id && !readOnly && <Link to={`/jobs/${run.job_id}`}>Open the job{isLive(run) ? " (live progress)" : ""}</Link>}
        </div>
      )}
      <SelectedIsInit outcome={outcome}>
        {hasResults && <>The final state is the <strong>final</strong> row of the summary{finalUnitHref ? <>; per unit, each unit page's “final state” tab (<Link to={finalUnitHref}>unit {firstAttacked}, final state</Link>)</> : null}.</>}
      </SelectedIsInit>
      {run.embedder_warning && (
        <div className="banner warn" role="note">
          <strong>Embedder:</strong> {run.embedder_warning}
        </div>
      )}

      {rows.length > 0 && (
        <ErrorBoundary name="Summary (Table 3.1)">
        <section className="panel" aria-label="Summary (Table 3.1)">
          <h2>
            Summary <span className="muted small">(thesis Table 3.1: means over attacked units, per layer and state)</span>
          </h2>
          <div className="scroll-x">
            <RunRows rows={rows} layers={layers} current={layers.length > 1 ? layer : undefined} budget={budget} kClip={run.k_clip} selectedIsInit={outcome?.selected_is_init} layerHref={(l) => href(layerPath(run.id, l))} runHref={(r) => href(runPath(r))} />
          </div>
          <p className="muted small">
            <strong>selected</strong>: the latest evaluated state within the {budget != null ? `${budget} pp ` : ""}accuracy budget on the full validation set;{" "}
            <strong>final</strong>: the last step's state (flagged when over the budget);{" "}
            <strong>α = 0 control</strong>: plain fine-tuning with the same settings. Embedder for CLIP-δ / CLIP-W:{" "}
            <span className="mono">{run.embedder ?? DASH}</span>. CLIP-δ, CLIP-W and the overlap compare each unit's top-{run.k_clip} (k_clip)
            {typeof attack.k === "number" && attack.k !== run.k_clip ? `; the unit pages' galleries show the top-${attack.k}` : ""}. Kendall-τ is computed on the validation set
            {info.n_images ? ` (${info.n_images.toLocaleString("en")} images)` : ""}.
          </p>
        </section>
        </ErrorBoundary>
      )}

      {rows.length === 0 && run.table.length > 0 && (
        <ErrorBoundary name="Summary (Table 3.1)">
        <section className="panel" aria-label="Summary (Table 3.1)">
          <h2>Summary <span className="muted small">(thesis Table 3.1: means over attacked units)</span></h2>
          <div className="scroll-x">
            <table className="data t31">
              <thead>
                <tr>
                  <th scope="col">layer</th>
                  <th scope="col" className="num" title={`semantic change of the top-${run.k_clip}; 0 = identical`}>{metricLabel("clip_delta", run.k_clip)}</th>
                  <th scope="col" className="num" title="ranking kept = 1">Kendall-τ</th>
                  <th scope="col" className="num">{metricLabel("clip_w", run.k_clip)}</th>
                  <th scope="col" className="num">Kendall-τ-W</th>
                  <th scope="col" className="num">{metricLabel("topk_overlap", run.k_clip)} (val / train)</th>
                  <th scope="col" className="num">Acc</th>
                  <th scope="col" className="num">ΔAcc (pp)</th>
                  <th scope="col" className="num">units ({role.badge === "attacked" ? "attacked" : "target"} / dead)</th>
                </tr>
              </thead>
              <tbody>
                {run.table.map((r) => (
                  <tr key={r.layer} className={r.layer === layer ? "selected" : ""}>
                    <td className="mono">
                      {layers.length > 1 ? <Link to={href(layerPath(run.id, r.layer))}>{r.layer}</Link> : r.layer}
                    </td>
                    <td className="num strong">{clip(r.clip_delta)}</td>
                    <td className="num strong">{tau(r.kendall_tau)}</td>
                    <td className="num">{clip(r.clip_w)}</td>
                    <td className="num">{tau(r.kendall_tau_w)}</td>
                    <td className="num">
                      {overlap(r.topk_overlap)} / {overlap(r.train_topk_overlap)}
                    </td>
                    <td className="num">{pct(r.acc)}</td>
                    <td className={`num${(r.delta_acc ?? 0) < -0.5 ? " bad" : ""}`}>{signed(r.delta_acc)}</td>
                    <td className="num">
                      {r.n_units ?? DASH} ({r.n_attacked ?? DASH} / {r.n_dead ?? DASH})
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <p className="muted small">
            Embedder for CLIP-δ / CLIP-W: <span className="mono">{run.embedder ?? DASH}</span>. CLIP-δ, CLIP-W and the overlap compare each
            unit's top-{run.k_clip} (k_clip). Kendall-τ is computed on the validation set
            {info.n_images ? ` (${info.n_images.toLocaleString("en")} images)` : ""}.
          </p>
        </section>
        </ErrorBoundary>
      )}

      {(acc.init != null || acc.final != null) && (
        <ErrorBoundary name="Accuracy">
        <section className="panel" aria-label="Accuracy">
          <h2>Accuracy</h2>
          <div className="acc">
            <AccBar label="before (θ_init)" value={acc.init} />
            <AccBar
              label={`after: selected state${acc.selected_step != null ? `, step ${acc.selected_step}` : ""}${outcome?.selected_is_init ? " = θ_init" : ""}`}
              value={acc.final}
            />
            {acc.last != null && acc.last !== acc.final && <AccBar label={`after: final state, step ${outcome?.final_step ?? acc.steps ?? "?"}`} value={acc.last} />}
          </div>
          <p className="muted">
            Top-1 on the validation set. Change {signed(acc.delta)} pp.{" "}
            {acc.over_budget
              ? "No evaluated state stayed within the accuracy budget: the final state is over it."
              : acc.selected_step != null
                ? `The result is the last evaluated state within the budget (step ${acc.selected_step}${acc.steps ? ` of ${acc.steps}` : ""}).`
                : ""}
          </p>
        </section>
        </ErrorBoundary>
      )}

      {run.pushup && (
        <ErrorBoundary name="Push-up success">
          <PushUp pushup={run.pushup as PushupData} kClip={run.k_clip} kGallery={typeof attack.k === "number" ? attack.k : null} />
        </ErrorBoundary>
      )}

      {layer && (perUnit.clip_delta?.length || sim.length) ? (
        <ErrorBoundary name="Per-unit distributions" resetKey={layer}>
        <section className="panel" aria-label="Per-unit distributions">
          <h2>
            Per unit · <span className="mono">{layer}</span>
          </h2>
          <div className="charts3">
            <ErrorBoundary name="CLIP-δ histogram" resetKey={layer}>
              <Histogram title={`CLIP-δ per unit (top-${run.k_clip}, selected state)`} label="CLIP-δ" values={perUnit.clip_delta ?? []} />
            </ErrorBoundary>
            <ErrorBoundary name="Kendall-τ histogram" resetKey={layer}>
              <Histogram title="Kendall-τ per unit (selected state)" label="Kendall-τ" values={perUnit.kendall_tau ?? []} />
            </ErrorBoundary>
            <ErrorBoundary name="CLIP similarity scatter" resetKey={layer}>
              <Scatter
                title="CLIP similarity pre vs post (Fig. 3.5)"
                xLabel={`C_jj(init, init): top-${run.k_clip} vs itself`}
                yLabel={`C_jj(init, selected${outcome?.selected_is_init ? " = init" : ""})`}
                points={sim.map((s) => ({ x: s.pre, y: s.post, id: s.unit, label: `unit ${s.unit}` }))}
                onPick={(pt) => navigate(href(unitPath(run.id, layer, pt.id)))}
                caption={`Each dot is ${role.badge === "attacked" ? "an attacked unit" : "a target unit of this α = 0 control (not attacked)"}: below the diagonal, its top-${run.k_clip} in the selected state looks less like its initial top-${run.k_clip}. Click a dot to open the unit.`}
              />
            </ErrorBoundary>
          </div>
        </section>
        </ErrorBoundary>
      ) : null}

      {run.synthetic && Object.keys(run.synthetic).length > 0 && (
        <ErrorBoundary name="Synthetic visualizations" resetKey={layer}>
          <SyntheticSummary synthetic={run.synthetic} layers={layers} current={layer} kClip={run.k_clip} attackKind={attack.kind as string | undefined} onPickUnit={(l, u) => navigate(href(unitPath(run.id, l, u)))} />
        </ErrorBoundary>
      )}

      {hist.length > 0 && (
        <ErrorBoundary name="Training">
        <section className="panel" aria-label="Training">
          <h2>Training</h2>
          <div className="charts3">
            <LineChart
              scales
              title="Loss"
              xLabel="step"
              yLabel="loss"
              series={[
                { name: "L (total)", points: hist.filter((h) => h.loss != null).map((h) => ({ x: h.step, y: h.loss! })) },
                { name: "L_maintain", points: hist.filter((h) => h.l_maintain != null).map((h) => ({ x: h.step, y: h.l_maintain! })) },
              ]}
            />
            <LineChart scales title="Attack loss L_A" xLabel="step" yLabel="L_A" series={[{ name: "L_A", className: "s2", points: hist.filter((h) => h.l_attack != null).map((h) => ({ x: h.step, y: h.l_attack! })) }]} />
            <LineChart
              title="α trajectory"
              xLabel="step"
              yLabel="α"
              step
              series={[{ name: "α", className: "s3", points: hist.filter((h) => h.alpha != null).map((h) => ({ x: h.step, y: h.alpha! })) }]}
              markers={traj.map((t) => ({
                x: t.step,
                label: `step ${t.step}: accuracy ${t.accuracy} (drop ${t.drop_pp.toFixed(2)} pp${t.n_images ? ` on ${t.n_images} images` : ""})${t.full_drop_pp != null ? `, full set drop ${t.full_drop_pp.toFixed(2)} pp` : ""}, α ${t.alpha_before} → ${t.alpha_after}`,
              }))}
            />
          </div>
          {traj.length > 0 && (
            <details open={hasFull}>
              <summary>
                α changes ({traj.length} evaluations{hasFull ? "; the controller's reading next to the full validation set's" : ""})
              </summary>
              <table className="data compact alpha-table">
                <thead>
                  <tr>
                    <th scope="col" className="num">step</th>
                    <th scope="col" className="num" title="what the α controller read (an evaluation subset, or the full set)">accuracy (controller)</th>
                    <th scope="col" className="num">drop (pp)</th>
                    {hasFull && <th scope="col" className="num" title="the same state on the full validation set: the drop that decides “within budget”">full-set accuracy</th>}
                    {hasFull && <th scope="col" className="num">full-set drop (pp)</th>}
                    <th scope="col" className="num">α before → after</th>
                  </tr>
                </thead>
                <tbody>
                  {traj.map((t) => (
                    <tr key={t.step} className={t.within_budget === false ? "bad" : ""}>
                      <td className="num">{t.step}</td>
                      <td className="num">
                        {pct(t.accuracy, 2)}
                        {t.n_images != null && <span className="muted small"> on {nImages(t.n_images)}</span>}
                      </td>
                      <td className="num">{num(t.drop_pp, 2)}</td>
                      {hasFull && (
                        <td className="num">
                          {t.full_accuracy == null ? <span className="muted" title="not measured on the full set">{DASH}</span> : pct(t.full_accuracy, 2)}
                          {t.full_accuracy != null && t.full_n_images != null && <span className="muted small"> on {nImages(t.full_n_images)}</span>}
                        </td>
                      )}
                      {hasFull && <td className={`num${budget != null && (t.full_drop_pp ?? 0) > budget ? " bad" : ""}`}>{t.full_drop_pp == null ? DASH : num(t.full_drop_pp, 2)}</td>}
                      <td className="num">
                        {t.alpha_before} → {t.alpha_after}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </details>
          )}
        </section>
        </ErrorBoundary>
      )}

      {layer && (
        <ErrorBoundary name="Units" resetKey={layer}>
        <section className="panel" aria-label="Units">
          <div className="section-head">
            <h2>
              Units · <span className="mono">{layer}</span>
              {info.units != null && (
                <span className="muted small">
                  {" "}
                  ({info.units} units, {info.attacked?.length ?? "?"} {role.many}, {info.dead?.length ?? "?"} dead)
                </span>
              )}
            </h2>
            {layers.length > 1 && (
              <div className="tabs" role="tablist" aria-label="Layer">
                {layers.map((l) => (
                  <Link key={l} role="tab" aria-selected={l === layer} className={l === layer ? "on" : ""} to={href(layerPath(run.id, l))}>
                    {l}
                  </Link>
                ))}
              </div>
            )}
          </div>
          {units.error ? (
            <ErrorBox error={units.error} retry={() => units.refetch()} />
          ) : notice ? (
            <UnitListNotice status={notice} reason={run.error} jobHref={run.job_id && !readOnly ? `/jobs/${run.job_id}` : null} />
          ) : !units.data ? (
            <Loading what="Loading units" />
          ) : (
            <UnitTable
              rows={units.data.items}
              total={units.data.total}
              page={units.data.page}
              pageSize={units.data.page_size}
              sort={sort}
              order={order}
              attackedOnly={q.attacked_only}
              kClip={run.k_clip}
              attackKind={attack.kind as string | undefined}
              loading={units.isFetching}
              onSort={(s, o) => update({ sort: s, order: o, page: null })}
              onPage={(p) => update({ page: p > 1 ? String(p) : null })}
              onAttackedOnly={(v) => update({ attacked: v ? null : "0", page: null })}
              onOpen={(u) => navigate(href(unitPath(run.id, layer, u)))}
              hrefFor={(u) => href(unitPath(run.id, layer, u))}
            />
          )}
        </section>
        </ErrorBoundary>
      )}
    </div>
  );
}

function AccBar({ label, value }: { label: string; value: number | null | undefined }) {
  return (
    <div className="accbar">
      <span className="l">{label}</span>
      <span className="bar" aria-hidden="true">
        <span style={{ width: `${Math.max(0, Math.min(100, value ?? 0))}%` }} />
      </span>
      <span className="v">{pct(value, 2)}</span>
    </div>
  );
}

type PushupStats = { share_units_with_decoy_class?: number; mean_decoy_class_share?: number | null; share_units_with_decoy_images?: number | null };
type PushupSets = { train?: Record<string, PushupStats>; val?: Record<string, PushupStats>; train_init?: Record<string, PushupStats>; val_init?: Record<string, PushupStats> };
type PushupData = PushupSets & { decoy_class?: number; decoy_class_name?: string | null; k?: number };

/** "before → after" of one share; the before is θ_init's own top-k (what the attack started from). */
function BeforeAfterShare({ before, after }: { before: number | null | undefined; after: number | null | undefined }) {
  return (
    <>
      <span className="muted" title="before the attack (θ_init)">{before == null ? DASH : share(before)}</span>
      {" → "}
      <strong title="after the attack">{after == null ? DASH : share(after)}</strong>
    </>
  );
}

/**
 * Push-up success (SPEC §3, thesis App. D) on each attacked unit's top-k_clip, next to the
 * same count on θ_init's top-k: a decoy class that was already there before is no success
 * (issue 13, item 12: the table said "top-k" beside top-10 galleries and had no baseline).
 */
function PushUp({ pushup, kClip, kGallery }: { pushup: PushupData; kClip: number; kGallery: number | null }) {
  const k = pushup.k ?? kClip;
  const layers = [...new Set([...Object.keys(pushup.val ?? {}), ...Object.keys(pushup.train ?? {})])];
  const hasDecoyImages = layers.some((l) => pushup.train?.[l]?.share_units_with_decoy_images != null);
  return (
    <section className="panel" aria-label="Push-up success">
      <h2>
        Push-up success · decoy class {pushup.decoy_class}
        {pushup.decoy_class_name ? ` (${pushup.decoy_class_name})` : ""} <span className="muted small">on each attacked unit's top-{k}</span>
      </h2>
      <table className="data compact pushup">
        <thead>
          <tr>
            <th scope="col">layer</th>
            <th scope="col">set</th>
            <th scope="col" className="num" title={`attacked units whose top-${k} holds ≥ 1 decoy-class image: before → after the attack`}>
              units with the decoy class in their top-{k}
            </th>
            <th scope="col" className="num" title={`over those units: mean share of decoy-class images in the top-${k}`}>
              decoy-class share of their top-{k}
            </th>
            {hasDecoyImages && (
              <th scope="col" className="num" title={`units whose top-${k} holds one of the decoy images themselves`}>
                units with a decoy image
              </th>
            )}
          </tr>
        </thead>
        <tbody>
          {layers.flatMap((l) =>
            (["train", "val"] as const)
              .filter((s) => pushup[s]?.[l])
              .map((s) => {
                const st = pushup[s]![l];
                const init = pushup[s === "train" ? "train_init" : "val_init"]?.[l];
                return (
                  <tr key={`${l}-${s}`}>
                    <td className="mono">{l}</td>
                    <td>{s === "train" ? "training" : "validation"}</td>
                    <td className="num">
                      <BeforeAfterShare before={init?.share_units_with_decoy_class} after={st.share_units_with_decoy_class} />
                    </td>
                    <td className="num">
                      <BeforeAfterShare before={init?.mean_decoy_class_share} after={st.mean_decoy_class_share} />
                    </td>
                    {hasDecoyImages && (
                      <td className="num">
                        {st.share_units_with_decoy_images == null ? DASH : <BeforeAfterShare before={init?.share_units_with_decoy_images} after={st.share_units_with_decoy_images} />}
                      </td>
                    )}
                  </tr>
                );
              }),
          )}
        </tbody>
      </table>
      <p className="muted small">
        Counted on the top-{k} (k_clip = {k}, the k the CLIP metrics use){kGallery != null && kGallery !== k ? `; the galleries on the unit pages show the top-${kGallery}` : ""}.
        Before: θ_init's top-{k}; after: the selected state's.
      </p>
    </section>
  );
}
