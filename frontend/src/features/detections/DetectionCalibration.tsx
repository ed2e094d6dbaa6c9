// The evidence of the reference regime's benign envelope (issue 24, "the detector must tell
// manipulation from honest fine-tuning"), on a layer's card of the detection page: what the
// layer was calibrated with (the clean family's models and recipes, how far their changes
// reach, this model's change, "out of calibration" beyond it) and the count tests; the
// envelope plot (each measure against the size of the model's change, the clean models and
// this model's units on it); the units localised inside the suspect. Results from before
// issue 24 have none of it: the page then renders none of these.
import { scaleLog } from "d3-scale";
import { useState } from "react";
import { Link, useNavigate } from "react-router";
import { ticks } from "../../components/Charts";
import { DASH, num, score } from "../../lib/format";
import {
  detectionUnitPath, MEASURES, measureLabel, OUT_OF_CALIBRATION_TEXT, pText, SuspicionBar, type BenignPoint, type Calibration,
  type DetectUnit, type LayerResult, type LocalisedUnit, type Overdispersion,
} from "./DetectionShared";

/** A model change (relative L2 weight distance): 4 significant digits, trailing zeros dropped ("0.1248", "0.0153"). */
export const sizeText = (v: number | null | undefined) => (v == null || !Number.isFinite(v) ? DASH : score(v));

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** "clean models of the family flag about 5.7 (spread ρ = 0.00, 4 clean models left out in turn)" */
function familyText(verb: string, od: Overdispersion | null | undefined, n: number) {
  if (!od) return null;
  return (
    <>
      ; clean models of the family {verb} about <strong>{num(od.rate * n, 1)}</strong>{" "}
      <span className="muted small">
        (spread ρ = {num(od.rho, 2)}, {plural(od.n_models, "clean model")} left out in turn)
      </span>
    </>
  );
}

/**
 * A layer's calibration: the clean family (models, recipes), the model changes it covers and
 * this model's, "out of calibration" with what to do, the flagged and localised counts
 * against the family's, the envelope plot and the clean models one by one.
 */
export function CalibrationBlock({ id, layer, v, cal, units, threshold, localisedAt }: {
  id: number; layer: string; v: LayerResult; cal: Calibration; units: DetectUnit[]; threshold?: number; localisedAt?: number;
}) {
  const recipes = cal.recipes ?? [];
  const benign = cal.benign ?? [];
  const n = v.n_units;
  const nLocalised = v.layer_values?.localised_units;
  return (
    <div className="calibration" role="group" aria-label={`Calibration of ${layer}`} data-testid="calibration">
      <h3>Calibration</h3>
      <p data-testid="calibration-family">
        Calibrated with <strong>{plural(benign.length, "clean model")}</strong> from {plural(recipes.length, "recipe")}:{" "}
        <span className="recipes">{recipes.length ? recipes.join(", ") : DASH}</span>
      </p>
      <p data-testid="calibration-reach">
        Covers model changes up to relative weight distance <strong>{sizeText(cal.reach)}</strong> (from {sizeText(cal.reach_low)}) ·
        this model: <strong>{sizeText(cal.size)}</strong>
        {!cal.out_of_calibration && cal.size != null && <span className="muted small"> (within the calibration)</span>}
      </p>
      {cal.out_of_calibration && (
        <p className="out-of-calibration" role="note" data-testid="out-of-calibration-layer">
          <strong>Out of calibration:</strong> this model {OUT_OF_CALIBRATION_TEXT} ({sizeText(cal.size)} against at most{" "}
          {sizeText(cal.reach)}). Its evidence is shown; no claim is made from it.
        </p>
      )}
      <ul className="counts">
        {v.n_flagged != null && (
          <li data-testid="count-flagged">
            <strong>
              {v.n_flagged} of {plural(n, "unit")} flagged
            </strong>
            {threshold != null && <span className="muted small"> (suspicion above {threshold})</span>}
            {familyText("flag", cal.overdispersion, n)}
            {v.p_units != null && <span className="muted small"> · {pText(v.p_units)}</span>}
          </li>
        )}
        {nLocalised != null && (
          <li data-testid="count-localised">
            <strong>
              {nLocalised} of {plural(n, "unit")} localised
            </strong>
            {localisedAt != null && <span className="muted small"> (localisation above {localisedAt})</span>}
            {familyText("localise", cal.overdispersion_localised, n)}
            {v.layer_evidence?.localised_units != null && <span className="muted small"> · {pText(1 - v.layer_evidence.localised_units)}</span>}
          </li>
        )}
      </ul>
      {Object.keys(cal.envelopes ?? {}).length > 0 && (
        <EnvelopePlot id={id} layer={layer} cal={cal} units={units} threshold={threshold} localisedAt={localisedAt} />
      )}
      {benign.length > 0 && <BenignTable benign={benign} />}
    </div>
  );
}

/** The clean models one by one: recipe, change, and what each flags against an envelope fitted without it. */
function BenignTable({ benign }: { benign: BenignPoint[] }) {
  const count = (c: [number, number] | null | undefined) => (c ? `${c[0]} of ${c[1]}` : DASH);
  return (
    <details>
      <summary>the {plural(benign.length, "clean model")} of the calibration</summary>
      <div className="scroll-x">
        <table className="data compact benign" aria-label="Clean models of the calibration">
          <thead>
            <tr>
              <th scope="col">clean model</th>
              <th scope="col">recipe</th>
              <th scope="col" className="num" title="relative L2 weight distance of every parameter producing the layer, reference → the model">
                model change
              </th>
              <th scope="col" className="num" title="units it flags against an envelope fitted without it (— : left out, beyond the others' reach)">
                flagged, left out
              </th>
              <th scope="col" className="num" title="units it localises against an envelope fitted without it">
                localised, left out
              </th>
            </tr>
          </thead>
          <tbody>
            {benign.map((b, i) => (
              <tr key={`${b.name}-${i}`}>
                <td>{b.name}</td>
                <td className="mono small">{b.recipe ?? "unnamed"}</td>
                <td className="num">{sizeText(b.size)}</td>
                <td className="num">{count(b.loo_flagged)}</td>
                <td className="num">{count(b.loo_localised)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </details>
  );
}

const W = 560;
const H = 250;
const M = { l: 46, r: 12, t: 16, b: 40 };
const JITTER = 9;

const finite = (v: number | null | undefined): v is number => v != null && Number.isFinite(v);
const positive = (v: number | null | undefined): v is number => finite(v) && v > 0;

/** A unit's jitter across the suspect's x, in px: fixed per unit (the dots do not move between renders). */
const jitter = (unit: number) => ((((unit + 1) * 0.6180339887) % 1) - 0.5) * 2 * JITTER;

/** The measure the plot opens on: CLIP-δ when the layer has its envelope, else the first. */
export function defaultMeasure(measures: string[]): string | undefined {
  return measures.includes("clip_delta") ? "clip_delta" : measures[0];
}

/**
 * The benign envelope of one measure against the size of the model's change (log x): the
 * band (what the family moves at each size, and its 95th percentile), each clean model's
 * median unit with a whisker to its 95th percentile, this model's units as dots at its own
 * size (flagged in red, localised ringed) with their median, and the family's reach.
 */
export function EnvelopePlot({ id, layer, cal, units, threshold, localisedAt }: {
  id: number; layer: string; cal: Calibration; units: DetectUnit[]; threshold?: number; localisedAt?: number;
}) {
  const navigate = useNavigate();
  const measures = Object.keys(cal.envelopes ?? {});
  const [chosen, setChosen] = useState<string | null>(null);
  const m = chosen != null && cal.envelopes[chosen] ? chosen : defaultMeasure(measures);
  if (!m) return null;
  const env = cal.envelopes[m];
  const label = measureLabel(m);

  const band = (env.band ?? []).filter((p) => positive(p.size) && finite(p.expected) && finite(p.upper95));
  const benign = (cal.benign ?? [])
    .map((b) => ({ b, med: b.median?.[m], q: b.q95?.[m] }))
    .filter((p): p is { b: BenignPoint; med: number; q: number | null } => positive(p.b.size) && finite(p.med));
  const size = positive(cal.size) ? cal.size : null;
  const dots = size == null ? [] : units.filter((u) => !u.dead && finite(u.measures[m]?.value));
  const median = cal.suspect_median?.[m];
  const isFlagged = (u: DetectUnit) => threshold != null && u.suspicion != null && u.suspicion > threshold;
  const isLocalised = (u: DetectUnit) => localisedAt != null && u.localisation != null && u.localisation > localisedAt;
  const nFlagged = dots.filter(isFlagged).length;

  // x: log of the model change, over everything drawn (at least a factor 3 wide)
  const xs = [...band.map((p) => p.size), ...benign.map((p) => p.b.size), size, cal.reach, cal.reach_low].filter(positive);
  if (!xs.length) return <p className="muted">No model change to plot the envelope against.</p>;
  let lo = Math.min(...xs) / 1.25;
  let hi = Math.max(...xs) * 1.25;
  if (hi / lo < 3) {
    const widen = Math.sqrt(3 / (hi / lo));
    lo /= widen;
    hi *= widen;
  }
  const xScale = scaleLog().domain([lo, hi]).range([M.l, W - M.r]);
  const x = (s: number) => xScale(s);
  const fmt = xScale.tickFormat(6, "~g");
  const xTicks = xScale.ticks().filter((t) => t >= lo && t <= hi);

  // y: the measure's value, from 0 (or below, were a value negative) to the largest drawn
  const ys = [
    0,
    ...band.flatMap((p) => [p.expected, p.upper95]),
    ...benign.flatMap((p) => [p.med, p.q]),
    ...dots.map((u) => u.measures[m].value),
    median,
  ].filter(finite);
  const yLo = Math.min(...ys);
  let yHi = Math.max(...ys);
  if (!(yHi > yLo)) yHi = yLo + 1;
  const yTicks = ticks(yLo, yHi, 4);
  const top = Math.max(yHi, ...yTicks);
  const y = (v: number) => H - M.b - ((v - yLo) / (top - yLo)) * (H - M.t - M.b);
  const bottom = H - M.b;

  const path = (pts: [number, number][]) => pts.map(([a, b], i) => `${i ? "L" : "M"}${a.toFixed(1)},${b.toFixed(1)}`).join("");
  const area = band.length > 1 ? `${path([...band.map((p): [number, number] => [x(p.size), y(p.upper95)]), ...[...band].reverse().map((p): [number, number] => [x(p.size), y(p.expected)])])}Z` : null;
  const reach = positive(cal.reach) ? cal.reach : null;
  const beyondReach = size != null && reach != null && size > reach;

  const aria =
    `${label} against the model change in ${layer}: ${plural(benign.length, "clean model")} of the calibration from ${sizeText(cal.reach_low)} to ${sizeText(cal.reach)}` +
    (size != null
      ? `; this model at ${sizeText(size)}${cal.out_of_calibration ? ", out of calibration" : ""}, its median unit ${num(median)} against ${num(env.expected_at_size)} expected (95th percentile ${num(env.upper95_at_size)}); ${nFlagged} of ${plural(dots.length, "unit")} flagged`
      : "");

  return (
    <figure className="chart envelope" data-testid="envelope">
      <figcaption>
        Benign envelope: {label} against the model change{" "}
        <span className="legend dots">
          <span className="key k-band">clean family</span> <span className="key k-benign">clean model</span>{" "}
          <span className="key k-unit">this model's units</span> {threshold != null && <span className="key k-flagged">flagged</span>}{" "}
          {reach != null && <span className="key k-reach">reach</span>}
        </span>
        {measures.length > 1 && (
          <span className="scale-toggle" role="group" aria-label={`${layer}: measure`}>
            {measures.map((k) => (
              <button key={k} type="button" aria-pressed={k === m} title={MEASURES[k]?.help} onClick={() => setChosen(k)}>
                {measureLabel(k)}
              </button>
            ))}
          </span>
        )}
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={aria}>
        {reach != null && x(reach) < W - M.r && (
          <rect className="beyond" x={x(reach)} y={M.t} width={W - M.r - x(reach)} height={bottom - M.t}>
            <title>beyond the calibration's reach: no clean model moved this far</title>
          </rect>
        )}
        <g className="axes">
          <line x1={M.l} x2={W - M.r} y1={bottom} y2={bottom} />
          <line x1={M.l} x2={M.l} y1={M.t} y2={bottom} />
          {yTicks.map((t) => (
            <g key={`y${t}`} transform={`translate(${M.l},${y(t)})`}>
              <line className="grid" x2={W - M.l - M.r} />
              <text x={-4} dy="0.32em" textAnchor="end">
                {Number(t.toPrecision(3))}
              </text>
            </g>
          ))}
          {xTicks.map((t) => {
            const text = fmt(t);
            return (
              <g key={`x${t}`} transform={`translate(${x(t)},${bottom})`}>
                <line y2={text ? 5 : 3} />
                {text && (
                  <text y={15} textAnchor="middle">
                    {text}
                  </text>
                )}
              </g>
            );
          })}
          <text className="axis-label" x={(M.l + W - M.r) / 2} y={H - 4} textAnchor="middle">
            model change: relative weight distance (log scale)
          </text>
          <text className="axis-label" transform={`translate(11,${(M.t + bottom) / 2}) rotate(-90)`} textAnchor="middle">
            {label}
          </text>
        </g>
        {area && <path className="band" d={area} />}
        {band.length > 1 && (
          <>
            <path className="upper95" d={path(band.map((p) => [x(p.size), y(p.upper95)]))}>
              <title>95th percentile of the clean family's units at each size</title>
            </path>
            <path className="expected" d={path(band.map((p) => [x(p.size), y(p.expected)]))}>
              <title>what the clean family moves at each size (its median unit)</title>
            </path>
          </>
        )}
        {reach != null && (
          <g data-testid="reach-marker">
            <line className="reach" x1={x(reach)} x2={x(reach)} y1={M.t} y2={bottom} />
            <text className="reach-label" x={beyondReach ? x(reach) - 3 : x(reach) + 3} y={M.t - 4} textAnchor={beyondReach ? "end" : "start"}>
              reach {sizeText(reach)}
            </text>
          </g>
        )}
        {benign.map(({ b, med, q }, i) => (
          <g key={`${b.name}-${i}`} className="benign" data-testid="benign-point">
            <title>{`${b.name} · recipe ${b.recipe ?? "unnamed"}: model change ${sizeText(b.size)}, median unit ${num(med)}, 95th percentile ${num(q)}`}</title>
            {finite(q) && (
              <>
                <line className="whisker" x1={x(b.size)} x2={x(b.size)} y1={y(med)} y2={y(q)} />
                <line className="whisker" x1={x(b.size) - 4} x2={x(b.size) + 4} y1={y(q)} y2={y(q)} />
              </>
            )}
            <circle className="median" cx={x(b.size)} cy={y(med)} r={4} />
          </g>
        ))}
        {size != null && (
          <g className="suspect" data-testid="suspect">
            <line className="suspect-x" x1={x(size)} x2={x(size)} y1={M.t} y2={bottom} />
            <text className="reach-label" x={beyondReach ? x(size) + 3 : x(size) - 3} y={M.t - 4} textAnchor={beyondReach ? "start" : "end"}>
              this model {sizeText(size)}
            </text>
            {dots.map((u) => {
              const val = u.measures[m].value as number;
              const f = isFlagged(u);
              const l = isLocalised(u);
              return (
                <circle
                  key={u.unit}
                  className={`unit-dot pickable${f ? " flagged" : ""}${l ? " localised" : ""}`}
                  data-testid="suspect-unit"
                  cx={x(size) + jitter(u.unit)}
                  cy={y(val)}
                  r={2.8}
                  onClick={() => navigate(detectionUnitPath(id, layer, u.unit))}
                >
                  <title>{`unit ${u.unit}: ${label} ${num(val)} · suspicion ${num(u.suspicion, 3)}${f ? " (flagged)" : ""}${u.localisation != null ? ` · localisation ${num(u.localisation, 3)}${l ? " (localised)" : ""}` : ""}`}</title>
                </circle>
              );
            })}
            {finite(median) && (
              <path
                className="suspect-median"
                data-testid="suspect-median"
                d={`M${x(size)},${y(median) - 6}L${x(size) + 6},${y(median)}L${x(size)},${y(median) + 6}L${x(size) - 6},${y(median)}Z`}
              >
                <title>{`this model: median unit ${num(median)}; the family expects ${num(env.expected_at_size)} at its size (95th percentile ${num(env.upper95_at_size)})`}</title>
              </path>
            )}
          </g>
        )}
      </svg>
      <p className="caption muted">
        Each clean model: median unit (dot) and 95th percentile (whisker); line: what the family moves at that size (dashed: its 95th
        percentile, shaded between); dots: this model's units ({threshold != null ? "red: flagged; " : ""}
        {localisedAt != null ? "ringed: localised; " : ""}◇ their median). Shaded right of the reach: no clean model moved that far.
      </p>
    </figure>
  );
}

/** The units whose explanation moved beyond what the model's overall change explains, most localised first, each linking to its page. */
export function LocalisedUnits({ id, layer, units, count, threshold }: {
  id: number; layer: string; units: LocalisedUnit[]; count?: number | null; threshold?: number;
}) {
  return (
    <div className="localised" role="group" aria-label={`Localised units of ${layer}`}>
      <h3>Localised units</h3>
      <p className="muted small">
        Units whose explanation moved beyond what this model's overall change explains
        {threshold != null ? ` (localisation above ${threshold})` : ""}, the most localised first
        {count != null && count > units.length ? `: the ${units.length} most localised of ${count}` : ""}.
      </p>
      {units.length === 0 ? (
        <p className="muted" data-testid="no-localised">
          none: every unit moved about as much as the model's overall change explains.
        </p>
      ) : (
        <ul className="localised-units">
          {units.map((u) => (
            <li key={u.unit} data-testid="localised-unit">
              <Link to={detectionUnitPath(id, layer, u.unit)}>unit {u.unit}</Link>: localisation{" "}
              <SuspicionBar value={u.localisation} threshold={threshold} /> · driven by {measureLabel(u.driver)}
              {u.suspicion != null && <span className="muted small"> · suspicion {num(u.suspicion, 3)}</span>}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
