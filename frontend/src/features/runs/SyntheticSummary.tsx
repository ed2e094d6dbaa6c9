// Thesis Fig. 3.7 in numbers: per layer, the natural vs the synthetic CLIP-δ means (and
// the other SPEC §4 measures), and a scatter of the two per unit, attacked units apart.
import type { LayerSynthetic } from "../../api/contract";
import { Scatter } from "../../components/Charts";
import { SYNTH_METRICS } from "../../components/Synthetic";
import { num, unitRole } from "../../lib/format";

export function SyntheticSummary({ synthetic, layers, current, onPickUnit, kClip, attackKind }: {
  synthetic: Record<string, LayerSynthetic>;
  layers: string[];
  current: string | undefined;
  onPickUnit: (layer: string, unit: number) => void;
  /** the run's k_clip: the natural CLIP-δ is on each unit's top-k_clip */
  kClip?: number | null;
  /** "finetune" for the α = 0 control: its units are targets, not attacked */
  attackKind?: string | null;
}) {
  const role = unitRole(attackKind);
  const attacked = role.badge === "attacked" ? "attacked" : "target";
  const names = [...layers.filter((l) => synthetic[l]), ...Object.keys(synthetic).filter((l) => !layers.includes(l))];
  const layer = current && synthetic[current] ? current : names[0];
  const units = layer ? synthetic[layer].units : [];
  const undrawn = units.filter((u) => u.natural_clip_delta == null || u.synthetic_clip_delta == null).length;
  return (
    <section className="panel" aria-label="Natural vs synthetic (Fig. 3.7)">
      <h2>
        Natural vs synthetic <span className="muted small">(thesis Fig. 3.7 in numbers: means over {attacked} units)</span>
      </h2>
      <div className="scroll-x">
        <table className="data compact synth-means">
          <thead>
            <tr>
              <th scope="col">layer</th>
              {SYNTH_METRICS.map((m) => (
                <th key={m.key} scope="col" className="num" title={m.help}>
                  {m.label}
                </th>
              ))}
              <th scope="col" className="num">units ({attacked})</th>
            </tr>
          </thead>
          <tbody>
            {names.map((l) => (
              <tr key={l} className={l === layer ? "selected" : ""}>
                <th scope="row" className="mono">{l}</th>
                {SYNTH_METRICS.map((m) => (
                  <td key={m.key} className={`num${m.key.endsWith("clip_delta") ? " strong" : ""}`}>
                    {num(synthetic[l].means[m.key])}
                  </td>
                ))}
                <td className="num">
                  {synthetic[l].units.length} ({synthetic[l].units.filter((u) => u.attacked).length})
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {layer && (
        <div className="charts3">
          <Scatter
            title={`CLIP-δ natural vs synthetic · ${layer}`}
            xLabel={`natural CLIP-δ (top-${kClip ?? "k"})`}
            yLabel="synthetic CLIP-δ"
            groups={[
              { key: "attacked", label: attacked, className: "g-attacked" },
              { key: "other", label: `not ${attacked === "attacked" ? "attacked" : "a target"}`, className: "g-other" },
            ]}
            points={units
              .filter((u) => u.natural_clip_delta != null && u.synthetic_clip_delta != null)
              .map((u) => ({
                x: u.natural_clip_delta!,
                y: u.synthetic_clip_delta!,
                id: u.unit,
                group: u.attacked ? "attacked" : "other",
                label: `unit ${u.unit}${u.attacked ? ` (${attacked})` : ""}`,
              }))}
            onPick={(p) => onPickUnit(layer, p.id)}
            caption={`Each dot is a unit. Below the diagonal: the attack moved the natural top-k more than the synthetic visualization (the thesis' finding). Click a dot to open the unit.${undrawn ? ` ${undrawn} unit${undrawn === 1 ? "" : "s"} without both values (not attacked or dead: no natural CLIP-δ) ${undrawn === 1 ? "is" : "are"} not drawn.` : ""}`}
          />
        </div>
      )}
    </section>
  );
}
