// The per-layer unit table: sortable by any metric (server-side), paginated; a row opens the unit.
import { Link } from "react-router";
import { isLive, type JobStatus, type UnitRow } from "../../api/client";
import type { UnitQuery } from "../../api/queries";
import { metric, metricHelp, metricLabel, METRIC_KEYS, unitRole } from "../../lib/format";

export type SortKey = UnitQuery["sort"];

export type UnitTableProps = {
  rows: UnitRow[];
  total: number;
  page: number;
  pageSize: number;
  sort: SortKey;
  order: "asc" | "desc";
  attackedOnly: boolean;
  /** the run's k_clip: CLIP-δ, CLIP-W and the overlap are on each unit's top-k_clip (named in the titles) */
  kClip?: number | null;
  /** the run's attack kind: the α = 0 control ("finetune") calls its units targets, not attacked */
  attackKind?: string | null;
  loading?: boolean;
  onSort: (key: SortKey, order: "asc" | "desc") => void;
  onPage: (page: number) => void;
  onAttackedOnly: (v: boolean) => void;
  onOpen: (unit: number) => void;
  hrefFor: (unit: number) => string;
};

/** The natural first direction: the most changed units first. */
export const FIRST_ORDER: Record<SortKey, "asc" | "desc"> = {
  unit: "asc", clip_delta: "desc", kendall_tau: "asc", clip_w: "desc", kendall_tau_w: "desc", topk_overlap: "asc",
};

export function UnitTable(p: UnitTableProps) {
  const role = unitRole(p.attackKind);
  const pages = Math.max(1, Math.ceil(p.total / p.pageSize));
  const first = p.total === 0 ? 0 : (p.page - 1) * p.pageSize + 1;
  const last = Math.min(p.total, p.page * p.pageSize);
  const header = (key: SortKey, label: string, help?: string) => {
    const active = p.sort === key;
    const next = active ? (p.order === "asc" ? "desc" : "asc") : FIRST_ORDER[key];
    return (
      <th key={key} aria-sort={active ? (p.order === "asc" ? "ascending" : "descending") : "none"} scope="col">
        <button type="button" className="sort" title={help ? `${help}. Sort by ${label}` : `Sort by ${label}`} onClick={() => p.onSort(key, next)}>
          {label}
          <span className="arrow" aria-hidden="true">{active ? (p.order === "asc" ? "▲" : "▼") : "↕"}</span>
        </button>
      </th>
    );
  };
  return (
    <div className={`unit-table${p.loading ? " is-loading" : ""}`}>
      <div className="table-tools">
        <label className="check">
          <input type="checkbox" checked={p.attackedOnly} onChange={(e) => p.onAttackedOnly(e.target.checked)} /> {role.only}
        </label>
        <span className="muted" aria-live="polite">
          {p.total === 0 ? "no units" : `units ${first}–${last} of ${p.total}`}
        </span>
      </div>
      <div className="scroll-x">
        <table className="data">
          <thead>
            <tr>
              {header("unit", "unit")}
              <th scope="col">state</th>
              {METRIC_KEYS.map((k) => header(k, metricLabel(k, p.kClip), metricHelp(k, p.kClip)))}
            </tr>
          </thead>
          <tbody>
            {p.rows.length === 0 && (
              <tr>
                <td colSpan={2 + METRIC_KEYS.length} className="muted">
                  {p.attackedOnly ? `No ${role.badge === "attacked" ? "attacked" : "target"} units on this layer. Untick “${role.only}” to see all.` : "No units."}
                </td>
              </tr>
            )}
            {p.rows.map((r) => (
              <tr key={r.unit} className="clickable" onClick={() => p.onOpen(r.unit)}>
                <td>
                  <Link to={p.hrefFor(r.unit)} onClick={(e) => e.stopPropagation()}>
                    unit {r.unit}
                  </Link>
                </td>
                <td>
                  {r.dead ? (
                    <span className="badge dead">dead</span>
                  ) : r.attacked ? (
                    <span className="badge attacked" title={role.help}>{role.badge}</span>
                  ) : (
                    <span className="badge">{role.badge === "attacked" ? "not attacked" : "not a target"}</span>
                  )}
                </td>
                {METRIC_KEYS.map((k) => (
                  <td key={k} className="num">
                    {metric(k, r[k])}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <nav className="pager" aria-label="Unit table pages">
        <button type="button" onClick={() => p.onPage(1)} disabled={p.page <= 1}>
          « first
        </button>
        <button type="button" onClick={() => p.onPage(p.page - 1)} disabled={p.page <= 1}>
          ‹ previous
        </button>
        <span>
          page {p.page} of {pages}
        </span>
        <button type="button" onClick={() => p.onPage(p.page + 1)} disabled={p.page >= pages}>
          next ›
        </button>
        <button type="button" onClick={() => p.onPage(pages)} disabled={p.page >= pages}>
          last »
        </button>
      </nav>
    </div>
  );
}

type RunStatus = JobStatus;

/**
 * Which run status explains a missing unit list, or null when the list (or its loading
 * state) is what to show. A run still queued or running, or one that failed or was
 * cancelled before its metrics step, has no unit rows: the API answers an empty list (or
 * is not asked), and "Loading units…" would spin forever (issue 19, item 5).
 */
export function unitListNotice(status: RunStatus, units: { total: number } | undefined, asked: boolean): Exclude<RunStatus, "succeeded"> | null {
  if (status === "succeeded") return null;
  if (units && units.total > 0) return null; // partial results of a failed or cancelled run: list them
  if (isLive(status)) return status;
  // failed / cancelled: nothing to list when the API was not asked or answered no units
  return !asked || units ? status : null;
}

/** The unit list's place on a run that has none: why, and what to do. */
export function UnitListNotice({ status, reason, jobHref }: { status: Exclude<RunStatus, "succeeded">; reason?: string | null; jobHref?: string | null }) {
  const job = jobHref ? (
    <Link to={jobHref}>{isLive(status) ? "Follow the job's progress" : "Open the job"}</Link>
  ) : null;
  return (
    <div className={`state ${status === "failed" ? "error" : "empty"} unit-list-notice`} role="status" data-testid="unit-list-notice" data-status={status}>
      {status === "queued" && <p><strong>No units yet: the run is queued.</strong> The unit table appears when its metrics step has run.</p>}
      {status === "running" && <p><strong>No units yet: the run is still running.</strong> The unit table appears when its metrics step has run.</p>}
      {status === "failed" && (
        <>
          <p><strong>No units: the run failed before it measured them.</strong></p>
          <p className="mono wrap">{reason || "no reason was recorded"}</p>
        </>
      )}
      {status === "cancelled" && (
        <p>
          <strong>No units: the run was cancelled before it measured them.</strong>
          {reason ? <> ({reason})</> : null} Nothing of it can be listed; launch it again to measure the units.
        </p>
      )}
      {job && <p>{job}</p>}
    </div>
  );
}
