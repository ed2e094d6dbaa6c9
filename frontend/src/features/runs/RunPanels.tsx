// The panels of a run's page (SPEC §3): the summary (thesis Table 3.1), accuracy, push-up
// success, the per-unit distributions of the shown layer. Each takes the run and reads what
// it shows from it; a panel with nothing to show renders nothing.
import { Link, useNavigate } from "react-router";
import type { RunDetailFull } from "../../api/contract";
import { Histogram, Scatter } from "../../components/Charts";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { clip, DASH, metricLabel, overlap, pct, share, signed, tau, unitRole } from "../../lib/format";
import { attackOutcome } from "../../lib/rows";
import { layerPath, runPath, unitPath, useRunHref } from "../../lib/share";
import { RunRows } from "./RunRows";

/** What the run says of one layer: its unit count, which units were attacked, which are dead, how many images it was measured on. */
export type LayerInfo = { units?: number; attacked?: number[]; dead?: number[]; n_images?: number };
export const layerInfo = (run: RunDetailFull, layer: string | undefined) => (run.layer_info?.[layer ?? ""] ?? {}) as LayerInfo;

export const attackOf = (run: RunDetailFull) => (run.attack ?? {}) as Record<string, unknown>;
export const budgetOf = (run: RunDetailFull) => {
  const budget = attackOf(run).acc_budget_pp;
  return typeof budget === "number" ? budget : null;
};

/** The summary: the rows of every layer and state (Table 3.1), or the per-layer table of a run from before the rows. */
export function SummaryPanel({ run, layers, layer }: { run: RunDetailFull; layers: string[]; layer: string | undefined }) {
  const href = useRunHref();
  const rows = run.rows ?? [];
  const attack = attackOf(run);
  const budget = budgetOf(run);
  const outcome = attackOutcome(run);
  const info = layerInfo(run, layer);
  const role = unitRole(attack.kind as string | undefined);
  if (rows.length > 0)
    return (
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
    );
  if (run.table.length === 0) return null;
  return (
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
  );
}

export function AccuracyPanel({ run }: { run: RunDetailFull }) {
  const acc = run.accuracy ?? {};
  const outcome = attackOutcome(run);
  if (acc.init == null && acc.final == null) return null;
  return (
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
        {outcome?.selected_is_init
          ? "No evaluated state stayed within the accuracy budget: the selected state is θ_init."
          : acc.selected_step != null
            ? `The result is the last evaluated state within the budget (step ${acc.selected_step}${acc.steps ? ` of ${acc.steps}` : ""}).`
              + (acc.over_budget ? ` The final state (step ${outcome?.final_step ?? acc.steps ?? "?"}) is over it.` : "")
            : ""}
      </p>
    </section>
    </ErrorBoundary>
  );
}

/** The shown layer's units: CLIP-δ and Kendall-τ histograms, the CLIP similarity scatter (a dot opens its unit). */
export function PerUnitPanel({ run, layer }: { run: RunDetailFull; layer: string }) {
  const navigate = useNavigate();
  const href = useRunHref();
  const perUnit = run.per_unit?.[layer] ?? {};
  const sim = (run.clip_similarity?.[layer] ?? []) as { unit: number; pre: number; post: number }[];
  const outcome = attackOutcome(run);
  const role = unitRole(attackOf(run).kind as string | undefined);
  if (!perUnit.clip_delta?.length && !sim.length) return null;
  return (
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
export type PushupData = PushupSets & { decoy_class?: number; decoy_class_name?: string | null; k?: number };

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
export function PushUp({ pushup, kClip, kGallery }: { pushup: PushupData; kClip: number; kGallery: number | null }) {
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
