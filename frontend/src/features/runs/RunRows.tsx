// Table 3.1 of a run, one row per layer and state (selected / final / α = 0 control),
// and the "all" row for a multi-layer run. Every accuracy says on how many images it
// was measured; a final state over the accuracy budget is flagged with its step.
import { Link } from "react-router";
import type { RunRow } from "../../api/contract";
import { clip, DASH, metricLabel, nImages, num, overlap, pct, signed, tau } from "../../lib/format";
import { orderRows, STATE_HELP, STATE_LABEL } from "../../lib/rows";

export function RunRows({ rows, layers, current, budget, kClip, selectedIsInit, layerHref, runHref }: {
  rows: RunRow[];
  layers: string[];
  current?: string;
  /** the run's accuracy budget, pp (for the flag's text) */
  budget?: number | null;
  /** the k of CLIP-δ, CLIP-W and the overlap (the run's k_clip), named in their column titles */
  kClip?: number | null;
  /** no evaluated state was within budget: the selected rows are θ_init's (issue 19, item 2) */
  selectedIsInit?: boolean;
  layerHref: (layer: string) => string;
  runHref: (run: number) => string;
}) {
  const ordered = orderRows(rows, layers);
  const synth = rows.some((r) => r.synthetic_clip_delta != null);
  const labels = rows.some((r) => r.label_flip_rate != null);
  return (
    <table className="data t31 rows">
      <thead>
        <tr>
          <th scope="col">layer</th>
          <th scope="col">state</th>
          <th scope="col" className="num" title={`semantic change of the top-${kClip ?? "k"}; 0 = identical`}>{metricLabel("clip_delta", kClip)}</th>
          <th scope="col" className="num" title="ranking kept = 1">Kendall-τ</th>
          <th scope="col" className="num">{metricLabel("clip_w", kClip)}</th>
          <th scope="col" className="num">Kendall-τ-W</th>
          <th scope="col" className="num">{metricLabel("topk_overlap", kClip)}</th>
          <th scope="col" className="num">Acc</th>
          <th scope="col" className="num">ΔAcc (pp)</th>
          {synth && <th scope="col" className="num" title="CLIP-δ of the synthetic visualizations (SPEC §4)">synthetic CLIP-δ</th>}
          {labels && (
            <th scope="col" className="num" title="share of the attacked units whose class-concept label (the class most over-represented in the top-k) changed from θ_init: an interpreter would now call them something else">
              relabelled
            </th>
          )}
        </tr>
      </thead>
      <tbody>
        {ordered.map((r, i) => {
          const first = i === 0 || ordered[i - 1].layer !== r.layer;
          const over = r.state === "final" && r.over_budget;
          return (
            <tr
              key={`${r.layer}-${r.state}`}
              className={`state-${r.state}${first ? " group-start" : ""}${r.layer === current ? " selected" : ""}${over ? " over-budget" : ""}`}
              data-state={r.state}
              data-layer={r.layer}
            >
              <th scope="row" className="mono">
                {r.layer === "all" ? (
                  <span title="mean over all attacked units of all layers">all layers</span>
                ) : layers.length > 1 ? (
                  <Link to={layerHref(r.layer)}>{r.layer}</Link>
                ) : (
                  r.layer
                )}
              </th>
              <td title={STATE_HELP[r.state]}>
                {r.state === "control" && r.run_id != null ? (
                  <Link to={runHref(r.run_id)} title={`${STATE_HELP.control}: open run ${r.run_id}`}>
                    {STATE_LABEL.control} (run {r.run_id})
                  </Link>
                ) : (
                  STATE_LABEL[r.state] ?? r.state
                )}
                {r.step != null && <span className="muted small"> · step {r.step.toLocaleString("en")}</span>}
                {r.state === "selected" && selectedIsInit && (
                  <span className="badge over" title="no evaluated state stayed within the accuracy budget, so the selected state is the model before the attack">
                    = θ_init: no attack
                  </span>
                )}
                {over && (
                  <span className="badge over" title={`its accuracy drop exceeds the budget${budget != null ? ` of ${budget} pp` : ""}`}>
                    over budget
                  </span>
                )}
              </td>
              <td className="num strong">{clip(r.clip_delta)}</td>
              <td className="num strong">{tau(r.kendall_tau)}</td>
              <td className="num">{clip(r.clip_w)}</td>
              <td className="num">{tau(r.kendall_tau_w)}</td>
              <td className="num">{overlap(r.topk_overlap)}</td>
              <td className="num">
                {pct(r.acc, 2)}
                {r.acc_n_images != null && <span className="n-images muted small"> on {nImages(r.acc_n_images)}</span>}
              </td>
              <td className={`num${over ? " bad" : ""}`}>{r.delta_acc == null ? DASH : signed(r.delta_acc)}</td>
              {synth && <td className="num">{num(r.synthetic_clip_delta)}</td>}
              {labels && <td className="num">{r.label_flip_rate == null ? DASH : `${Math.round(100 * r.label_flip_rate)} %`}</td>}
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
