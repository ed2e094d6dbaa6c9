// Small SVG charts: histogram, scatter (with the y = x diagonal), lines. Scales and ticks
// come from d3-scale (issue 19: a hand-written tick loop hung on a range of one double spacing).
import { scaleLinear } from "d3-scale";
import { useId, useMemo, useState, type KeyboardEvent } from "react";

const W = 360;
const H = 220;
const M = { l: 44, r: 12, t: 12, b: 34 };

/**
 * True when lo…hi is one value for an axis: equal, or apart by less than what 12
 * significant digits can tell (0.9999999999999998…1.0 is a span of one double spacing; a
 * tick loop stepping by a fraction of it never moves, issue 19 item 1).
 */
export function isDegenerate(lo: number, hi: number): boolean {
  return Math.abs(hi - lo) <= Math.max(Math.abs(lo), Math.abs(hi)) * 1e-12;
}

/**
 * Round tick positions in lo…hi (d3-scale's `ticks`: 1, 2 or 5 × 10^k steps; `n` is a
 * hint), never more than about 2n and never a loop that can hang: empty for NaN or
 * infinite ends, the single value for a degenerate range, integers only with `integer`
 * (counts: 5 units never give a tick at 2.5). Each tick is rounded to 12 significant
 * digits and appears once.
 */
export function ticks(lo: number, hi: number, n = 5, integer = false): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo > hi) [lo, hi] = [hi, lo];
  if (isDegenerate(lo, hi)) {
    const v = integer ? Math.round((lo + hi) / 2) : Number(((lo + hi) / 2).toPrecision(12));
    return integer && (v < lo || v > hi) ? [] : [v];
  }
  let out = scaleLinear().domain([lo, hi]).ticks(Math.max(1, n)).map((v) => Number(v.toPrecision(12)));
  if (integer) out = out.filter((v) => Number.isInteger(v));
  return [...new Set(out)];
}

/**
 * The axis domain for values from lo to hi: a degenerate range (one value, or values a
 * double spacing apart) widened around its value (±5 %, or ±0.5 around 0) so that it has
 * room and ticks; with `nice`, extended to round ends (d3-scale's `nice`).
 */
export function axisDomain(lo: number, hi: number, { nice = false, n = 5 }: { nice?: boolean; n?: number } = {}): [number, number] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (lo > hi) [lo, hi] = [hi, lo];
  if (isDegenerate(lo, hi)) {
    const c = (lo + hi) / 2;
    const half = c === 0 ? 0.5 : Math.abs(c) * 0.05;
    [lo, hi] = [Number((c - half).toPrecision(12)), Number((c + half).toPrecision(12))];
  }
  if (!nice) return [lo, hi];
  const [a, b] = scaleLinear().domain([lo, hi]).nice(n).domain();
  return [a, b];
}

const fmtTick = (v: number) => {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e4 || a < 1e-3)) return v.toExponential(0);
  return String(Number(v.toPrecision(3))).replace("-", "−");
};

function Axes({ x0, x1, y0, y1, xs, ys, xLabel, yLabel, xInteger, yInteger, yTicks, yFmt = fmtTick }: {
  x0: number; x1: number; y0: number; y1: number;
  xs: (v: number) => number; ys: (v: number) => number; xLabel: string; yLabel: string; xInteger?: boolean;
  /** integer y ticks only (counts) */
  yInteger?: boolean;
  /** where the y ticks go, in the axis' own coordinates (log10 on a log axis); default: round values */
  yTicks?: number[]; yFmt?: (v: number) => string;
}) {
  return (
    <g className="axes">
      <line x1={M.l} x2={W - M.r} y1={H - M.b} y2={H - M.b} />
      <line x1={M.l} x2={M.l} y1={M.t} y2={H - M.b} />
      {ticks(x0, x1, 5, xInteger).map((t) => (
        <g key={`x${t}`} transform={`translate(${xs(t)},${H - M.b})`}>
          <line y2={4} />
          <text y={15} textAnchor="middle">{fmtTick(t)}</text>
        </g>
      ))}
      {(yTicks ?? ticks(y0, y1, 3, yInteger)).map((t) => (
        <g key={`y${t}`} transform={`translate(${M.l},${ys(t)})`}>
          <line x2={-4} />
          <line className="grid" x2={W - M.l - M.r} />
          <text x={-6} dy="0.32em" textAnchor="end">{yFmt(t)}</text>
        </g>
      ))}
      <text className="axis-label" x={(M.l + W - M.r) / 2} y={H - 3} textAnchor="middle">{xLabel}</text>
      <text className="axis-label" transform={`translate(11,${(M.t + H - M.b) / 2}) rotate(-90)`} textAnchor="middle">{yLabel}</text>
    </g>
  );
}

/** The range of the finite values (padded by `pad` of the span), widened when degenerate; [0, 1] when there are none. */
function extent(vals: number[], pad = 0): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of vals) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!Number.isFinite(lo)) return [0, 1];
  if (isDegenerate(lo, hi)) return axisDomain(lo, hi);
  const p = (hi - lo) * pad;
  return [lo - p, hi + p];
}

export function Histogram({ values, label, bins = 20, title }: { values: (number | null)[]; label: string; bins?: number; title: string }) {
  const finite = values.filter((v): v is number => v != null && Number.isFinite(v));
  const skipped = values.length - finite.length;
  const { counts, lo, hi, top } = useMemo(() => {
    // round bin edges: the x domain is d3's nice() of the values' range (a degenerate range widened first)
    const [lo, hi] = axisDomain(...extent(finite), { nice: true, n: 5 });
    const counts: number[] = new Array(bins).fill(0);
    // a value is binned at 12 significant digits: float noise (0.9999999999999998 for τ = 1) does not cross a bin edge
    for (const v of finite) counts[Math.max(0, Math.min(bins - 1, Math.floor(((Number(v.toPrecision(12)) - lo) / (hi - lo)) * bins)))]++;
    // counts are whole units: a y axis from 0 to a round count, integer ticks only
    const [, top] = axisDomain(0, Math.max(1, ...counts), { nice: true, n: 3 });
    return { counts, lo, hi, top };
  }, [finite.join(","), bins]); // eslint-disable-line react-hooks/exhaustive-deps
  const xs = (v: number) => M.l + ((v - lo) / (hi - lo)) * (W - M.l - M.r);
  const ys = (v: number) => H - M.b - (v / top) * (H - M.t - M.b);
  const mean = finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : null;
  return (
    <figure className="chart">
      <figcaption>
        {title}
        <span className="muted">
          {" "}
          · {finite.length} units{mean != null && ` · mean ${mean.toFixed(3)}`}
          {skipped > 0 && ` · ${skipped} undefined skipped`}
        </span>
      </figcaption>
      {finite.length === 0 ? (
        <p className="muted">No values.</p>
      ) : (
        <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}: histogram of ${finite.length} values`}>
          <Axes x0={lo} x1={hi} y0={0} y1={top} xs={xs} ys={ys} xLabel={label} yLabel="units" yInteger />
          {counts.map((c, i) => {
            const a = lo + ((hi - lo) * i) / bins;
            const b = lo + ((hi - lo) * (i + 1)) / bins;
            return (
              <rect key={i} className="bar" x={xs(a) + 0.5} width={Math.max(0, xs(b) - xs(a) - 1)} y={ys(c)} height={H - M.b - ys(c)}>
                <title>{`${a.toFixed(3)} … ${b.toFixed(3)}: ${c} units`}</title>
              </rect>
            );
          })}
          {mean != null && <line className="mean" x1={xs(mean)} x2={xs(mean)} y1={M.t} y2={H - M.b} />}
        </svg>
      )}
    </figure>
  );
}

/** A dot; `group` names one of the chart's `groups` (e.g. attacked vs not) and styles it. */
export type ScatterPoint = { x: number; y: number; id: number; label?: string; group?: string };
export type ScatterGroup = { key: string; label: string; className: string };

export function Scatter({ points, xLabel, yLabel, title, diagonal = true, onPick, caption, groups }: {
  points: ScatterPoint[]; xLabel: string; yLabel: string; title: string; diagonal?: boolean;
  onPick?: (p: ScatterPoint) => void; caption?: string; groups?: ScatterGroup[];
}) {
  const [hover, setHover] = useState<ScatterPoint | null>(null);
  const pts = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  // keyboard: the chart is one tab stop; ←/→ walk the dots in x order, Enter opens the one shown
  const byX = useMemo(() => [...pts].sort((a, b) => a.x - b.x || a.y - b.y), [pts.map((p) => `${p.id}:${p.x}:${p.y}`).join()]); // eslint-disable-line react-hooks/exhaustive-deps
  const onKey = (e: KeyboardEvent) => {
    if (!onPick || !byX.length) return;
    const at = hover ? byX.findIndex((p) => p.id === hover.id) : -1;
    if (e.key === "ArrowRight" || e.key === "ArrowUp") setHover(byX[Math.min(byX.length - 1, at + 1)]);
    else if (e.key === "ArrowLeft" || e.key === "ArrowDown") setHover(byX[Math.max(0, at < 0 ? 0 : at - 1)]);
    else if (e.key === "Home") setHover(byX[0]);
    else if (e.key === "End") setHover(byX[byX.length - 1]);
    else if (e.key === "Enter" && hover) onPick(hover);
    else return;
    e.preventDefault();
    e.stopPropagation();
  };
  const all = pts.flatMap((p) => [p.x, p.y]);
  const [lo, hi] = diagonal ? extent(all, 0.05) : [0, 0];
  const [x0, x1] = diagonal ? [lo, hi] : extent(pts.map((p) => p.x), 0.05);
  const [y0, y1] = diagonal ? [lo, hi] : extent(pts.map((p) => p.y), 0.05);
  const xs = (v: number) => M.l + ((v - x0) / (x1 - x0)) * (W - M.l - M.r);
  const ys = (v: number) => H - M.b - ((v - y0) / (y1 - y0)) * (H - M.t - M.b);
  return (
    <figure className="chart">
      <figcaption>
        {title}
        <span className="muted" aria-live="polite"> · {pts.length} units{hover && ` · ${hover.label ?? `unit ${hover.id}`}: (${hover.x.toFixed(3)}, ${hover.y.toFixed(3)})`}</span>
        {groups && (
          <span className="legend dots">
            {groups.map((g) => (
              <span key={g.key} className={`key ${g.className}`}>
                {g.label} ({pts.filter((p) => p.group === g.key).length})
              </span>
            ))}
          </span>
        )}
      </figcaption>
      {pts.length === 0 ? (
        <p className="muted">No values.</p>
      ) : (
        <svg
          viewBox={`0 0 ${W} ${H}`}
          role="img"
          aria-label={`${title}: scatter of ${pts.length} units${groups ? ` (${groups.map((g) => `${pts.filter((p) => p.group === g.key).length} ${g.label}`).join(", ")})` : ""}`}
          aria-roledescription={onPick ? "scatter plot: arrow keys move between units, Enter opens one" : undefined}
          tabIndex={onPick ? 0 : undefined}
          onKeyDown={onPick ? onKey : undefined}
          onBlur={() => setHover(null)}
        >
          <Axes x0={x0} x1={x1} y0={y0} y1={y1} xs={xs} ys={ys} xLabel={xLabel} yLabel={yLabel} />
          {diagonal && <line className="diag" x1={xs(lo)} y1={ys(lo)} x2={xs(hi)} y2={ys(hi)} />}
          {pts.map((p) => (
            <circle
              key={p.id}
              className={`dot${onPick ? " pickable" : ""}${p.group ? ` ${groups?.find((g) => g.key === p.group)?.className ?? ""}` : ""}${hover?.id === p.id ? " on" : ""}`}
              data-group={p.group}
              cx={xs(p.x)}
              cy={ys(p.y)}
              r={hover?.id === p.id ? 5 : 3.2}
              onMouseEnter={() => setHover(p)}
              onMouseLeave={() => setHover(null)}
              onClick={onPick ? () => onPick(p) : undefined}
            >
              <title>{`${p.label ?? `unit ${p.id}`}: ${xLabel} ${p.x.toFixed(3)}, ${yLabel} ${p.y.toFixed(3)}`}</title>
            </circle>
          ))}
        </svg>
      )}
      {caption && <p className="caption muted">{caption}</p>}
    </figure>
  );
}

export type Series = { name: string; points: { x: number; y: number }[]; className?: string };

/**
 * How a line chart's y axis maps values. Training curves start with a spike (loss ≈ 100,
 * L_A ≈ 1000 near step 3) that flattens the rest on a full linear axis (issue 13, item 10):
 * - `clipped` (the default when there is such a spike): linear up to the largest value that
 *   is not an outlier (Tukey's far fence, Q3 + 3·IQR); the spike still rises to the top
 *   edge, where a ▲ marks each point above it and names its value;
 * - `linear`: the full range;
 * - `log`: log10 of the positive values (values ≤ 0 are left out and counted).
 */
export type YScale = "clipped" | "linear" | "log";
export const Y_SCALES: YScale[] = ["clipped", "linear", "log"];

function quantile(sorted: number[], p: number): number {
  const at = (sorted.length - 1) * p;
  const lo = Math.floor(at);
  return lo + 1 < sorted.length ? sorted[lo] + (sorted[lo + 1] - sorted[lo]) * (at - lo) : sorted[lo];
}

/** The largest value that is not a far outlier above (null when nothing is one, or < 5 values). */
export function clipTop(values: number[]): number | null {
  if (values.length < 5) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const q1 = quantile(sorted, 0.25);
  const q3 = quantile(sorted, 0.75);
  const fence = q3 + 3 * (q3 - q1);
  const kept = sorted.filter((v) => v <= fence);
  return kept.length < sorted.length && kept.length ? kept[kept.length - 1] : null;
}

/** Tick positions (log10 units) for a log axis from 10^lo to 10^hi: decades, plus 2× and 5× when few. */
function logTicks(lo: number, hi: number): number[] {
  const decades: number[] = [];
  for (let e = Math.ceil(lo - 1e-9); e <= hi + 1e-9; e++) decades.push(e);
  if (decades.length >= 3) return decades;
  const out: number[] = [];
  for (let e = Math.floor(lo) - 1; e <= Math.ceil(hi); e++)
    for (const m of [1, 2, 5]) {
      const t = e + Math.log10(m);
      if (t >= lo - 1e-9 && t <= hi + 1e-9) out.push(t);
    }
  return out;
}

const logLabel = (t: number) => fmtTick(Number((10 ** t).toPrecision(3)));

export function LineChart({ series, xLabel, yLabel, title, step = false, markers, scales = false }: {
  series: Series[]; xLabel: string; yLabel: string; title: string; step?: boolean;
  markers?: { x: number; label: string }[];
  /** offer the y-scale toggle (clipped / linear / log); without it the axis is linear */
  scales?: boolean;
}) {
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const top = scales ? clipTop(all.map((p) => p.y)) : null;
  const [chosen, setChosen] = useState<YScale | null>(null);
  const scale: YScale = chosen ?? (top != null ? "clipped" : "linear");
  const log = scale === "log";
  const clipped = scale === "clipped" && top != null;
  const shown = log ? all.filter((p) => p.y > 0) : all;
  const nonPositive = all.length - shown.length;
  const tf = (y: number) => (log ? Math.log10(y) : y);
  const [x0, x1] = extent(all.map((p) => p.x));
  const [y0, y1] = log
    ? extent(shown.map((p) => tf(p.y)), 0.05)
    : extent(clipped ? all.map((p) => p.y).filter((y) => y <= top!) : all.map((p) => p.y), 0.05);
  const xs = (v: number) => M.l + ((v - x0) / (x1 - x0)) * (W - M.l - M.r);
  const ys = (v: number) => H - M.b - ((v - y0) / (y1 - y0)) * (H - M.t - M.b);
  const yOf = (y: number) => ys(tf(y));
  const above = clipped ? series.flatMap((s) => s.points.filter((p) => Number.isFinite(p.y) && p.y > y1).map((p) => ({ ...p, name: s.name }))) : [];
  const highest = above.reduce<(typeof above)[number] | null>((m, p) => (m == null || p.y > m.y ? p : m), null);
  const path = (pts: { x: number; y: number }[]) =>
    pts
      .filter((p) => Number.isFinite(p.y) && (!log || p.y > 0))
      .map((p, i) => {
        if (i === 0) return `M${xs(p.x)},${yOf(p.y)}`;
        return step ? `H${xs(p.x)}V${yOf(p.y)}` : `L${xs(p.x)},${yOf(p.y)}`;
      })
      .join("") + (step && pts.length ? `H${xs(x1)}` : "");
  const clipId = `plot-${useId().replace(/[^a-zA-Z0-9_-]/g, "")}`;
  const note = clipped
    ? `y axis clipped at ${fmtTick(Number(y1.toPrecision(3)))}: ${above.length} point${above.length === 1 ? "" : "s"} above it (highest ${fmtTick(Number(highest!.y.toPrecision(4)))} at ${xLabel} ${highest!.x})`
    : log
      ? `log scale${nonPositive ? `; ${nonPositive} value${nonPositive === 1 ? "" : "s"} ≤ 0 left out` : ""}`
      : "";
  return (
    <figure className="chart">
      <figcaption>
        {title}
        <span className="legend">
          {series.map((s, i) => (
            <span key={s.name} className={`key ${s.className ?? `s${i}`}`}>{s.name}</span>
          ))}
        </span>
        {scales && all.length > 0 && (
          <span className="scale-toggle" role="group" aria-label={`${title}: y scale`}>
            {Y_SCALES.map((k) => (
              <button
                key={k}
                type="button"
                aria-pressed={scale === k}
                disabled={k === "clipped" && top == null}
                title={k === "clipped" ? (top == null ? "no outliers to clip" : "linear, the early spike clipped at the top edge") : k === "log" ? "log10 scale" : "linear, full range"}
                onClick={() => setChosen(k)}
              >
                {k}
              </button>
            ))}
          </span>
        )}
      </figcaption>
      {all.length === 0 ? (
        <p className="muted">No points yet.</p>
      ) : (
        <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}: ${series.map((s) => s.name).join(", ")}${note ? ` (${note})` : ""}`}>
          <defs>
            <clipPath id={clipId}>
              <rect x={M.l} y={M.t - 1} width={W - M.l - M.r} height={H - M.t - M.b + 1} />
            </clipPath>
          </defs>
          <Axes
            x0={x0} x1={x1} y0={y0} y1={y1} xs={xs} ys={ys} xLabel={xLabel} yLabel={yLabel} xInteger
            yTicks={log ? logTicks(y0, y1) : undefined} yFmt={log ? logLabel : undefined}
          />
          {markers?.map((m) => (
            <line key={`${m.x}-${m.label}`} className="marker" x1={xs(m.x)} x2={xs(m.x)} y1={M.t} y2={H - M.b}>
              <title>{m.label}</title>
            </line>
          ))}
          <g clipPath={`url(#${clipId})`}>
            {series.map((s, i) => (
              <g key={s.name}>
                <path className={`line ${s.className ?? `s${i}`}`} d={path(s.points)} />
                {s.points.length < 3 &&
                  s.points.filter((p) => Number.isFinite(p.y) && (!log || p.y > 0)).map((p) => <circle key={p.x} className={`pt ${s.className ?? `s${i}`}`} cx={xs(p.x)} cy={yOf(p.y)} r={2.5} />)}
              </g>
            ))}
          </g>
          {above.map((p) => (
            <path key={`${p.name}-${p.x}`} className="clip-mark" data-testid="clip-mark" d={`M${xs(p.x) - 4},${M.t + 6}L${xs(p.x)},${M.t - 1}L${xs(p.x) + 4},${M.t + 6}Z`}>
              <title>{`${p.name} ${fmtTick(Number(p.y.toPrecision(4)))} at ${xLabel} ${p.x} (above the axis)`}</title>
            </path>
          ))}
        </svg>
      )}
      {note && scales && <p className="caption muted small">{note}</p>}
    </figure>
  );
}
