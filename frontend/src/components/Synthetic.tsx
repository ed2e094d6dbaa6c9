// Synthetic feature visualizations (SPEC §4): a unit's images rendered from noise, the
// same seeds under θ_init and θ_final, and the three numbers that compare them with the
// natural top-k (synthetic CLIP-δ, synthetic transfer, natural–synthetic agreement).
import type { SynthImage, SyntheticMeasures } from "../api/contract";
import { num } from "../lib/format";
import { AuthImage } from "./AuthImage";

export const SYNTH_METRICS: { key: keyof SyntheticMeasures; label: string; help: string }[] = [
  { key: "natural_clip_delta", label: "CLIP-δ (natural)", help: "semantic change of the natural top-k (SPEC §3)" },
  { key: "synthetic_clip_delta", label: "synthetic CLIP-δ", help: "CLIP-δ with the synthetic images in place of the top-k: small = the attack left the visualization alone (Fig. 3.7)" },
  { key: "synthetic_transfer", label: "synthetic transfer", help: "does the θ_init visualization still drive the unit under θ_final? (1 = as much as before)" },
  { key: "ns_agreement", label: "natural–synthetic agreement", help: "how much closer the unit's top-k is to its own synthetic images than to other units' (> 1: closer)" },
];

/**
 * Before/after pairs, one row per seed: a pair differs only by the weights. `afterState`
 * names the weights of the "after" column (the visualize step renders the selected state).
 */
export function SyntheticPairs({ before, after, unit, layer, size = 128, afterState = "selected state" }: {
  before: SynthImage[]; after: SynthImage[]; unit: number; layer: string; size?: number; afterState?: string;
}) {
  const seeds = [...new Set([...before, ...after].map((im) => im.seed))];
  const at = (side: SynthImage[], seed: number | null, i: number) => side.find((im) => im.seed === seed) ?? (seed == null ? side[i] : undefined);
  return (
    <table className="synth-pairs">
      <caption className="sr-only">
        Synthetic visualizations of unit {unit} of {layer}, before and after, per seed
      </caption>
      <thead>
        <tr>
          <th scope="col">seed</th>
          <th scope="col">before (θ_init)</th>
          <th scope="col">after ({afterState})</th>
        </tr>
      </thead>
      <tbody>
        {seeds.map((seed, i) => {
          const b = at(before, seed, i);
          const a = at(after, seed, i);
          const name = seed == null ? "" : `, seed ${seed}`;
          return (
            <tr key={String(seed ?? i)}>
              <th scope="row" className="num">{seed ?? "—"}</th>
              <td>{b ? <AuthImage src={b.url} size={size} alt={`synthetic visualization of unit ${unit} (${layer})${name}, before the attack (θ_init)`} /> : <span className="muted small">not rendered</span>}</td>
              <td>{a ? <AuthImage src={a.url} size={size} alt={`synthetic visualization of unit ${unit} (${layer})${name}, after the attack (${afterState})`} /> : <span className="muted small">not rendered</span>}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** The measures that compare with the natural top-k: a dead unit has none (it has no top-k). */
const NEEDS_TOPK: (keyof SyntheticMeasures)[] = ["natural_clip_delta", "ns_agreement"];

/**
 * The SPEC §4 numbers of one unit or of a layer's mean, as a definition list. A dead
 * unit shows "dead unit" in place of the measures that need its top-k (issue 19, item 4:
 * it showed an agreement value).
 */
export function SyntheticNumbers({ values, keys = SYNTH_METRICS.map((m) => m.key), dead = false }: {
  values: Partial<SyntheticMeasures>; keys?: (keyof SyntheticMeasures)[]; dead?: boolean;
}) {
  return (
    <dl className="kv synth-numbers">
      {SYNTH_METRICS.filter((m) => keys.includes(m.key)).map((m) => (
        <div key={m.key} title={m.help}>
          <dt>{m.label}</dt>
          <dd>{dead && NEEDS_TOPK.includes(m.key) ? <span className="muted" title="a dead unit has no top-k to compare with">dead unit</span> : num(values[m.key] ?? null)}</dd>
        </div>
      ))}
    </dl>
  );
}
