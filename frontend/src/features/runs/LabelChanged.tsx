// The run page's "label changed" view (issue 22): the attacked units whose class-concept label
// in the run's main state differs from their label before the attack (θ_init), from the label
// index (`GET /units?run_id=&state=&changed=true&attacked=true`), each with its label before → after.
import { Link } from "react-router";
import type { RunDetailFull } from "../../api/contract";
import { Empty, ErrorBox, Loading } from "../../components/States";
import { unitRole } from "../../lib/format";
import { attackOutcome } from "../../lib/rows";
import { useRunHref } from "../../lib/share";
import { HitLabel, HitThumb } from "../search/Search";
import { firstPerUnit, hitHref, STATE_WORDS, unitKey, useAllLabels, type LabelState } from "../search/labelQueries";

/**
 * The state the run's results are read in: the selected one, or the final one when the
 * selected state is θ_init (no evaluated state stayed within the budget: nothing changed there).
 */
export function mainLabelState(run: RunDetailFull): Exclude<LabelState, "before"> {
  return attackOutcome(run)?.selected_is_init ? "final" : "selected";
}

export function LabelChanged({ run, state, attackKind }: { run: RunDetailFull; state: Exclude<LabelState, "before">; attackKind?: string }) {
  const href = useRunHref();
  const role = unitRole(attackKind);
  const after = useAllLabels({ run_id: run.id, state, changed: true, attacked: true, sort: "unit" });
  // the same units' labels before the attack (every attacked unit's: a label before never "changed")
  const before = useAllLabels({ run_id: run.id, state: "before", attacked: true, sort: "unit" }, !!after.data?.items.length);
  const beforeOf = before.data ? firstPerUnit(before.data.items) : null;
  const busy = after.isFetching || before.isFetching;
  const data = after.data;
  return (
    <div className="label-changed" aria-busy={busy} data-testid="label-changed">
      {after.isPending ? (
        <Loading what="Loading the units whose label changed" />
      ) : after.error ? (
        <ErrorBox error={after.error} retry={() => after.refetch()} />
      ) : !data?.items.length ? (
        <Empty>
          No {role.badge === "attacked" ? "attacked" : "target"} unit's label changed in the {STATE_WORDS[state]} state (or the run was
          measured before labels existed).
        </Empty>
      ) : (
        <>
          <p className="muted small" aria-live="polite">
            {data.total.toLocaleString("en")} {role.badge === "attacked" ? "attacked" : "target"} unit
            {data.total === 1 ? "" : "s"} whose label (the class most over-represented in the validation top-k) in the{" "}
            {STATE_WORDS[state]} state is not the one before the attack
            {data.items.length < data.total ? ` (the first ${data.items.length} listed)` : ""}.
          </p>
          <div className="scroll-x" aria-busy={busy}>
            <table className="data compact" aria-label="Units whose label changed">
              <thead>
                <tr>
                  <th scope="col">unit</th>
                  <th scope="col">layer</th>
                  <th scope="col">label before</th>
                  <th scope="col" />
                  <th scope="col">label after ({STATE_WORDS[state]})</th>
                  <th scope="col">
                    <span className="sr-only">top image after</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {data.items.map((h) => {
                  const b = beforeOf?.get(unitKey(h.layer, h.unit));
                  return (
                    <tr key={`${h.layer}-${h.unit}`} data-testid="label-changed-unit">
                      <td>
                        <Link to={href(hitHref(h))}>unit {h.unit}</Link>
                      </td>
                      <td className="mono">{h.layer}</td>
                      <td data-testid="label-before">{b ? <HitLabel h={b} /> : <span className="muted">{before.isFetching ? "…" : "—"}</span>}</td>
                      <td aria-hidden="true">→</td>
                      <td data-testid="label-after">
                        <HitLabel h={h} /> <span className="badge attacked">changed</span>
                      </td>
                      <td className="thumb-cell">
                        <HitThumb h={h} size={40} />
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        </>
      )}
    </div>
  );
}
