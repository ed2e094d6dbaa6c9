// The units of a run's shown layer: its layer tabs and the unit table, sorted, filtered and
// paged through the address (?sort=, ?order=, ?page=, ?attacked=0), so a view can be linked.
import { Link, useNavigate, useSearchParams } from "react-router";
import type { RunDetailFull } from "../../api/contract";
import { type UnitQuery, useUnits } from "../../api/queries";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { ErrorBox, Loading } from "../../components/States";
import { unitRole } from "../../lib/format";
import { layerPath, unitPath, useRunHref } from "../../lib/share";
import { LabelChanged, mainLabelState } from "./LabelChanged";
import { attackOf, layerInfo } from "./RunPanels";
import { FIRST_ORDER, UnitListNotice, unitListNotice, UnitTable, type SortKey } from "./UnitTable";

const SORTS: SortKey[] = ["unit", "clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap"];

/** The unit table's view as the address says: sort key and order, page, attacked units only. */
function useUnitQuery() {
  const [sp, setSp] = useSearchParams();
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
  const update = (changes: Record<string, string | null>) => {
    const next = new URLSearchParams(sp);
    for (const [k, v] of Object.entries(changes)) v == null ? next.delete(k) : next.set(k, v);
    setSp(next, { replace: true });
  };
  return { q, update, sp };
}

export function UnitsPanel({ run, layers, layer, readOnly }: { run: RunDetailFull; layers: string[]; layer: string; readOnly: boolean }) {
  const navigate = useNavigate();
  const href = useRunHref();
  const { q, update, sp } = useUnitQuery();
  const { sort, order } = q;
  const attack = attackOf(run);
  // a run without results (queued, running, failed or cancelled before its metrics) has no unit rows to ask for
  const unitsAsked = run.status === "succeeded" || !!run.table.length;
  const units = useUnits(run.id, layer, q, unitsAsked);
  const notice = unitListNotice(run.status, units.data, unitsAsked);
  const info = layerInfo(run, layer);
  const role = unitRole(attack.kind as string | undefined);
  // "label changed" (issue 22): the attacked units relabelled by the attack, in the run's main state or the one asked for
  const relabelled = sp.get("relabelled") === "1";
  const hasFinal = (run.rows ?? []).some((r) => r.state === "final");
  const labelState = sp.get("lstate") === "final" && hasFinal ? "final" : sp.get("lstate") === "selected" ? "selected" : mainLabelState(run);
  return (
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
      {unitsAsked && (
        <div className="row wrap label-toggle">
          <label className="check" title="the attacked units whose label (the class most over-represented in their validation top-k) is not the one before the attack">
            <input
              type="checkbox"
              checked={relabelled}
              onChange={(e) => update({ relabelled: e.target.checked ? "1" : null, lstate: null })}
            />{" "}
            label changed
          </label>
          {relabelled && hasFinal && (
            <label className="label-sort">
              in the{" "}
              <select aria-label="Label state" value={labelState} onChange={(e) => update({ lstate: e.target.value })}>
                <option value="selected">selected state</option>
                <option value="final">final state</option>
              </select>
            </label>
          )}
        </div>
      )}
      {relabelled && unitsAsked ? (
        <LabelChanged run={run} state={labelState} attackKind={attack.kind as string | undefined} />
      ) : units.error ? (
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
  );
}
