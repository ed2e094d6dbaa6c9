// The training of a run's attack: its loss curves (L, L_maintain, L_A) and the α trajectory
// with the controller's evaluations, and the table of those evaluations. The job page draws
// the same curves from the live event stream.
import type { AlphaEvent, RunDetailFull } from "../../api/contract";
import { LineChart } from "../../components/Charts";
import { ErrorBoundary } from "../../components/ErrorBoundary";
import { DASH, nImages, num, pct } from "../../lib/format";
import type { LossPoint } from "../../lib/sse";
import { budgetOf } from "./RunPanels";

/** The three curves of an attack's training: L and L_maintain, L_A, α (`markers`: its evaluations, on the α chart). */
export function TrainingCharts({ points, markers }: { points: LossPoint[]; markers: { x: number; label: string }[] }) {
  const of = (key: Exclude<keyof LossPoint, "step">) => points.filter((p) => p[key] != null).map((p) => ({ x: p.step, y: p[key]! }));
  return (
    <div className="charts3">
      <LineChart
        scales
        title="Loss"
        xLabel="step"
        yLabel="loss"
        series={[
          { name: "L (total)", points: of("loss") },
          { name: "L_maintain", points: of("l_maintain") },
        ]}
      />
      <LineChart scales title="Attack loss L_A" xLabel="step" yLabel="L_A" series={[{ name: "L_A", className: "s2", points: of("l_attack") }]} />
      <LineChart title="α trajectory" xLabel="step" yLabel="α" step series={[{ name: "α", className: "s3", points: of("alpha") }]} markers={markers} />
    </div>
  );
}

/** The run's stored training history, with the α controller's evaluations. */
export function TrainingPanel({ run }: { run: RunDetailFull }) {
  const hist = (run.history ?? []) as LossPoint[];
  const traj = (run.alpha_trajectory ?? []) as AlphaEvent[];
  if (hist.length === 0) return null;
  return (
    <ErrorBoundary name="Training">
    <section className="panel" aria-label="Training">
      <h2>Training</h2>
      <TrainingCharts
        points={hist}
        markers={traj.map((t) => ({
          x: t.step,
          label: `step ${t.step}: accuracy ${t.accuracy} (drop ${t.drop_pp.toFixed(2)} pp${t.n_images ? ` on ${t.n_images} images` : ""})${t.full_drop_pp != null ? `, full set drop ${t.full_drop_pp.toFixed(2)} pp` : ""}, α ${t.alpha_before} → ${t.alpha_after}`,
        }))}
      />
      {traj.length > 0 && <AlphaTable traj={traj} budget={budgetOf(run)} />}
    </section>
    </ErrorBoundary>
  );
}

/** Each evaluation of the α controller: what it read, the full validation set's reading when measured, α before → after. */
function AlphaTable({ traj, budget }: { traj: AlphaEvent[]; budget: number | null }) {
  const hasFull = traj.some((t) => t.full_accuracy != null || t.full_drop_pp != null);
  return (
    <details open={hasFull}>
      <summary>
        α changes ({traj.length} evaluations{hasFull ? "; the controller's reading next to the full validation set's" : ""})
      </summary>
      <table className="data compact alpha-table">
        <thead>
          <tr>
            <th scope="col" className="num">step</th>
            <th scope="col" className="num" title="what the α controller read (an evaluation subset, or the full set)">accuracy (controller)</th>
            <th scope="col" className="num">drop (pp)</th>
            {hasFull && <th scope="col" className="num" title="the same state on the full validation set: the drop that decides “within budget”">full-set accuracy</th>}
            {hasFull && <th scope="col" className="num">full-set drop (pp)</th>}
            <th scope="col" className="num">α before → after</th>
          </tr>
        </thead>
        <tbody>
          {traj.map((t) => (
            <tr key={t.step} className={t.within_budget === false ? "bad" : ""}>
              <td className="num">{t.step}</td>
              <td className="num">
                {pct(t.accuracy, 2)}
                {t.n_images != null && <span className="muted small"> on {nImages(t.n_images)}</span>}
              </td>
              <td className="num">{num(t.drop_pp, 2)}</td>
              {hasFull && (
                <td className="num">
                  {t.full_accuracy == null ? <span className="muted" title="not measured on the full set">{DASH}</span> : pct(t.full_accuracy, 2)}
                  {t.full_accuracy != null && t.full_n_images != null && <span className="muted small"> on {nImages(t.full_n_images)}</span>}
                </td>
              )}
              {hasFull && <td className={`num${budget != null && (t.full_drop_pp ?? 0) > budget ? " bad" : ""}`}>{t.full_drop_pp == null ? DASH : num(t.full_drop_pp, 2)}</td>}
              <td className="num">
                {t.alpha_before} → {t.alpha_after}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </details>
  );
}
