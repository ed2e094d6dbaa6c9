import { useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router";
import type { RunDetail, UnitRow } from "../../api/client";
import { useAllUnits, usePickableRuns, useRun, useUnit } from "../../api/queries";
import { Scatter, type ScatterGroup } from "../../components/Charts";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { Gallery } from "../../components/Gallery";
import { PageHead } from "../../components/PageHead";
import { Empty, ErrorBox, Loading, SelectedIsInit } from "../../components/States";
import { attackLabel, clip, metricLabel, pct, signed, tau, unitRole } from "../../lib/format";
import { attackOutcome } from "../../lib/rows";
import { runPath, unitPath } from "../../lib/share";
import { usePageTitle } from "../../lib/title";
import { UnitListNotice, unitListNotice } from "./UnitTable";

type Merged = { unit: number; a?: UnitRow; b?: UnitRow; diff: number | null };
type CSort = "unit" | "a_delta" | "b_delta" | "diff" | "a_tau" | "b_tau";

export function Compare() {
  const [sp, setSp] = useSearchParams();
  const a = Number(sp.get("a")) || null;
  const b = Number(sp.get("b")) || null;
  // the pickers offer the runs worth comparing: cancelled and failed ones (nothing or half
  // measured) only when "show cancelled and failed" is ticked; hidden runs never (hiding a run
  // takes it out of lists and pickers), but a run the address names stays selectable
  const showAll = sp.get("all") === "1";
  const runs = usePickableRuns(showAll);
  const runA = useRun(a ?? 0);
  const runB = useRun(b ?? 0);
  const options = useMemo(() => {
    const list: { id: number; name: string; status: string }[] = [...(runs.data ?? [])];
    for (const r of [runA.data, runB.data]) if (r && !list.some((x) => x.id === r.id)) list.push(r);
    return list.sort((p, q) => q.id - p.id);
  }, [runs.data, runA.data, runB.data]);
  usePageTitle(runA.data ? `Compare run ${runA.data.id}${runB.data ? ` with run ${runB.data.id}` : ""}` : "Compare runs");
  const set = (changes: Record<string, string | null>) => {
    const n = new URLSearchParams(sp);
    for (const [k, v] of Object.entries(changes)) v == null || v === "" ? n.delete(k) : n.set(k, v);
    setSp(n, { replace: true });
  };
  const layersA = runA.data?.layers ?? [];
  const layersB = runB.data?.layers ?? [];
  const common = b ? layersA.filter((l) => layersB.includes(l)) : layersA;
  const layer = sp.get("layer") && common.includes(sp.get("layer")!) ? sp.get("layer")! : common[0];
  const unitParam = sp.get("unit");
  const unit = unitParam != null && unitParam !== "" ? Number(unitParam) : null;

  return (
    <div className="page compare">
      <PageHead
        title="Compare"
      >
        Two runs unit by unit (e.g. push-down vs the fine-tune baseline, or two layers' attacks on the same model). With one run, compare
        the model with its attacked version.
      </PageHead>
      <section className="panel">
        {runs.isLoading ? (
          <Loading what="Loading runs" />
        ) : runs.error ? (
          <ErrorBox error={runs.error} retry={() => runs.refetch()} />
        ) : !options.length && !showAll ? (
          <Empty>
            No runs to compare yet. <Link to="/launch">Launch an audit</Link>.{" "}
            <button type="button" className="link" onClick={() => set({ all: "1" })}>
              Show cancelled and failed runs
            </button>
          </Empty>
        ) : !options.length ? (
          <Empty>
            No runs to compare yet. <Link to="/launch">Launch an audit</Link>.
          </Empty>
        ) : (
          <div className="row wrap pickers">
            <label>
              Run A{" "}
              <select value={a ?? ""} onChange={(e) => set({ a: e.target.value, unit: null })}>
                <option value="">choose a run</option>
                {options.map((r) => (
                  <option key={r.id} value={r.id}>
                    #{r.id} {r.name} ({r.status})
                  </option>
                ))}
              </select>
            </label>
            <label>
              Run B{" "}
              <select value={b ?? ""} onChange={(e) => set({ b: e.target.value, unit: null })}>
                <option value="">none: A before vs after</option>
                {options
                  .filter((r) => r.id !== a)
                  .map((r) => (
                    <option key={r.id} value={r.id}>
                      #{r.id} {r.name} ({r.status})
                    </option>
                  ))}
              </select>
            </label>
            <label>
              Layer{" "}
              <select value={layer ?? ""} onChange={(e) => set({ layer: e.target.value, unit: null })} disabled={!common.length}>
                {common.map((l) => (
                  <option key={l} value={l}>
                    {l}
                  </option>
                ))}
              </select>
            </label>
            <label className="check" title="cancelled and failed runs measured nothing or only part of their units">
              <input type="checkbox" checked={showAll} onChange={(e) => set({ all: e.target.checked ? "1" : null })} /> show cancelled and failed runs
            </label>
          </div>
        )}
        {a && b && runA.data && runB.data && !common.length && (
          <p className="field-error">These runs share no layer: pick runs that attacked the same layer.</p>
        )}
      </section>

      {!a ? null : runA.error ? (
        <ErrorBox error={runA.error} />
      ) : runB.error ? (
        <ErrorBox error={runB.error} />
      ) : !runA.data || (b && !runB.data) ? (
        <Loading what="Loading runs" />
      ) : (
        <>
          {[runA.data, ...(runB.data && b ? [runB.data] : [])].map((r, i) => (
            <SelectedIsInit key={r.id} outcome={attackOutcome(r)}>
              <>
                (Run {i === 0 ? "A" : "B"}: <Link to={runPath(r.id)}>#{r.id} {r.name}</Link>.) Its final state is the “final” row of its run page
                {layer && unit != null ? (
                  <>
                    {" "}and <Link to={`${unitPath(r.id, layer, unit)}?state=final`}>unit {unit} in the final state</Link>
                  </>
                ) : null}
                ; the numbers below are the selected state's.
              </>
            </SelectedIsInit>
          ))}
          <ErrorBoundary name="Summary">
            <Headlines a={runA.data} b={runB.data ?? null} />
          </ErrorBoundary>
          {layer && (
            <ErrorBoundary name="Units" resetKey={`${a}-${b}-${layer}`}>
              <UnitsCompare a={runA.data} b={runB.data ?? null} layer={layer} unit={unit} onUnit={(u) => set({ unit: u == null ? null : String(u) })} />
            </ErrorBoundary>
          )}
        </>
      )}
    </div>
  );
}

function Headlines({ a, b }: { a: RunDetail; b: RunDetail | null }) {
  const rows = [a, ...(b ? [b] : [])].flatMap((r, i) =>
    r.table.map((t) => ({ tag: i === 0 ? "A" : "B", run: r, t })),
  );
  // one k in the titles when both runs measure on the same top-k; otherwise each row says its own
  const sameK = !b || a.k_clip === b.k_clip ? a.k_clip : null;
  return (
    <section className="panel" aria-label="Summary">
      <table className="data">
        <thead>
          <tr>
            <th scope="col" />
            <th scope="col">run</th>
            <th scope="col">attack</th>
            <th scope="col">layer</th>
            <th scope="col">state</th>
            <th scope="col" className="num" title="on each run's top-k_clip">{metricLabel("clip_delta", sameK)}</th>
            <th scope="col" className="num">Kendall-τ</th>
            <th scope="col" className="num">{metricLabel("clip_w", sameK)}</th>
            <th scope="col" className="num">Kendall-τ-W</th>
            <th scope="col" className="num">Acc</th>
            <th scope="col" className="num">ΔAcc</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(({ tag, run, t }) => (
            <tr key={`${tag}-${t.layer}`}>
              <td>
                <span className={`badge tag${tag}`}>{tag}</span>
              </td>
              <td>
                <Link to={`/runs/${run.id}`}>
                  #{run.id} {run.name}
                </Link>
                {run.model_id != null && (
                  <>
                    {" "}
                    <Link className="muted small" to={`/models/${run.model_id}`}>
                      {run.model ?? `model ${run.model_id}`}
                    </Link>
                  </>
                )}
              </td>
              <td>{attackLabel(run.attack?.kind as string)}</td>
              <td className="mono">{t.layer}</td>
              <td>
                selected{attackOutcome(run)?.selected_is_init ? <span className="badge over" title="no evaluated state stayed within the accuracy budget">= θ_init</span> : null}
                {sameK == null && <span className="muted small"> · top-{run.k_clip}</span>}
              </td>
              <td className="num">{clip(t.clip_delta)}</td>
              <td className="num">{tau(t.kendall_tau)}</td>
              <td className="num">{clip(t.clip_w)}</td>
              <td className="num">{tau(t.kendall_tau_w)}</td>
              <td className="num">{pct(t.acc)}</td>
              <td className="num">{signed(t.delta_acc)}</td>
            </tr>
          ))}
          {!rows.length && (
            <tr>
              <td colSpan={11} className="muted">
                No results yet (the runs may still be running).
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}

const PAGE = 20;

/** "attacked" for an attack, "targeted (control: not attacked)" for the α = 0 control (issue 19, item 4). */
const verb = (r: RunDetail | null) => (unitRole(r?.attack?.kind as string | undefined).badge === "attacked" ? "attacked" : "targeted");

function bGroups(b: RunDetail | null): ScatterGroup[] {
  const v = verb(b);
  return [
    { key: "b", label: `${v} by B${v === "targeted" ? " (control, not attacked)" : ""}`, className: "g-attacked" },
    { key: "not-b", label: `not ${v} by B`, className: "g-other" },
  ];
}

/** Tags for the runs whose attack included the unit (issue 13, item 15: B's were not marked). */
function AttackedBy({ x, a, b }: { x: Merged; a: RunDetail; b: RunDetail | null }) {
  const tags = [x.a?.attacked ? "A" : null, b && x.b?.attacked ? "B" : null].filter((t): t is "A" | "B" => t != null);
  if (!tags.length) return <span className="muted" title="neither run attacked this unit">none</span>;
  return (
    <>
      {tags.map((t) => (
        <span key={t} className={`badge tag${t}`} title={`run ${t} ${verb(t === "A" ? a : b)} unit ${x.unit}`}>
          {t}
        </span>
      ))}
    </>
  );
}

function UnitsCompare({ a, b, layer, unit, onUnit }: { a: RunDetail; b: RunDetail | null; layer: string; unit: number | null; onUnit: (u: number | null) => void }) {
  const ua = useAllUnits(a.id, layer);
  const ub = useAllUnits(b?.id ?? null, layer);
  const [sort, setSort] = useState<CSort>(b ? "diff" : "a_delta");
  const [page, setPage] = useState(1);
  const merged: Merged[] = useMemo(() => {
    const m = new Map<number, Merged>();
    for (const r of ua.data ?? []) m.set(r.unit, { unit: r.unit, a: r, diff: null });
    for (const r of ub.data ?? []) m.set(r.unit, { ...(m.get(r.unit) ?? { unit: r.unit, diff: null }), b: r });
    const out = [...m.values()].filter((x) => (x.a && !x.a.dead) || (x.b && !x.b.dead));
    for (const x of out) x.diff = x.a?.clip_delta != null && x.b?.clip_delta != null ? x.a.clip_delta - x.b.clip_delta : null;
    const key = (x: Merged): number | null =>
      sort === "unit" ? x.unit : sort === "a_delta" ? x.a?.clip_delta ?? null : sort === "b_delta" ? x.b?.clip_delta ?? null : sort === "diff" ? (x.diff == null ? null : Math.abs(x.diff)) : sort === "a_tau" ? x.a?.kendall_tau ?? null : x.b?.kendall_tau ?? null;
    const dir = sort === "unit" || sort === "a_tau" || sort === "b_tau" ? 1 : -1;
    return out.sort((p, q) => {
      const kp = key(p);
      const kq = key(q);
      if (kp == null) return kq == null ? p.unit - q.unit : 1;
      if (kq == null) return -1;
      return (kp - kq) * dir || p.unit - q.unit;
    });
  }, [ua.data, ub.data, sort]);

  if (ua.error) return <ErrorBox error={ua.error} retry={() => ua.refetch()} />;
  if (ub.error) return <ErrorBox error={ub.error} retry={() => ub.refetch()} />;
  if (!ua.data || (b && !ub.data)) return <Loading what="Loading units" />;
  // a run still running, failed or cancelled before its metrics has no units: say which and why (issue 19, item 5)
  const without = ([[a, ua.data], [b, ub.data]] as const).filter(([r, rows]) => r && rows && rows.length === 0 && r.status !== "succeeded");
  if (without.length)
    return (
      <section className="panel" aria-label="Units">
        {without.map(([r]) => {
          const st = unitListNotice(r!.status, { total: 0 }, true);
          return st ? (
            <div key={r!.id}>
              <h2>
                Run {r === a ? "A" : "B"}: <Link to={runPath(r!.id)}>#{r!.id} {r!.name}</Link>
              </h2>
              <UnitListNotice status={st} reason={r!.error} jobHref={r!.job_id ? `/jobs/${r!.job_id}` : null} />
            </div>
          ) : null;
        })}
      </section>
    );

  const nA = merged.filter((x) => x.a?.attacked).length;
  const nB = merged.filter((x) => x.b?.attacked).length;
  const pages = Math.max(1, Math.ceil(merged.length / PAGE));
  const pg = Math.min(page, pages);
  const rows = merged.slice((pg - 1) * PAGE, pg * PAGE);
  const th = (k: CSort, label: string) => (
    <th scope="col" className="num" aria-sort={sort === k ? (k === "unit" || k.endsWith("tau") ? "ascending" : "descending") : "none"}>
      <button type="button" className="sort" onClick={() => { setSort(k); setPage(1); }}>
        {label}
        <span className="arrow" aria-hidden="true">{sort === k ? (k === "unit" || k.endsWith("tau") ? "▲" : "▼") : "↕"}</span>
      </button>
    </th>
  );
  return (
    <>
      <div className="grid2">
        <section className="panel" aria-label="Units">
          <h2>
            Units · <span className="mono">{layer}</span>{" "}
            <span className="muted small">
              ({merged.length} live units; A {verb(a)} {nA}{b ? `, B ${verb(b)} ${nB}` : ""}
              {[a, b].some((r) => r && verb(r) === "targeted") ? "; targeted = the units an α = 0 control mirrors, not attacked" : ""})
            </span>
          </h2>
          <div className="scroll-x">
          <table className="data">
            <thead>
              <tr>
                {th("unit", "unit")}
                <th scope="col" title="which run's attack (or control) included the unit">attacked by</th>
                {th("a_delta", `A ${metricLabel("clip_delta", a.k_clip)}`)}
                {th("a_tau", "A Kendall-τ")}
                {b && th("b_delta", `B ${metricLabel("clip_delta", b.k_clip)}`)}
                {b && th("b_tau", "B Kendall-τ")}
                {b && th("diff", "|A − B| CLIP-δ")}
              </tr>
            </thead>
            <tbody>
              {rows.map((x) => (
                <tr key={x.unit} className={`clickable${unit === x.unit ? " selected" : ""}`} onClick={() => onUnit(x.unit)}>
                  <td>
                    <button type="button" className="link" onClick={(e) => { e.stopPropagation(); onUnit(x.unit); }}>
                      unit {x.unit}
                    </button>
                  </td>
                  <td className="attacked-by">
                    <AttackedBy x={x} a={a} b={b} />
                  </td>
                  <td className="num">{clip(x.a?.clip_delta)}</td>
                  <td className="num">{tau(x.a?.kendall_tau)}</td>
                  {b && <td className="num">{clip(x.b?.clip_delta)}</td>}
                  {b && <td className="num">{tau(x.b?.kendall_tau)}</td>}
                  {b && <td className="num">{clip(x.diff == null ? null : x.diff)}</td>}
                </tr>
              ))}
            </tbody>
          </table>
          </div>
          <nav className="pager" aria-label="Pages">
            <button type="button" disabled={pg <= 1} onClick={() => setPage(pg - 1)}>
              ‹ previous
            </button>
            <span>
              page {pg} of {pages}
            </span>
            <button type="button" disabled={pg >= pages} onClick={() => setPage(pg + 1)}>
              next ›
            </button>
          </nav>
        </section>
        <section className="panel">
          <ErrorBoundary name="Scatter" resetKey={`${a.id}-${b?.id}-${layer}`}>
          {b ? (
            <Scatter
              title="CLIP-δ per unit: A vs B"
              xLabel={`A ${metricLabel("clip_delta", a.k_clip)}, selected state`}
              yLabel={`B ${metricLabel("clip_delta", b.k_clip)}, selected state`}
              points={merged
                .filter((x) => x.a?.clip_delta != null && x.b?.clip_delta != null)
                .map((x) => ({ x: x.a!.clip_delta!, y: x.b!.clip_delta!, id: x.unit, label: `unit ${x.unit}${x.b?.attacked ? ` (${verb(b)} by B)` : ""}`, group: x.b?.attacked ? "b" : "not-b" }))}
              groups={bGroups(b)}
              onPick={(p) => onUnit(p.id)}
              caption={`Above the diagonal: B changed the unit's top-k more than A. Filled dots: units B ${verb(b)}. Click a dot to compare its galleries.`}
            />
          ) : (
            <Scatter
              title="Kendall-τ vs CLIP-δ per unit"
              xLabel="Kendall-τ"
              yLabel="CLIP-δ"
              diagonal={false}
              points={merged.filter((x) => x.a?.clip_delta != null && x.a?.kendall_tau != null).map((x) => ({ x: x.a!.kendall_tau!, y: x.a!.clip_delta!, id: x.unit }))}
              onPick={(p) => onUnit(p.id)}
              caption="Bottom right: the unit kept its ranking and its top-k. Click a dot to compare."
            />
          )}
          </ErrorBoundary>
        </section>
      </div>
      {unit != null && (
        <ErrorBoundary name={`Unit ${unit} side by side`} resetKey={unit}>
          <UnitSideBySide a={a} b={b} layer={layer} unit={unit} />
        </ErrorBoundary>
      )}
    </>
  );
}

function UnitSideBySide({ a, b, layer, unit }: { a: RunDetail; b: RunDetail | null; layer: string; unit: number }) {
  const ua = useUnit(a.id, layer, unit);
  const ub = useUnit(b?.id ?? 0, layer, unit);
  const [role, setRole] = useState<"val" | "train">("val");
  if (ua.error) return <ErrorBox error={ua.error} />;
  if (!ua.data || (b && !ub.data && !ub.error)) return <Loading what={`Loading unit ${unit}`} />;
  const ta = ua.data.topk?.[role];
  const tb = ub.data?.topk?.[role];
  const sameModel = b ? a.model_id === b.model_id : true;
  const beforeIds = new Set((ta?.before ?? []).map((i) => i.image_id));
  return (
    <section className="panel" aria-label={`Unit ${unit} side by side`}>
      <div className="section-head">
        <h2>
          Unit {unit} · <span className="mono">{layer}</span>
        </h2>
        <div className="tabs" role="tablist" aria-label="Image set">
          {(["val", "train"] as const).map((r) => (
            <button key={r} type="button" role="tab" aria-selected={role === r} className={role === r ? "on" : ""} onClick={() => setRole(r)}>
              {r === "val" ? "validation" : "training"}
            </button>
          ))}
        </div>
        <Link to={unitPath(a.id, layer, unit)}>open in run A →</Link>
        {b && <Link to={unitPath(b.id, layer, unit)}>open in run B →</Link>}
      </div>
      <div className={`pair ${b ? "three" : ""}`}>
        <Gallery title={`${sameModel ? "Model" : "A"} before (θ_init)`} images={ta?.before ?? []} variant="before" />
        <Gallery title={`A after (selected state; ${attackLabel(a.attack?.kind as string)}, ${ua.data.attacked ? verb(a) : `not ${verb(a)}`})`} images={ta?.after ?? []} variant="after" otherIds={beforeIds} other={ta?.before} measureK={a.k_clip} />
        {b && !sameModel && <Gallery title="B before (θ_init)" images={tb?.before ?? []} variant="before" />}
        {b && (ub.error ? <ErrorBox error={ub.error} /> : <Gallery title={`B after (selected state; ${attackLabel(b.attack?.kind as string)}, ${ub.data?.attacked ? verb(b) : `not ${verb(b)}`})`} images={tb?.after ?? []} variant="after" otherIds={sameModel ? beforeIds : new Set((tb?.before ?? []).map((i) => i.image_id))} other={sameModel ? ta?.before : tb?.before} measureK={b.k_clip} />)}
      </div>
    </section>
  );
}
