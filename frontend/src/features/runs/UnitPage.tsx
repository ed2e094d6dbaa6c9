import { useEffect, useRef } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { useToken } from "../../api/auth";
import { unitSynthetic, type RunDetailFull, type UnitDetailFull } from "../../api/contract";
import { type UnitState, useRun, useUnit } from "../../api/queries";
import { CopyButton } from "../../components/CopyButton";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { BeforeAfter } from "../../components/Gallery";
import { ErrorBox, Loading, NotFound, SelectedIsInit } from "../../components/States";
import { SyntheticNumbers, SyntheticPairs } from "../../components/Synthetic";
import { runLayers } from "../../lib/chain";
import { metric, metricHelp, metricLabel, METRIC_KEYS, num, unitRole } from "../../lib/format";
import { attackOutcome, type AttackOutcome } from "../../lib/rows";
import { layerPath, runPath, unitPath, useRunHref, useShareParam } from "../../lib/share";
import { usePageTitle } from "../../lib/title";
import { UnitFvTargetPanel } from "./FvTarget";
import { EmbedderWarning, LayerNotFound } from "./RunSummary";

const NEAREST: { key: string; title: string; help: string }[] = [
  { key: "by_tau_init", title: "Kendall-τ, before", help: "units whose initial ranking is closest to this unit's initial ranking" },
  { key: "by_tau_final", title: "Kendall-τ, after", help: "units whose final ranking is closest to this unit's initial ranking: who took over its feature?" },
  { key: "by_clip_init", title: "CLIP, before", help: "units whose initial top-k looks most like this unit's initial top-k" },
  { key: "by_clip_final", title: "CLIP, after", help: "units whose final top-k looks most like this unit's initial top-k" },
];

export function UnitPage() {
  const params = useParams();
  const runId = Number(params.run);
  const layer = params.layer ?? "";
  const unit = Number(params.unit);
  const [sp, setSp] = useSearchParams();
  const attackedNav = sp.get("nav") === "attacked";
  // the state shown as "after" (issue 19, item 3): in the address, so a link (a share link too) opens the same one
  const state: UnitState = sp.get("state") === "final" ? "final" : "selected";
  const navigate = useNavigate();
  const href = useRunHref();
  const shareTok = useShareParam();
  const run = useRun(runId);
  const u = useUnit(runId, layer, unit, state);
  const d = u.data;
  const signedIn = !!useToken();
  // an address naming a layer the run does not have, or a unit past the layer's last one,
  // is a not-found page, never another unit's results (issue 13, item 13)
  const layers = run.data ? runLayers(run.data) : [];
  const layerUnits = (run.data?.layer_info?.[layer] as { units?: number } | undefined)?.units;
  const noSuchLayer = layers.length > 0 && !layers.includes(layer);
  const unitStatus = (u.error as { status?: number } | null)?.status;
  // a 404 for the final state of a unit the layer has: the run stored no final state (a run from before issue 19)
  const noSuchState = !noSuchLayer && state === "final" && unitStatus === 404 && layerUnits != null && unit < layerUnits;
  const noSuchUnit = !noSuchLayer && !noSuchState && ((layerUnits != null && unit >= layerUnits) || unitStatus === 404);
  const runName = run.data?.name ?? `run ${runId}`;
  usePageTitle(
    noSuchLayer
      ? `Layer ${layer} not found · Run ${runId}: ${runName}`
      : noSuchUnit
        ? `Unit ${unit} not found · ${layer} · ${runName}`
        : `Unit ${Number.isFinite(unit) ? unit : "?"} · ${layer} · ${runName}`,
  );

  /** a unit's address with this page's ←/→ mode and state (and the share token, by href) */
  const withNav = (path: string, st: UnitState = state) => {
    const q = new URLSearchParams();
    if (attackedNav) q.set("nav", "attacked");
    if (st === "final") q.set("state", "final");
    const qs = q.toString();
    return href(qs ? `${path}?${qs}` : path);
  };
  // neighbours from the run's layer info (instant, right even while the next unit loads);
  // the unit's own prev/next when the run summary is not there
  const info = (run.data?.layer_info?.[layer] ?? null) as { units?: number; attacked?: number[] } | null;
  const neighbours = (at: number): [number | null, number | null] => {
    if (info?.units != null && (!attackedNav || info.attacked)) {
      if (!attackedNav) return [at > 0 ? at - 1 : null, at + 1 < info.units ? at + 1 : null];
      const att = [...info.attacked!].sort((x, y) => x - y);
      return [[...att].reverse().find((x) => x < at) ?? null, att.find((x) => x > at) ?? null];
    }
    if (d && d.unit === at && d.layer === layer)
      return attackedNav ? [d.prev_attacked, d.next_attacked] : [d.prev_unit, d.next_unit];
    return [null, null];
  };
  const [prev, next] = neighbours(unit);
  const latest = useRef(neighbours);
  latest.current = neighbours;

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const t = e.target as HTMLElement | null;
      const typing = t && (t.isContentEditable || ["SELECT", "TEXTAREA"].includes(t.tagName) ||
        (t.tagName === "INPUT" && !["checkbox", "button"].includes((t as HTMLInputElement).type)));
      if (typing || document.querySelector("[role=dialog]")) return;
      // the unit in the address bar now (a quick second key press may come before React re-renders)
      const m = /\/units\/(\d+)\/?$/.exec(window.location.pathname);
      const at = m ? Number(m[1]) : unit;
      const [p, n] = latest.current(at);
      const to = e.key === "ArrowLeft" ? p : n;
      if (to == null) return;
      e.preventDefault();
      navigate(withNav(unitPath(runId, layer, to)));
    };
    // (withNav keeps the state: ←/→ walk the units in the state shown)
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }); // re-bound each render

  if (!(runId > 0) || !(unit >= 0) || !Number.isInteger(unit))
    return <ErrorBox error={new Error("No such unit: the address must be /runs/<run>/layers/<layer>/units/<number>.")} />;
  if (noSuchLayer) return <LayerNotFound runId={runId} runName={runName} layer={layer} layers={layers} />;
  const status = (u.error as { status?: number } | null)?.status;
  if (shareTok && status === 404 && run.error)
    return <ErrorBox title="This share link does not work" error={new Error("The link was revoked by its owner, or it is mistyped. Ask the owner for a new link.")} />;
  if (noSuchState)
    return (
      <NotFound title={`Run ${runId} has no final state stored for unit ${unit}`}>
        <p>
          Its results were measured on the selected state only. <Link to={withNav(unitPath(runId, layer, unit), "selected")}>Open unit {unit} in the selected state</Link>.
        </p>
        {u.error instanceof Error && <p className="muted small">{u.error.message}</p>}
      </NotFound>
    );
  if (noSuchUnit)
    return (
      <NotFound title={`Layer ${layer} of run ${runId} has no unit ${unit}`}>
        <p>
          {layerUnits != null ? (
            <>
              Its units are 0–{layerUnits - 1}:{" "}
              <Link to={withNav(unitPath(runId, layer, layerUnits - 1))}>the last one, unit {layerUnits - 1}</Link>, or the{" "}
            </>
          ) : (
            "See the "
          )}
          <Link to={href(layerPath(runId, layer))}>unit table of {layer}</Link> in <Link to={href(runPath(runId))}>{runName}</Link>.
        </p>
      </NotFound>
    );
  if (u.isLoading) return <Loading what={`Loading unit ${unit}`} />;
  if (u.error) return <ErrorBox error={u.error} retry={() => u.refetch()} />;
  if (!d) return null;

  const attack = (run.data?.attack ?? {}) as { kind?: string; decoy_class?: number | null; k?: number };
  const role = unitRole(attack.kind);
  const outcome = attackOutcome(run.data);
  const dd = d as Omit<UnitDetailFull, "state" | "states"> & { state?: UnitState; states?: UnitState[] }; // a server from before issue 19 sends neither
  // the state the server says it shows (a server from before issue 19 shows the selected one and knows no other)
  const shown: UnitState = dd.state ?? "selected";
  const states: UnitState[] = dd.states ?? ["selected"];
  const kClip = run.data?.k_clip ?? null;
  const after = afterTitle(shown, run.data, outcome);
  const decoy = attack.kind === "push_up" ? (attack.decoy_class ?? null) : null;
  const topk = d.topk ?? {};
  const roles = (["train", "val"] as const).filter((r) => topk[r]);
  const stale = u.isFetching && (u.data?.unit !== unit || u.data?.layer !== layer);

  return (
    <div className={`page unit${stale ? " is-loading" : ""}`}>
      <div className="page-head">
        <div>
          <p className="crumbs">
            <Link to={href(runPath(runId))}>{run.data?.name ?? `run ${runId}`}</Link> /{" "}
            <Link to={href(layerPath(runId, layer))} className="mono">
              {layer}
            </Link>{" "}
            / unit {d.unit}
          </p>
          <h1>
            Unit {d.unit} <span className="mono muted">{layer}</span>{" "}
            {d.dead ? (
              <span className="badge dead">dead</span>
            ) : d.attacked ? (
              <span className="badge attacked" title={role.help}>{role.badge}</span>
            ) : (
              <span className="badge">{role.badge === "attacked" ? "not attacked" : "not a target"}</span>
            )}
            {d.read_only && <span className="badge readonly">read-only</span>}
          </h1>
        </div>
        <div className="actions">
          <nav className="unit-nav" aria-label="Units">
            <button type="button" disabled={prev == null} onClick={() => prev != null && navigate(withNav(unitPath(runId, layer, prev)))} title="Previous unit (← key)">
              ← unit {prev ?? ""}
            </button>
            <button type="button" disabled={next == null} onClick={() => next != null && navigate(withNav(unitPath(runId, layer, next)))} title="Next unit (→ key)">
              unit {next ?? ""} →
            </button>
          </nav>
          <label className="check small">
            <input
              type="checkbox"
              checked={attackedNav}
              onChange={(e) => {
                const n = new URLSearchParams(sp);
                if (e.target.checked) n.set("nav", "attacked");
                else n.delete("nav");
                setSp(n, { replace: true });
              }}
            />{" "}
            ←/→ through attacked units only
          </label>
          <CopyButton text={() => window.location.href} label="Copy link" className="primary" />
        </div>
      </div>

      <SelectedIsInit outcome={outcome}>
        {shown === "selected" && states.includes("final") && (
          <Link to={withNav(unitPath(runId, layer, unit), "final")}>Show this unit in the final state{stepText(outcome?.final_step ?? null)}</Link>
        )}
      </SelectedIsInit>

      <StateTabs
        shown={shown}
        states={states}
        outcome={outcome}
        run={run.data}
        hrefFor={(st) => withNav(unitPath(runId, layer, unit), st)}
      />

      <ErrorBoundary name="Metrics" resetKey={`${unit}-${shown}`}>
      <section className="panel metrics" aria-label="Metrics">
        <h2 className="sr-only">Metrics ({stateName(shown)})</h2>
        <dl className="kv">
          {d.labels && !d.dead && (
            <div title="The class most over-represented in the unit's validation top-k against the set's class frequencies (hypergeometric enrichment): what an interpreter would call the unit.">
              <dt>Label (validation top-k) before → after</dt>
              <dd data-testid="unit-labels">
                <UnitLabelText l={d.labels.before} /> → <UnitLabelText l={d.labels.after} />
                {d.labels.before.label !== d.labels.after.label && <> <span className="badge attacked">changed</span></>}
              </dd>
            </div>
          )}
          {d.scores && !d.dead &&
            SCORES.map((sc) => (
              <div key={sc.key} title={sc.help}>
                <dt>{sc.title} before → after</dt>
                <dd data-testid={`unit-score-${sc.key}`}>
                  {num(d.scores!.before[sc.key])} → {num(d.scores!.after[sc.key])}
                </dd>
              </div>
            ))}
          {METRIC_KEYS.map((k) => (
            <div key={k} title={metricHelp(k, kClip)}>
              <dt>{metricLabel(k, kClip)}</dt>
              <dd>{d.dead ? <span className="muted">dead unit</span> : metric(k, d.metrics[k])}</dd>
            </div>
          ))}
          {d.clip_self && (d.clip_self.pre != null || d.clip_self.post != null) && (
            <div title={`C(T_init, T_init) → C(T_init, T_${shown}): the similarity of the top-${kClip ?? "k"} with the initial top-${kClip ?? "k"}`}>
              <dt>CLIP similarity pre → post</dt>
              <dd>
                {num(d.clip_self.pre)} → {num(d.clip_self.post)}
              </dd>
            </div>
          )}
        </dl>
        <p className="muted small">
          “After” is the <strong>{stateName(shown)}</strong>
          {stepText(shown === "final" ? (outcome?.final_step ?? null) : (outcome?.selected_step ?? null))}. CLIP-δ, CLIP-W and the overlap compare
          the top-{kClip ?? "k"} (k_clip); the galleries show the top-{attack.k ?? "k"}.
          {d.scores && !d.dead && (
            <span data-testid="unit-scores-note">
              {" "}Clarity, polysemanticity and redundancy (SemanticLens) are measured on the embeddings of the unit's validation
              top-k by the run's embedder, <span className="mono">{run.data?.embedder ?? "—"}</span>: not by the model itself.
            </span>
          )}
        </p>
        {d.scores && !d.dead && <EmbedderWarning run={run.data} />}
      </section>
      </ErrorBoundary>

      {!d.dead && roles.length === 0 && (
        <section className="panel">
          <p className="muted">No top-k stored for this unit.</p>
        </section>
      )}
      {d.fv_target && !d.dead && (
        <ErrorBoundary name="Feature visualization vs target" resetKey={unit}>
          <UnitFvTargetPanel d={d} afterState={outcome?.selected_is_init ? "selected state = θ_init" : "selected state"} />
        </ErrorBoundary>
      )}
      {/* the natural top-k before/after beside the synthetic before/after (thesis Fig. 3.7) */}
      <div className="natural-synthetic">
        <div className="natural">
          {d.dead ? (
            <DeadUnit unit={d.unit} layer={layer} runId={runId} nextAttacked={d.next_attacked ?? null} href={href} />
          ) : roles.map((r) => (
            <ErrorBoundary key={r} name={r === "train" ? "Training set top-k" : "Validation set top-k"} resetKey={`${unit}-${shown}`}>
              <section className="panel">
                <BeforeAfter
                  title={r === "train" ? "Training set: top-k" : "Validation set: top-k (the set the metrics use)"}
                  before={topk[r]!.before}
                  after={topk[r]!.after}
                  afterTitle={after}
                  measureK={kClip}
                  highlightLabel={decoy}
                />
              </section>
            </ErrorBoundary>
          ))}
        </div>
        <ErrorBoundary name="Synthetic visualizations" resetKey={unit}>
          <SyntheticPanel d={d} modelId={run.data?.model_id ?? null} readOnly={!!d.read_only || !signedIn} selectedIsInit={!!outcome?.selected_is_init} />
        </ErrorBoundary>
      </div>

      <ErrorBoundary name="Nearest units" resetKey={`${unit}-${shown}`}>
        <Nearest d={d} runId={runId} layer={layer} href={(p) => withNav(p)} />
      </ErrorBoundary>
      <p className="muted small hint-keys">Keys: ← / → previous / next unit.</p>
    </div>
  );
}

/** SemanticLens interpretability scores of the unit's top-k embeddings (issue 22), in the order they are shown. */
const SCORES: { key: keyof NonNullable<UnitDetailFull["scores"]>["before"]; title: string; help: string }[] = [
  {
    key: "clarity",
    title: "Clarity",
    help: "how much the embeddings of the unit's top-k agree on one concept: 1 = one concept, about 0 = unrelated images (from −1/(n−1) to 1)",
  },
  {
    key: "polysemanticity",
    title: "Polysemanticity",
    help: "1 − the clarity of two k-means centroids of the top-k embeddings: high = the top-k splits into two different concepts",
  },
  {
    key: "redundancy",
    title: "Redundancy",
    help: "the largest cosine of the unit's mean top-k embedding to another unit's: high = another unit stands for the same concept",
  },
];

const stateName = (s: UnitState) => (s === "final" ? "final state" : "selected state");
const stepText = (step: number | null) => (step == null ? "" : `, step ${step.toLocaleString("en")}`);

/** The step of a state: the attack outcome's, else the Table 3.1 rows' or the accuracy's (a server from before issue 19). */
function stepOf(state: UnitState, run: RunDetailFull | undefined, o: AttackOutcome | null): number | null {
  const fromOutcome = state === "final" ? o?.final_step : o?.selected_step;
  if (fromOutcome != null) return fromOutcome;
  const row = (run?.rows ?? []).find((r) => r.state === state && r.step != null);
  if (row?.step != null) return row.step;
  const acc = (run?.accuracy ?? {}) as { selected_step?: number | null; steps?: number | null };
  return state === "selected" ? (acc.selected_step ?? null) : (acc.steps ?? null);
}

/** "After (selected state, step 200)", "After (selected state = θ_init, step 0)", "After (final state, step 300)". */
export function afterTitle(state: UnitState, run: RunDetailFull | undefined, o: AttackOutcome | null): string {
  const init = state === "selected" && o?.selected_is_init ? " = θ_init" : "";
  return `After (${stateName(state)}${init}${stepText(stepOf(state, run, o))})`;
}

/** Selected / final, one click apart; the address keeps the choice (and the share token). */
function StateTabs({ shown, states, outcome, run, hrefFor }: {
  shown: UnitState; states: UnitState[]; outcome: AttackOutcome | null; run: RunDetailFull | undefined; hrefFor: (s: UnitState) => string;
}) {
  if (!states.includes("final")) return null;
  return (
    <nav className="tabs state-tabs" aria-label="State shown as after">
      {(["selected", "final"] as const).map((st) => {
        const label = `${st} state${st === "selected" && outcome?.selected_is_init ? " (= θ_init)" : ""}${stepText(stepOf(st, run, outcome))}`;
        return st === shown ? (
          <span key={st} className="on" aria-current="page">
            {label}
          </span>
        ) : (
          <Link key={st} to={hrefFor(st)} title={st === "final" ? "the state after the last step, over the accuracy budget or not" : "the latest evaluated state within the accuracy budget"}>
            {label}
          </Link>
        );
      })}
    </nav>
  );
}

/**
 * A dead unit (SPEC §1) scores 0 on every training image under θ_init: every image ties,
 * so a "top-k" would be the first k images by index, marked "kept" because they still tie
 * after. No gallery, then: say what the unit is and where to go (issue 13, item 11).
 */
function DeadUnit({ unit, layer, runId, nextAttacked, href }: {
  unit: number; layer: string; runId: number; nextAttacked: number | null; href: (p: string) => string;
}) {
  return (
    <section className="panel" aria-label="Top-k">
      <div className="state empty dead-unit" data-testid="dead-unit">
        <p>
          <strong>Unit {unit} is dead: it has no top-k.</strong>
        </p>
        <p>
          It scores 0 on every training image under θ_init, so no image activates it more than another. It is left out of
          the attack and of every mean and count on the run page.
        </p>
        <p>
          {nextAttacked != null && (
            <>
              <Link to={href(`${unitPath(runId, layer, nextAttacked)}?nav=attacked`)}>Next attacked unit ({nextAttacked})</Link> ·{" "}
            </>
          )}
          <Link to={href(layerPath(runId, layer))}>the units of {layer}</Link>
        </p>
      </div>
    </section>
  );
}

/** The synthetic images are rendered on θ_init and the selected state (whichever state the galleries show). */
/** A class-concept label: its name, its share of the top-k and its enrichment p-value. */
function UnitLabelText({ l }: { l: NonNullable<UnitDetailFull["labels"]>["before"] }) {
  if (l.label == null) return <span className="muted">none</span>;
  return (
    <span title={`${l.share == null ? "—" : `${Math.round(100 * l.share)} %`} of the validation top-k; enrichment p = ${l.p_value == null ? "—" : l.p_value.toExponential(1)}`}>
      <strong>{l.name}</strong> <span className="muted small">{l.share == null ? "—" : `${Math.round(100 * l.share)} %`}</span>
    </span>
  );
}

function SyntheticPanel({ d, modelId, readOnly, selectedIsInit }: { d: UnitDetailFull; modelId: number | null; readOnly: boolean; selectedIsInit: boolean }) {
  const syn = unitSynthetic(d.synthetic);
  return (
    <section className="panel synthetic" aria-label="Synthetic visualizations">
      <h2>Synthetic visualizations</h2>
      {!syn ? (
        <div className="state empty" data-testid="no-synthetic">
          <p>
            <strong>This run has no synthetic visualizations.</strong> It was launched without the “synthetic visualization”
            step (or that step has not finished).
          </p>
          {!readOnly && (
            <p>
              Launch an audit with it on (<Link to={`/launch${modelId ? `?model=${modelId}&layer=${encodeURIComponent(d.layer)}` : ""}`}>launch form</Link>)
              {modelId != null && (
                <>
                  , or see the model's own visualizations of this unit on its{" "}
                  <Link to={`/models/${modelId}/layers/${encodeURIComponent(d.layer)}/units/${d.unit}`}>model page</Link>
                </>
              )}
              .
            </p>
          )}
        </div>
      ) : (
        <>
          <p className="muted small">
            Gradient ascent from noise (SPEC §4), {syn.before.length || syn.after.length} seed
            {(syn.before.length || syn.after.length) === 1 ? "" : "s"}, the same seeds before and after
            {syn.objective ? ` · objective ${syn.objective}` : ""}
            {syn.steps != null ? ` · ${syn.steps} steps` : ""}
            {syn.size != null ? ` · ${syn.size}×${syn.size} px` : ""}.
          </p>
          <SyntheticNumbers
            values={{ ...syn, natural_clip_delta: d.metrics.clip_delta ?? null }}
            keys={["synthetic_clip_delta", "synthetic_transfer", "ns_agreement", "natural_clip_delta"]}
            dead={!!d.dead}
          />
          <SyntheticPairs before={syn.before} after={syn.after} unit={d.unit} layer={d.layer} afterState={selectedIsInit ? "selected state = θ_init" : "selected state"} />
        </>
      )}
    </section>
  );
}

function Nearest({ d, runId, layer, href }: { d: UnitDetailFull; runId: number; layer: string; href: (p: string) => string }) {
  const groups = NEAREST.filter((g) => d.nearest?.[g.key]?.length);
  if (!groups.length) return null;
  return (
    <section className="panel" aria-label="Nearest units">
      <h2>Nearest units (whack-a-mole)</h2>
      <p className="muted">
        Did another unit take over this unit's feature after the attack? Compare the “after” lists with the “before” lists: a unit that
        appears after with a value close to 1 now ranks images the way this unit did.
      </p>
      <div className="nearest">
        {groups.map((g) => (
          <div key={g.key} title={g.help}>
            <h3>{g.title}</h3>
            <ol>
              {d.nearest[g.key].map((n) => (
                <li key={n.unit}>
                  <Link to={href(unitPath(runId, layer, n.unit))}>unit {n.unit}</Link> <span className="num muted">{num(n.value)}</span>
                </li>
              ))}
            </ol>
          </div>
        ))}
      </div>
    </section>
  );
}
