// Gradient Slingshots (SPEC §8.1–8.2): how close the attacked units' synthetic visualizations
// came to the attacker's target images, whether the units still do their job on natural images
// (AUROC), and the cross-check the Slingshots paper proposes (do natural exemplars and FV agree?).
// The run page's panel (per layer: the medians, then a strip per attacked unit: target, FV
// before, FV after) and the unit page's panel (the unit's own target, renders and measures).
import { useState } from "react";
import { Link } from "react-router";
import { unitSynthetic, type RunDetailFull, type SynthImage, type UnitDetailFull } from "../../api/contract";
import { useUnit } from "../../api/queries";
import { AuthImage } from "../../components/AuthImage";
import { aimsAtTarget, num, share } from "../../lib/format";
import { unitPath, useRunHref } from "../../lib/share";
import { attackOf, layerInfo } from "./RunPanels";

/** The measures of one unit (`fv_target.measures`) or a layer's medians (`run.fv_target[layer]`). */
export type FvMeasures = Record<string, unknown>;
export type UnitFvTarget = NonNullable<UnitDetailFull["fv_target"]>;

const val = (m: FvMeasures, k: string): number | null => (typeof m[k] === "number" ? (m[k] as number) : null);

/** "agree" / "disagree" / "unknown" (no agreement measured) as the page says it. */
export function crossCheckText(v: unknown): string {
  if (v === "agree") return "exemplars and FV agree";
  if (v === "disagree") return "exemplars and FV disagree";
  return "unknown (no natural–synthetic agreement measured)";
}

/** One line per measure: the value after the attack beside the value before (θ_init). */
const ROWS: { key: string; title: string; help: string; after: string; before?: string }[] = [
  { key: "ssim", title: "SSIM to target", help: "structural similarity of the FV to the target image (1 = the same image)", after: "ssim_target_after", before: "ssim_target_before" },
  { key: "cos", title: "embedder cosine to target", help: "cosine of the FV's and the target's embeddings (the run's embedder)", after: "cos_target_after", before: "cos_target_before" },
  { key: "mse", title: "pixel MSE to target", help: "mean squared pixel difference of the FV and the target (0 = the same image)", after: "mse_target_after", before: "mse_target_before" },
  { key: "original", title: "FV after vs original FV (SSIM / cosine)", help: "how much the FV after the attack still looks like the unit's original FV", after: "ssim_original_after" },
  { key: "auroc", title: "AUROC for the top class", help: "the unit's scores as a detector of its top class on the validation set: does it still do its job on natural images?", after: "auroc_after", before: "auroc_before" },
  { key: "agreement", title: "natural–synthetic agreement", help: "how much closer the unit's natural top-k is to its own FV than to other units' (> 1: the two views agree, SPEC §4)", after: "agreement_after", before: "agreement_before" },
];

function rowText(m: FvMeasures, r: (typeof ROWS)[number]): string {
  if (r.key === "original") return `${num(val(m, "ssim_original_after"))} / ${num(val(m, "cos_original_after"))}`;
  if (r.key === "auroc" || r.key === "agreement") return `${num(val(m, r.before!))} → ${num(val(m, r.after))}`;
  return `${num(val(m, r.after))} (before ${num(val(m, r.before!))})`;
}

/**
 * The FV→target measures as a definition list: `moved` says how many FVs moved toward their
 * target (a share for a layer, yes/no for a unit), `verdict` the cross-check.
 */
export function FvMeasureList({ m, moved, verdict }: { m: FvMeasures; moved: string; verdict: unknown }) {
  const by = typeof m.moved_by === "string" ? m.moved_by : null;
  return (
    <dl className="kv fv-measures">
      <div title={`the FV after the attack is closer to the target than to the unit's original FV${by ? ` (by ${by})` : ""}`}>
        <dt>FV moved to the target{by ? ` (by ${by})` : ""}</dt>
        <dd data-testid="fv-moved">{moved}</dd>
      </div>
      {ROWS.map((r) => (
        <div key={r.key} title={r.help}>
          <dt>{r.title}{r.before && r.key !== "auroc" && r.key !== "agreement" ? " after (before)" : r.before ? " before → after" : ""}</dt>
          <dd data-testid={`fv-${r.key}`}>{rowText(m, r)}</dd>
        </div>
      ))}
      <div title="the Slingshots paper's defence: natural exemplars still show what the unit does; they agree with its FV when the natural–synthetic agreement after the attack exceeds 1">
        <dt>cross-check</dt>
        <dd data-testid="fv-verdict" className={verdict === "disagree" ? "bad" : undefined}>{crossCheckText(verdict)}</dd>
      </div>
    </dl>
  );
}

/** Target, FV before (θ_init), FV after: the same seed on both sides. */
export function TargetStrip({ target, before, after, unit, layer, size = 96, afterState = "selected state" }: {
  target: string; before?: SynthImage; after?: SynthImage; unit: number; layer: string; size?: number; afterState?: string;
}) {
  const seed = before?.seed ?? after?.seed;
  const s = seed == null ? "" : `, seed ${seed}`;
  return (
    <div className="target-strip" role="group" aria-label={`Unit ${unit}: target, FV before, FV after`}>
      <figure>
        <AuthImage src={target} size={size} alt={`target image of unit ${unit} (${layer})`} />
        <figcaption className="muted small">target</figcaption>
      </figure>
      <figure>
        {before ? <AuthImage src={before.url} size={size} alt={`FV of unit ${unit} (${layer})${s}, before the attack (θ_init)`} /> : <span className="muted small">not rendered</span>}
        <figcaption className="muted small">FV before (θ_init){seed == null ? "" : ` · seed ${seed}`}</figcaption>
      </figure>
      <figure>
        {after ? <AuthImage src={after.url} size={size} alt={`FV of unit ${unit} (${layer})${s}, after the attack (${afterState})`} /> : <span className="muted small">not rendered</span>}
        <figcaption className="muted small">FV after ({afterState})</figcaption>
      </figure>
    </div>
  );
}

/** The first seed rendered on both sides (else whichever side has one). */
function firstPair(d: UnitDetailFull): { before?: SynthImage; after?: SynthImage } {
  const syn = unitSynthetic(d.synthetic);
  if (!syn) return {};
  const before = syn.before.find((b) => syn.after.some((a) => a.seed === b.seed)) ?? syn.before[0];
  return { before, after: syn.after.find((a) => a.seed === before?.seed) ?? syn.after[0] };
}

const SHOWN = 12;

/** A Slingshots run's panel: the layer's FV→target medians, then one strip per attacked unit. */
export function FvTargetPanel({ run, layer }: { run: RunDetailFull; layer: string }) {
  const kind = attackOf(run).kind as string | undefined;
  const [all, setAll] = useState(false);
  if (!aimsAtTarget(kind)) return null;
  const agg = (run.fv_target?.[layer] ?? null) as FvMeasures | null;
  const units = [...(layerInfo(run, layer).attacked ?? [])].sort((a, b) => a - b);
  const aimed = typeof agg?.units === "number" ? agg.units : null;
  const moved = agg ? `${share(val(agg, "moved_share"))}${aimed != null ? ` of ${aimed} unit${aimed === 1 ? "" : "s"}` : ""}` : "";
  return (
    <section className="panel fv-target" aria-label="Feature visualization vs target">
      <h2>
        Feature visualization → target <span className="muted small">(Gradient Slingshots, SPEC §8.1{kind === "push_up_slingshot" ? "–8.2" : ""}: medians over the aimed units of {layer}, fresh seeds the attack never saw)</span>
      </h2>
      {agg ? (
        <FvMeasureList m={agg} moved={moved} verdict={agg.cross_check} />
      ) : (
        <p className="muted" data-testid="fv-target-none">
          No FV→target measures for {layer}: {run.status === "succeeded" ? "the audit ran without its synthetic visualization step." : "they come with the synthetic visualization step, when the run is done."}
        </p>
      )}
      {units.length > 0 && (
        <>
          <h3>Attacked units: target, FV before, FV after</h3>
          <ul className="target-units">
            {(all ? units : units.slice(0, SHOWN)).map((u) => (
              <TargetUnitRow key={u} runId={run.id} layer={layer} unit={u} />
            ))}
          </ul>
          {units.length > SHOWN && (
            <button type="button" className="link" onClick={() => setAll(!all)}>
              {all ? `show the first ${SHOWN}` : `show all ${units.length} attacked units`}
            </button>
          )}
        </>
      )}
    </section>
  );
}

/** One attacked unit on the run page: its strip, its SSIM to the target and verdict, a link to its page. */
function TargetUnitRow({ runId, layer, unit }: { runId: number; layer: string; unit: number }) {
  const href = useRunHref();
  const u = useUnit(runId, layer, unit);
  const d = u.data;
  const t = d?.fv_target;
  return (
    <li className="target-unit" data-testid="target-unit">
      <Link to={href(unitPath(runId, layer, unit))}>unit {unit}</Link>
      {u.isLoading ? (
        <span className="muted small">loading…</span>
      ) : u.error ? (
        <span className="muted small">{(u.error as Error).message}</span>
      ) : !t ? (
        <span className="muted small">no target stored for this unit</span>
      ) : (
        <>
          <TargetStrip target={t.target_url} {...firstPair(d!)} unit={unit} layer={layer} size={64} />
          <span className="small">
            SSIM to target {num(val(t.measures ?? {}, "ssim_target_after"))} (before {num(val(t.measures ?? {}, "ssim_target_before"))})
            {t.moved != null && <> · {t.moved ? <span className="badge attacked">moved</span> : <span className="badge">not moved</span>}</>}
            {" · "}
            {crossCheckText(t.cross_check)}
          </span>
        </>
      )}
    </li>
  );
}

/** The unit page's panel: the unit's target, its FV before and after (each seed), its measures and the verdict. */
export function UnitFvTargetPanel({ d, afterState, className }: { d: UnitDetailFull; afterState: string; className?: string }) {
  const t = d.fv_target;
  if (!t) return null;
  const syn = unitSynthetic(d.synthetic);
  const seeds = syn ? syn.before.map((b) => ({ before: b, after: syn.after.find((a) => a.seed === b.seed) })) : [];
  const m: FvMeasures = { ...(t.measures ?? {}), moved_by: t.moved_by };
  const topName = t.top_class == null ? null : [...(d.topk?.val?.before ?? []), ...(d.topk?.train?.before ?? [])].find((im) => im.label === t.top_class)?.label_name;
  return (
    <section className={`panel fv-target${className ? ` ${className}` : ""}`} aria-label="Feature visualization vs target">
      <h2>
        Feature visualization → target <span className="muted small">(Gradient Slingshots: the image the attack aimed this unit's FV at)</span>
      </h2>
      <div className="target-seeds">
        {(seeds.length ? seeds : [{ before: undefined, after: undefined }]).map((p, i) => (
          <TargetStrip key={String(p.before?.seed ?? i)} target={t.target_url} before={p.before} after={p.after} unit={d.unit} layer={d.layer} size={128} afterState={afterState} />
        ))}
      </div>
      {!syn && <p className="muted small">No synthetic visualizations: the audit ran without that step, so only the target is shown.</p>}
      <FvMeasureList m={m} moved={t.moved == null ? "—" : t.moved ? "yes" : "no"} verdict={t.cross_check} />
      <p className="muted small">
        Measured on renders with seeds the attack never saw. The cross-check reads the natural top-k below against the FV: if the
        exemplars and the FV agree, the two views tell the same story{t.top_class != null ? `; the AUROC's positive class is ${topName ? `${topName} (class ${t.top_class})` : `class ${t.top_class}`}, the unit's top class under θ_init` : ""}.
      </p>
    </section>
  );
}
