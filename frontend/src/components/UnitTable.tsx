// The per-layer unit table: sortable by any metric (server-side), paginated; a row opens the unit.
import { Link } from "react-router";
import type { UnitRow } from "../api/client";
import type { UnitQuery } from "../api/hooks";
import { METRICS, METRIC_KEYS, num, share } from "../lib/format";

export type SortKey = UnitQuery["sort"];

export type UnitTableProps = {
  rows: UnitRow[];
  total: number;
  page: number;
  pageSize: number;
  sort: SortKey;
  order: "asc" | "desc";
  attackedOnly: boolean;
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
          <input type="checkbox" checked={p.attackedOnly} onChange={(e) => p.onAttackedOnly(e.target.checked)} /> attacked units only
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
              {METRIC_KEYS.map((k) => header(k, METRICS[k].label, METRICS[k].help))}
            </tr>
          </thead>
          <tbody>
            {p.rows.length === 0 && (
              <tr>
                <td colSpan={2 + METRIC_KEYS.length} className="muted">
                  {p.attackedOnly ? "No attacked units on this layer. Untick “attacked units only” to see all." : "No units."}
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
                  {r.dead ? <span className="badge dead">dead</span> : r.attacked ? <span className="badge attacked">attacked</span> : <span className="badge">not attacked</span>}
                </td>
                <td className="num">{num(r.clip_delta)}</td>
                <td className="num">{num(r.kendall_tau)}</td>
                <td className="num">{num(r.clip_w)}</td>
                <td className="num">{num(r.kendall_tau_w)}</td>
                <td className="num">{share(r.topk_overlap)}</td>
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
