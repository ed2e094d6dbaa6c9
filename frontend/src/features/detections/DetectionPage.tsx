// One detection (SPEC §6): while it runs, its live progress; when it failed, the error;
// when it succeeded, the model verdict with its p-value and the evidence that drove it,
// then one card per layer (its verdict, evidence, the class shares of the population
// regime) with every unit ranked by suspicion, each row a link to the unit's page. The
// reference regime's cards also show what the layer was calibrated with (issue 24: the clean
// family, its reach, "out of calibration", the envelope plot) and the localised units.
import { useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { isLive } from "../../api/client";
import { useDetection } from "../../api/queries";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { ErrorBox, Loading, NotFound, StatusBadge, When } from "../../components/States";
import { DASH, num } from "../../lib/format";
import { usePageTitle } from "../../lib/title";
import { CalibrationBlock, LocalisedUnits } from "./DetectionCalibration";
import {
  detectionUnitPath, detectionsPath, detectResult, DetectionProgress, evidenceLabel, flaggedText, isInconclusive, MEASURES,
  measureLabel, OUT_OF_CALIBRATION, OUT_OF_CALIBRATION_TEXT, pText, SuspicionBar, VerdictBadge, type ClassShares,
  type DetectionDetail, type DetectModel, type DetectResult, type DetectUnit, type LayerResult,
} from "./DetectionShared";

/** A layer's table shows this many units until "show all". */
const TABLE_FIRST = 256;

export function DetectionPage() {
  const raw = useParams().detection;
  const id = Number(raw);
  const q = useDetection(id);
  const d = q.data;
  const missing = (q.error as { status?: number } | null)?.status === 404;
  usePageTitle(d ? `Detection ${d.name}` : missing || !(id > 0) ? `No detection ${raw}` : `Detection ${id}`);

  if (!Number.isInteger(id) || id < 1)
    return (
      <NotFound title={`No detection ${raw}`}>
        <p>
          Addresses look like <code>/detections/12</code>. See <Link to={detectionsPath}>the detections</Link>.
        </p>
      </NotFound>
    );
  if (q.isPending) return <Loading what={`Loading detection ${id}`} />;
  if (missing)
    return (
      <NotFound title={`There is no detection ${id}`}>
        <p>
          {(q.error as Error).message} <Link to={detectionsPath}>All detections</Link>.
        </p>
      </NotFound>
    );
  if (q.error || !d) return <ErrorBox error={q.error} retry={() => q.refetch()} />;
  const res = detectResult(d);

  return (
    <div className="page detection">
      <div className="page-head">
        <div>
          <p className="crumbs">
            <Link to={detectionsPath}>Detections</Link> / detection {d.id}
          </p>
          <h1>
            {d.name} <StatusBadge status={d.status} />
          </h1>
          <p className="muted">
            {d.regime === "reference" ? "with a reference" : "population only (no reference)"} · layers{" "}
            <span className="mono">{d.layers.join(", ")}</span> · <Link to={`/jobs/${d.id}`}>job {d.id}</Link> (log) · created{" "}
            <When iso={d.created_at} absolute={!isLive(d)} />
            {d.finished_at && (
              <>
                {" "}· finished <When iso={d.finished_at} absolute />
              </>
            )}
          </p>
        </div>
      </div>

      {isLive(d) && (
        <section className="panel" aria-label="Progress">
          <h2>Checking the model…</h2>
          <DetectionProgress d={d} />
          <p className="muted small">
            Each model is scanned once over the image set, then the top-k are compared and calibrated against the population. The
            verdicts appear here when it ends.
          </p>
        </section>
      )}
      {d.status === "failed" && (
        <section className="state error" role="alert">
          <strong>The detection failed</strong>
          <p className="mono wrap">{d.error ?? "no error message was recorded"}</p>
          <p>
            The <Link to={`/jobs/${d.id}`}>job's page</Link> has its log and traceback. Fix the cause and{" "}
            <Link to={`${detectionsPath}#check`}>check again</Link>.
          </p>
        </section>
      )}
      {d.status === "cancelled" && <div className="banner">This detection was cancelled{d.error ? `: ${d.error}` : ""}.</div>}
      {d.status === "succeeded" && res && (
        <ErrorBoundary name="Verdicts">
          <Verdicts d={d} res={res} warnings={[...new Set([...(d.warnings ?? []), ...(res.warnings ?? [])])]} />
        </ErrorBoundary>
      )}
    </div>
  );
}

/** The detection's warnings, above its verdict: what to know before trusting it (issue 19, item 9). */
function Warnings({ warnings, inconclusive }: { warnings: string[]; inconclusive: boolean }) {
  if (!warnings.length && !inconclusive) return null;
  return (
    <div className="banner warn detection-warnings" role="note" aria-label="Warnings" data-testid="detection-warnings">
      <strong>{inconclusive ? "Inconclusive: this detection cannot give a verdict." : "Before trusting this verdict:"}</strong>
      {warnings.length > 0 ? (
        <ul>
          {warnings.map((w) => (
            <li key={w}>{w}</li>
          ))}
        </ul>
      ) : (
        <p>Too few clean models in the population to calibrate a p-value. Add clean models and run it again.</p>
      )}
    </div>
  );
}

function Verdicts({ d, res, warnings }: { d: DetectionDetail; res: DetectResult; warnings: string[] }) {
  const m = res.model;
  const roles = Object.entries(res.models ?? {});
  const inconclusive = isInconclusive(m);
  const outOfCalibration = m.verdict === OUT_OF_CALIBRATION;
  const beyond = d.layers.filter((l) => res.layers[l]?.calibration?.out_of_calibration || res.layers[l]?.verdict === OUT_OF_CALIBRATION);
  return (
    <>
      <Warnings warnings={warnings} inconclusive={inconclusive} />
      <section className={`panel model-verdict verdict-${String(m.verdict).replace(/[^a-z0-9]+/gi, "-")}`} aria-label="Model verdict">
        <div className="verdict-head">
          <VerdictBadge verdict={m.verdict} big />
          <div>
            <p className="p-line">
              <strong>{pText(m.p_value)}</strong>{" "}
              <span className="muted small">
                {inconclusive
                  ? "(the population is too small to calibrate one)"
                  : m.p_value == null
                    ? "(no layer could be judged: each moved beyond the calibration)"
                    : `(“suspicious” below ${res.thresholds.suspicious_p}, “manipulated” below ${res.thresholds.manipulated_p})`}
              </span>
            </p>
            <p data-testid="evidence">
              <strong>{flaggedText(m)}</strong>{" "}
              {!inconclusive && (
                <span className="muted small">
                  (suspicion above {res.thresholds.unit}; {pText(m.p_units)})
                </span>
              )}
            </p>
          </div>
        </div>
        {outOfCalibration && (
          <p className="out-of-calibration" role="note" data-testid="out-of-calibration">
            <strong>Out of calibration:</strong> this model {OUT_OF_CALIBRATION_TEXT}
            {beyond.length > 0 && (
              <>
                {" "}
                (layer{beyond.length === 1 ? "" : "s"} <span className="mono">{beyond.join(", ")}</span>)
              </>
            )}
            . Its evidence is shown below; no claim is made from it.
          </p>
        )}
        {Object.keys(m.layer_evidence).length > 0 && (
          <ul className="evidence-list" aria-label="Layer evidence">
            {Object.entries(m.layer_evidence).map(([k, v]) => (
              <li key={k}>
                {evidenceLabel(k)}: suspicion <SuspicionBar value={v} />
              </li>
            ))}
          </ul>
        )}
        {m.flagged_class != null && res.classes[m.flagged_class] != null && (
          <p>
            Over-represented class: <strong>{res.classes[m.flagged_class]}</strong>
          </p>
        )}
        <dl className="kv roles">
          {roles.map(([role, x]) => (
            <div key={role}>
              <dt>{role}</dt>
              <dd className="small">
                <ModelName m={x} />
              </dd>
            </div>
          ))}
        </dl>
        {(res.notes?.length > 0 || res.embedder_warning) && (
          <ul className="muted small">
            {res.embedder_warning && <li>{res.embedder_warning}</li>}
            {res.notes.map((n) => (
              <li key={n}>{n}</li>
            ))}
          </ul>
        )}
        <p className="muted small">
          {res.embedder ? `Embedder ${res.embedder} · ` : ""}k = {res.k}, k for CLIP-δ = {res.k_clip} · a unit's suspicion is where its
          measures fall among the population's units (1 = beyond every clean unit).
        </p>
      </section>
      {d.layers.map((layer) =>
        res.layers[layer] ? (
          <ErrorBoundary key={layer} name={`Layer ${layer}`}>
            <LayerCard id={d.id} layer={layer} v={res.layers[layer]} units={d.units[layer] ?? []} res={res} />
          </ErrorBoundary>
        ) : null,
      )}
    </>
  );
}

function ModelName({ m }: { m: DetectModel }) {
  return (
    <>
      <Link to={`/models/${m.model_id}`}>{m.name}</Link>
      {m.recipe && (
        <span className="recipe" data-testid="recipe">
          {" "}
          · recipe <span className="mono">{m.recipe}</span>
        </span>
      )}
      {m.weights_from && typeof m.weights_from.job_id === "number" && (
        <>
          {" "}
          · <Link to={`/jobs/${m.weights_from.job_id}`}>attack job {m.weights_from.job_id}</Link>
        </>
      )}
    </>
  );
}

function LayerCard({ id, layer, v, units, res }: { id: number; layer: string; v: LayerResult; units: DetectUnit[]; res: DetectResult }) {
  const [all, setAll] = useState(false);
  const navigate = useNavigate();
  const shown = all ? units : units.slice(0, TABLE_FIRST);
  const measures = v.measures;
  // an inconclusive layer flags nothing: its suspicions rank the units, no threshold applies
  const inconclusive = isInconclusive(v);
  const th = inconclusive ? undefined : res.thresholds.unit;
  const localisedAt = inconclusive ? undefined : res.thresholds.localised;
  // results from before issue 24 have no localisation: no column then
  const hasLocalisation = units.some((u) => u.localisation != null);
  return (
    <section className="panel layer-card" aria-label={`Layer ${layer}`}>
      <div className="section-head">
        <h2>
          <span className="mono">{layer}</span> <VerdictBadge verdict={v.verdict} p={v.p_value} />
        </h2>
      </div>
      <p>
        {flaggedText(v)} {v.p_units != null && <span className="muted small">({pText(v.p_units)})</span>}
        {v.dead_units.length > 0 && <span className="muted small"> · {v.dead_units.length} dead units, not ranked</span>}
      </p>
      {v.layer_values?.label_flip_rate != null && (
        <p data-testid="relabelled" title="the share of live units whose label (the class most over-represented in the validation top-k) differs between the reference and this model: what an interpreter would now conclude differently">
          relabelled: <strong>{Math.round(100 * v.layer_values.label_flip_rate)}%</strong> of the live units
          {v.layer_values.label_flip_to != null && res.classes?.[v.layer_values.label_flip_to] != null && v.layer_values.label_flip_to_share != null && (
            <span className="muted small"> ({Math.round(100 * v.layer_values.label_flip_to_share)}% of those now {res.classes[v.layer_values.label_flip_to]})</span>
          )}
        </p>
      )}
      {Object.keys(v.layer_evidence).length > 0 && (
        <ul className="evidence-list">
          {Object.entries(v.layer_evidence).map(([k, s]) => (
            <li key={k}>
              {evidenceLabel(k)}
              {v.layer_values[k] != null && (
                <span className="muted small"> ({Number.isInteger(v.layer_values[k]) ? v.layer_values[k] : num(v.layer_values[k], 4)})</span>
              )}
              : suspicion <SuspicionBar value={s} />
            </li>
          ))}
        </ul>
      )}
      {v.calibration && (
        <CalibrationBlock id={id} layer={layer} v={v} cal={v.calibration} units={units} threshold={th} localisedAt={localisedAt} />
      )}
      {(v.calibration || (v.localised_units?.length ?? 0) > 0) && v.localised_units && (
        <LocalisedUnits id={id} layer={layer} units={v.localised_units} count={v.layer_values?.localised_units} threshold={localisedAt} />
      )}
      {v.class_shares && <ClassShareChart shares={v.class_shares} classes={res.classes} flagged={v.flagged_class} layer={layer} />}
      <p className="muted small">
        Every unit by suspicion, the most suspicious first; each measure shows its value · its calibrated suspicion.{" "}
        {inconclusive ? "No unit is flagged: with too few clean models the suspicions only rank the units." : `A unit is flagged above ${th}.`}
      </p>
      <div className="scroll-x">
        <table className="data compact detect-units" aria-label={`Units of ${layer} by suspicion`}>
          <thead>
            <tr>
              <th scope="col" className="num">rank</th>
              <th scope="col">unit</th>
              <th scope="col">suspicion</th>
              {hasLocalisation && (
                <th scope="col" title="the unit's suspicion with the model's overall change taken out: how far it moved beyond what that change explains">
                  localisation
                </th>
              )}
              <th scope="col">driver</th>
              {measures.map((k) => (
                <th key={k} scope="col" className="num" title={MEASURES[k]?.help}>
                  {measureLabel(k)}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {shown.map((u) => {
              const to = detectionUnitPath(id, layer, u.unit);
              return (
                <tr key={u.unit} className={`clickable${th != null && u.suspicion != null && u.suspicion > th ? " flagged" : ""}${u.dead ? " dead" : ""}`} onClick={() => navigate(to)} data-testid="unit-row">
                  <td className="num">{u.rank ?? DASH}</td>
                  <td>
                    <Link to={to} onClick={(e) => e.stopPropagation()}>
                      unit {u.unit}
                    </Link>
                    {u.dead && <span className="badge dead">dead</span>}
                  </td>
                  <td>
                    <SuspicionBar value={u.suspicion} threshold={th} />
                  </td>
                  {hasLocalisation && (
                    <td>
                      <SuspicionBar value={u.localisation} threshold={localisedAt} />
                    </td>
                  )}
                  <td className="nowrap">{u.driver ? measureLabel(u.driver) : DASH}</td>
                  {measures.map((k) => (
                    <td key={k} className="num">
                      {num(u.measures[k]?.value)} <span className="muted">· {num(u.measures[k]?.suspicion, 2)}</span>
                    </td>
                  ))}
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {units.length > TABLE_FIRST && (
        <button type="button" className="link" onClick={() => setAll((x) => !x)}>
          {all ? `show the first ${TABLE_FIRST}` : `show all ${units.length} units`}
        </button>
      )}
    </section>
  );
}

/** The population regime's evidence: each class's share of unit majorities, suspect against the population's mean. */
export function ClassShareChart({ shares, classes, flagged, layer }: { shares: ClassShares; classes: string[]; flagged: number | null; layer: string }) {
  const n = shares.suspect.length;
  const W = 560;
  const H = 200;
  const M = { l: 40, r: 8, t: 10, b: 48 };
  const top = Math.max(0.05, ...shares.suspect, ...shares.population_mean);
  const bw = (W - M.l - M.r) / Math.max(1, n);
  const y = (v: number) => H - M.b - (v / top) * (H - M.t - M.b);
  const name = (i: number) => classes[i] ?? `class ${i}`;
  const pct = (v: number) => `${(100 * v).toFixed(1)} %`;
  return (
    <figure className="chart class-shares">
      <figcaption>
        Class shares of the units' top-k majorities{" "}
        <span className="legend">
          <span className="key suspect">suspect</span> <span className="key population">population mean</span>
        </span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`Class shares of ${layer}: suspect against the population mean${flagged != null ? `; ${name(flagged)} over-represented` : ""}`}>
        <g className="axes">
          <line x1={M.l} x2={W - M.r} y1={H - M.b} y2={H - M.b} />
          {[0, top / 2, top].map((t) => (
            <g key={t} transform={`translate(${M.l},${y(t)})`}>
              <line className="grid" x2={W - M.l - M.r} />
              <text x={-4} dy="0.32em" textAnchor="end">
                {Math.round(100 * t)}%
              </text>
            </g>
          ))}
        </g>
        {shares.suspect.map((s, i) => {
          const p = shares.population_mean[i] ?? 0;
          const x = M.l + i * bw;
          const on = i === flagged;
          return (
            <g key={i} className={`cls${on ? " flagged" : ""}`} data-testid={on ? "flagged-class" : undefined}>
              <title>{`${name(i)}: suspect ${pct(s)}, population ${pct(p)}${shares.z[i] != null ? `, z = ${num(shares.z[i], 2)}` : ""}`}</title>
              <rect className="b-suspect" x={x + bw * 0.12} width={bw * 0.36} y={y(s)} height={H - M.b - y(s)} />
              <rect className="b-population" x={x + bw * 0.52} width={bw * 0.36} y={y(p)} height={H - M.b - y(p)} />
              <text className="cls-name" x={x + bw / 2} y={H - M.b + 12} textAnchor="middle">
                {name(i).length > 10 ? `${name(i).slice(0, 9)}…` : name(i)}
              </text>
              {on && (
                <text className="cls-flag" x={x + bw / 2} y={H - M.b + 26} textAnchor="middle">
                  ▲ over-represented
                </text>
              )}
            </g>
          );
        })}
      </svg>
    </figure>
  );
}
