// Pruning sweeps (SPEC §5, thesis Chapter 4): the list of sweeps, and one sweep's curves
// (Figs. 4.1–4.4: fine-tuned accuracy and CLIP-δ of push-down and push-up against the
// pruning rate, one figure per method) and its results table (Tables 4.1–4.4 / C–F), every
// point linking to the run of its attack; CSV / JSON / markdown export of the table.
import { useState } from "react";
import { Link, useParams } from "react-router";
import { download, type Schemas } from "../../api/client";
import { useSweep, useSweeps } from "../../api/queries";
import { LineChart, type Series } from "../../components/Charts";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { FilterBar, FilterCheck, Listing, ListScroll, ManageActions, useListParams } from "../../components/Manage";
import { PageHead } from "../../components/PageHead";
import { Empty, ErrorBox, Loading, NotFound, StatusBadge, When } from "../../components/States";
import { attackLabel, clip, DASH, num, overlap, signed, tau } from "../../lib/format";
import { usePageTitle } from "../../lib/title";

export type SweepDetail = Schemas["SweepDetail"];
export type SweepRow = Schemas["SweepTableRow"];

const METHOD_LABEL: Record<string, string> = {
  norm: "Norm pruning",
  oto_filter: "OTO, filter-focused",
  oto_weight: "OTO, weight-focused",
  vulnerability: "Vulnerability pruning",
};
const RATE_LABEL: Record<string, string> = {
  norm: "weights pruned (target)",
  oto_filter: "target group sparsity",
  oto_weight: "target group sparsity",
  vulnerability: "channels of the layer removed",
};
const rate = (v: number | null | undefined) => (v == null ? DASH : `${+(100 * v).toFixed(1)} %`);

/**
 * /sweeps: each sweep with its status and points, hide / delete per sweep (deleting asks
 * first and takes the sweep's jobs, points, runs and unused pruned models; a 409 says why
 * it cannot, e.g. while it runs), a "show hidden" filter kept in the address, and the
 * launch form's link.
 */
export function SweepList() {
  const lp = useListParams();
  const showHidden = lp.get("hidden") === "1";
  const q = useSweeps(showHidden);
  usePageTitle("Sweeps");
  return (
    <div className="page sweeps">
      <PageHead
        title="Sweeps"
        actions={
          <Link to="/sweeps/new" className="button primary">
            + Launch a sweep
          </Link>
        }
      >
        Pruning defences (thesis Chapter 4): each point prunes and fine-tunes the model, then attacks it. Launch one with the form,{" "}
        <code>POST /api/v1/jobs</code> (kind <code>sweep</code>) or <code>fvaudit sweep --demo</code>.
      </PageHead>
      <section className="panel" aria-label="Sweeps">
        <FilterBar label="Filter sweeps">
          <FilterCheck label="show hidden" checked={showHidden} onChange={(v) => lp.set({ hidden: v })} />
        </FilterBar>
        <Listing
          q={q}
          loading="Loading sweeps"
          isEmpty={(d) => d.length === 0}
          empty={
            <>
              {showHidden ? "No sweep yet." : "No sweep to show (hidden sweeps are left out: tick “show hidden”)."} <Link to="/sweeps/new">Launch one</Link>.
            </>
          }
        >
          {(data) => (
            <ListScroll>
              <table className="data manage">
                <thead>
                  <tr>
                    <th>Sweep</th>
                    <th>Status</th>
                    <th>Points</th>
                    <th>Created</th>
                    <th>
                      <span className="sr-only">actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {data.map((s) => (
                    <tr key={s.id} className={s.hidden ? "hidden-row" : undefined} data-sweep={s.id}>
                      <td>
                        <Link to={`/sweeps/${s.id}`}>{s.name}</Link>
                        {s.hidden && <span className="badge"> hidden</span>}
                      </td>
                      <td>
                        <StatusBadge status={s.status} />
                      </td>
                      <td>{s.n_points}</td>
                      <td>
                        <When iso={s.created_at} />
                      </td>
                      <td className="nowrap">
                        <ManageActions what="sweeps" id={s.id} name={s.name} hidden={s.hidden} compact />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </ListScroll>
          )}
        </Listing>
      </section>
    </div>
  );
}

/** The curves of one method: (rate in %, value) per series, points without a value left out. */
export function methodSeries(c: Record<string, unknown[]>, attacks: string[]): { acc: Series[]; delta: Series[] } {
  const rates = (c.rate as (number | null)[]).map((r) => (r == null ? NaN : 100 * r));
  const pts = (ys: unknown[]) =>
    rates.map((x, i) => ({ x, y: ys[i] as number | null })).filter((p): p is { x: number; y: number } => p.y != null && Number.isFinite(p.x));
  return {
    acc: [{ name: "fine-tuned accuracy", points: pts(c.finetuned_acc) }],
    delta: attacks.map((a, i) => ({ name: `CLIP-δ ${attackLabel(a)}`, points: pts(c[`clip_delta_${a}`] ?? []), className: `s${i}` })),
  };
}

/** A sweep without pruning (per-layer rows, per-model ablations): CLIP-δ and accuracy per point. */
export function pointSeries(rows: SweepRow[], attacks: string[]): { acc: Series[]; delta: Series[] } {
  const pts = (a: string, key: "clip_delta" | "acc") =>
    rows.filter((r) => r.attack === a && r[key] != null).map((r) => ({ x: r.point, y: r[key] as number }));
  return {
    acc: attacks.map((a, i) => ({ name: `Acc. after ${attackLabel(a)}`, points: pts(a, "acc"), className: `s${i}` })),
    delta: attacks.map((a, i) => ({ name: `CLIP-δ ${attackLabel(a)}`, points: pts(a, "clip_delta"), className: `s${i}` })),
  };
}

function PointsFigure({ rows, attacks }: { rows: SweepRow[]; attacks: string[] }) {
  const { acc, delta } = pointSeries(rows, attacks);
  const points = [...new Map(rows.map((r) => [r.point, r.label])).entries()];
  return (
    <section className="panel sweep-points" aria-label="Points">
      <h2>Per point</h2>
      <div className="grid2">
        <LineChart series={delta} xLabel="point #" yLabel="CLIP-δ" title="CLIP-δ of the attacks" />
        <LineChart series={acc} xLabel="point #" yLabel="accuracy (%)" title="Accuracy after the attack" />
      </div>
      <p className="point-links">
        {points.map(([idx, label], i) => (
          <span key={idx} className="point">
            {i > 0 && " · "}#{idx} {label}:{" "}
            {rows
              .filter((r) => r.point === idx && r.run_id != null)
              .map((r, j) => (
                <span key={r.attack ?? j}>
                  {j > 0 && ", "}
                  <Link to={`/runs/${r.run_id}`}>{attackLabel(r.attack)}</Link>
                </span>
              ))}
          </span>
        ))}
      </p>
    </section>
  );
}

function MethodFigure({ method, curves, attacks }: { method: string; curves: Record<string, unknown[]>; attacks: string[] }) {
  const { acc, delta } = methodSeries(curves, attacks);
  const labels = curves.label as string[];
  return (
    <section className="panel sweep-method" aria-label={METHOD_LABEL[method] ?? method}>
      <h2>{METHOD_LABEL[method] ?? method}</h2>
      <div className="grid2">
        <LineChart series={acc} xLabel={`${RATE_LABEL[method] ?? "rate"} (%)`} yLabel="accuracy (%)" title="Fine-tuned accuracy" />
        <LineChart series={delta} xLabel={`${RATE_LABEL[method] ?? "rate"} (%)`} yLabel="CLIP-δ" title="CLIP-δ of the attacks" />
      </div>
      <p className="point-links">
        Runs:{" "}
        {labels.map((label, i) => (
          <span key={label} className="point">
            {i > 0 && " · "}
            {label}:{" "}
            {attacks
              .map((a) => [a, (curves[`run_${a}`] as (number | null)[] | undefined)?.[i]] as const)
              .filter(([, run]) => run != null)
              .map(([a, run], j) => (
                <span key={a}>
                  {j > 0 && ", "}
                  <Link to={`/runs/${run}`} title={`${label}: ${attackLabel(a)} run ${run}`}>
                    {attackLabel(a)}
                  </Link>
                </span>
              ))}
          </span>
        ))}
      </p>
    </section>
  );
}

export function SweepTable({ rows }: { rows: SweepRow[] }) {
  return (
    <table className="table sweep-table">
      <thead>
        <tr>
          <th>Point</th>
          <th>Method</th>
          <th title="norm: weights; OTO: target group sparsity; vulnerability: channels of the layer">Rate</th>
          <th>Weights pruned</th>
          <th>Filters pruned</th>
          <th title="accuracy of the audited model before the attack, on the validation images (n)">Fine-tuned Acc.</th>
          <th>Attack</th>
          <th>CLIP-δ</th>
          <th>Kendall-τ</th>
          <th>CLIP-W</th>
          <th>Kendall-τ-W</th>
          <th>top-k overlap</th>
          <th title="share of the attacked units whose label (the class most over-represented in their validation top-k) changed; push-up: share now labelled with the decoy">relabelled</th>
          <th>Acc.</th>
          <th>ΔAcc. (pp)</th>
          <th>Run</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={`${r.point}-${r.attack ?? ""}`}>
            <td>{r.label}</td>
            <td>{r.method ? (METHOD_LABEL[r.method] ?? r.method) : "unpruned"}</td>
            <td>{rate(r.rate)}</td>
            <td>{rate(r.weight_rate)}</td>
            <td>{rate(r.filter_rate)}</td>
            <td>
              {num(r.finetuned_acc, 2)}
              {r.finetune_n_images != null && <span className="muted"> n={r.finetune_n_images}</span>}
            </td>
            <td>{r.attack ? attackLabel(r.attack) : DASH}</td>
            <td>{clip(r.clip_delta)}</td>
            <td>{tau(r.kendall_tau)}</td>
            <td>{clip(r.clip_w)}</td>
            <td>{tau(r.kendall_tau_w)}</td>
            <td>{overlap(r.topk_overlap)}</td>
            <td>
              {r.label_flip_rate != null ? `${Math.round(100 * r.label_flip_rate)}%` : DASH}
              {r.label_decoy_rate != null && <span className="muted"> ({Math.round(100 * r.label_decoy_rate)}% decoy)</span>}
            </td>
            <td>{num(r.acc, 2)}</td>
            <td>{signed(r.delta_acc)}</td>
            <td>
              {r.run_id != null ? <Link to={`/runs/${r.run_id}`}>run {r.run_id}</Link> : DASH}{" "}
              {r.status && r.status !== "succeeded" && <StatusBadge status={r.status} />}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function SweepPage() {
  const id = Number(useParams().sweep);
  const q = useSweep(id);
  const [dlError, setDlError] = useState<unknown>(null);
  usePageTitle(q.data ? `Sweep ${q.data.id}: ${q.data.name}` : Number.isInteger(id) && id > 0 ? `Sweep ${id}` : "No such sweep");
  if (!Number.isInteger(id) || id < 1) return <NotFound title={`No sweep ${useParams().sweep}`} />;
  if (q.isPending) return <Loading what="Loading the sweep" />;
  if (q.error) return <ErrorBox error={q.error} retry={() => q.refetch()} />;
  const s = q.data;
  const methods = Object.keys(s.curves);
  const failed = s.points.filter((p) => p.prune_status === "failed" || Object.values(p.audits).some((a) => a.status === "failed"));
  const exp = (format: string, ext: string) => () =>
    download(`/api/v1/sweeps/${s.id}/table?format=${format}`, `sweep-${s.id}.${ext}`).catch(setDlError);
  return (
    <>
      <section className="panel">
        <h1>
          {s.name} <StatusBadge status={s.status} />
        </h1>
        <p className="muted">
          {s.n_points} points · attacks {s.attacks.map(attackLabel).join(", ")} · <Link to={`/jobs/${s.id}`}>job {s.id}</Link> ·
          created <When iso={s.created_at} />
        </p>
        {s.error && (
          <p className="error" role="alert">
            {s.error}
          </p>
        )}
        {failed.length > 0 && (
          <p className="muted">
            Failed points (the others keep their results): {failed.map((p) => p.label).join(", ")}
          </p>
        )}
        <div className="actions">
          <button type="button" onClick={exp("csv", "csv")}>
            Export CSV
          </button>
          <button type="button" onClick={exp("json", "json")}>
            Export JSON
          </button>
          <button type="button" onClick={exp("md", "md")}>
            Export markdown
          </button>
        </div>
        {dlError != null && <ErrorBox error={dlError} title="Export failed" />}
      </section>
      {methods.length === 0 ? (
        s.rows.length > 0 ? (
          <ErrorBoundary name="Sweep figure">
            <PointsFigure rows={s.rows} attacks={s.attacks} />
          </ErrorBoundary>
        ) : (
          <Empty>No point yet.</Empty>
        )
      ) : (
        methods.map((m) => (
          <ErrorBoundary key={m} name={`${METHOD_LABEL[m] ?? m} figure`}>
            <MethodFigure method={m} curves={s.curves[m] as Record<string, unknown[]>} attacks={s.attacks} />
          </ErrorBoundary>
        ))
      )}
      <ErrorBoundary name="Results table">
        <section className="panel">
          <h2>Results</h2>
          <SweepTable rows={s.rows} />
        </section>
      </ErrorBoundary>
    </>
  );
}
