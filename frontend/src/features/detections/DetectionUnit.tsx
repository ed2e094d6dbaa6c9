// One unit of a detection (SPEC §6: the evidence "shown in the dashboard next to the
// galleries"): its suspicion, rank and every measure's value with its calibrated suspicion,
// beside the reference's and the suspect's top-k images (the population regime has no
// reference: the suspect's top-k with the over-represented class marked). Previous / next
// by rank (← / → keys) and by unit index; an address naming a layer the detection did not
// check, or a unit past the layer's last, is a not-found page with the API's message.
import { Link, useNavigate, useParams } from "react-router";
import { useDetection, useDetectionUnit } from "../../api/queries";
import { Gallery } from "../../components/Gallery";
import { ErrorBox, Loading, NotFound } from "../../components/States";
import { DASH, num } from "../../lib/format";
import { useArrowKeys } from "../../lib/keys";
import { usePageTitle } from "../../lib/title";
import {
  detectionPath, detectionUnitPath, detectionsPath, detectResult, flaggedText, MEASURES, measureLabel, pText, SuspicionBar,
  VerdictBadge, type DetectUnitDetail, type Verdict,
} from "./DetectionShared";

export function DetectionUnitPage() {
  const params = useParams();
  const id = Number(params.detection);
  const layer = params.layer ?? "";
  const unit = Number(params.unit);
  const navigate = useNavigate();
  const q = useDetectionUnit(id, layer, unit);
  const det = useDetection(id);
  const u = q.data;
  const status = (q.error as { status?: number } | null)?.status;
  const name = u?.detection_name ?? det.data?.name ?? `detection ${id}`;
  usePageTitle(status === 404 ? `Unit ${unit} not found · ${layer} · ${name}` : `Unit ${Number.isFinite(unit) ? unit : "?"} · ${layer} · ${name}`);

  useArrowKeys(u?.prev_ranked ?? null, u?.next_ranked ?? null, (to) => navigate(detectionUnitPath(id, layer, to)));

  if (!(id > 0) || !Number.isInteger(unit) || unit < 0)
    return (
      <NotFound title="No such unit">
        <p>
          Addresses look like <code>/detections/12/layers/relu3/units/7</code>. See <Link to={detectionsPath}>the detections</Link>.
        </p>
      </NotFound>
    );
  if (status === 404)
    return (
      <NotFound title={`Detection ${id} has no unit ${unit} of ${layer}`}>
        <p>{(q.error as Error).message}</p>
        <p>
          <Link to={detectionPath(id)}>Back to {name}</Link>
        </p>
      </NotFound>
    );
  if (status === 409)
    return (
      <section className="panel" aria-label="Not finished">
        <h1>{name} has not finished</h1>
        <p>{(q.error as Error).message}. Its units are ranked once it succeeds.</p>
        <p>
          <Link to={detectionPath(id)}>Follow its progress</Link>
        </p>
      </section>
    );
  if (q.isPending) return <Loading what={`Loading unit ${unit}`} />;
  if (q.error || !u) return <ErrorBox error={q.error} retry={() => q.refetch()} />;

  const res = det.data ? detectResult(det.data) : null;
  const threshold = res?.thresholds.unit;
  const ranked = (det.data?.units[layer] ?? []).filter((x) => x.rank != null).length;
  const lv = u.layer_verdict as { verdict?: Verdict; p_value?: number; n_flagged?: number; n_units?: number; expected_flagged?: number; flagged_class?: number | null };
  const flaggedClass = u.regime === "population" ? (lv.flagged_class ?? null) : null;
  const flagged = threshold != null && u.suspicion != null && u.suspicion > threshold;
  // issue 24: how far the unit moved beyond what the model's overall change explains (absent in older results)
  const localisedAt = res?.thresholds.localised;
  const localised = localisedAt != null && u.localisation != null && u.localisation > localisedAt;
  const go = (to: number | null) => to != null && navigate(detectionUnitPath(id, layer, to));

  return (
    <div className="page detection-unit">
      <div className="page-head">
        <div>
          <p className="crumbs">
            <Link to={detectionsPath}>Detections</Link> / <Link to={detectionPath(id)}>{u.detection_name}</Link> /{" "}
            <span className="mono">{layer}</span> / unit {u.unit}
          </p>
          <h1>
            Unit {u.unit} <span className="mono muted">{layer}</span>
            {u.dead ? (
              <span className="badge dead">dead</span>
            ) : (
              <span className="badge" data-testid="rank">
                rank {u.rank ?? DASH}
                {ranked ? ` of ${ranked}` : ""}
              </span>
            )}
            {flagged && <span className="badge verdict verdict-manipulated">flagged</span>}
            {localised && (
              <span className="badge verdict verdict-suspicious" data-testid="localised" title={`localisation above ${localisedAt}`}>
                localised
              </span>
            )}
          </h1>
          <p className="muted">
            {u.n_units} units in {layer} · {u.regime === "reference" ? "compared with the reference" : "judged against the population"}
          </p>
        </div>
        <div className="actions">
          <nav className="unit-nav" aria-label="By rank">
            <button type="button" disabled={u.prev_ranked == null} onClick={() => go(u.prev_ranked)} title="The unit ranked just above (← key)">
              ← more suspicious{u.prev_ranked != null ? ` (unit ${u.prev_ranked})` : ""}
            </button>
            <button type="button" disabled={u.next_ranked == null} onClick={() => go(u.next_ranked)} title="The unit ranked just below (→ key)">
              less suspicious{u.next_ranked != null ? ` (unit ${u.next_ranked})` : ""} →
            </button>
          </nav>
          <nav className="unit-nav" aria-label="By index">
            <button type="button" disabled={u.prev_unit == null} onClick={() => go(u.prev_unit)}>
              ← unit {u.prev_unit ?? ""}
            </button>
            <button type="button" disabled={u.next_unit == null} onClick={() => go(u.next_unit)}>
              unit {u.next_unit ?? ""} →
            </button>
          </nav>
        </div>
      </div>

      <div className="natural-synthetic detect-unit">
        <section className="panel" aria-label="Top-k images">
          <Galleries u={u} flaggedClass={flaggedClass} className={flaggedClass != null ? res?.classes[flaggedClass] : undefined} />
        </section>
        <section className="panel" aria-label="Evidence">
          <h2>Evidence</h2>
          <dl className="kv evidence">
            <div>
              <dt>suspicion</dt>
              <dd>
                <SuspicionBar value={u.suspicion} threshold={threshold} />
              </dd>
            </div>
            {u.localisation != null && (
              <div data-testid="localisation">
                <dt title="the unit's suspicion with the model's overall change taken out: how far it moved beyond what that change explains">
                  localisation
                </dt>
                <dd>
                  <SuspicionBar value={u.localisation} threshold={localisedAt} />
                </dd>
              </div>
            )}
            <div>
              <dt>driven by</dt>
              <dd>{measureLabel(u.driver)}</dd>
            </div>
          </dl>
          <table className="data compact measures" aria-label="Measures">
            <thead>
              <tr>
                <th scope="col">measure</th>
                <th scope="col" className="num">value</th>
                <th scope="col">calibrated suspicion</th>
              </tr>
            </thead>
            <tbody>
              {Object.entries(u.measures).map(([k, m]) => (
                <tr key={k} className={k === u.driver ? "selected" : undefined}>
                  <th scope="row" title={MEASURES[k]?.help}>
                    {measureLabel(k)}
                  </th>
                  <td className="num">{num(m.value)}</td>
                  <td>
                    <SuspicionBar value={m.suspicion} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p className="muted small">
            A suspicion is where the unit's measure falls among the clean population's units: 1 = beyond every clean unit.
            {threshold != null && ` A unit is flagged above ${threshold}.`}
          </p>
          {lv.verdict && (
            <p>
              Layer {layer}: <VerdictBadge verdict={lv.verdict} p={lv.p_value} />
              {lv.n_units != null && lv.n_flagged != null && lv.expected_flagged != null && (
                <span className="muted small"> {flaggedText({ n_flagged: lv.n_flagged, n_units: lv.n_units, expected_flagged: lv.expected_flagged })}</span>
              )}
            </p>
          )}
          {res && (
            <p className="muted small">
              Model verdict: <VerdictBadge verdict={res.verdict} /> ({pText(res.p_value)})
            </p>
          )}
        </section>
      </div>
      <p className="muted small hint-keys">Keys: ← / → the unit ranked just above / below.</p>
    </div>
  );
}

function Galleries({ u, flaggedClass, className }: { u: DetectUnitDetail; flaggedClass: number | null; className?: string }) {
  const sus = u.models.suspect?.name;
  const ref = u.models.reference?.name;
  if (u.dead)
    return (
      <div className="state empty" data-testid="dead-unit">
        <p>
          <strong>Unit {u.unit} is dead</strong>: it scores 0 on every image, so it has no top-k and no suspicion. It is left out of
          the ranking.
        </p>
      </div>
    );
  if (!u.reference_topk)
    return (
      <>
        <Gallery title={`Suspect top-k${sus ? ` · ${sus}` : ""}`} images={u.suspect_topk} variant="after" highlightLabel={flaggedClass} />
        <p className="muted small">
          No reference: the suspect's top-k is judged by its classes against the clean population
          {className ? `; ${className}, over-represented in this layer, is marked` : ""}.
        </p>
      </>
    );
  const refIds = new Set(u.reference_topk.map((i) => i.image_id));
  const susIds = new Set(u.suspect_topk.map((i) => i.image_id));
  return (
    <div className="pair">
      <Gallery title={`Reference top-k${ref ? ` · ${ref}` : ""}`} images={u.reference_topk} variant="before" otherIds={susIds} />
      <Gallery title={`Suspect top-k${sus ? ` · ${sus}` : ""}`} images={u.suspect_topk} variant="after" otherIds={refIds} />
    </div>
  );
}
