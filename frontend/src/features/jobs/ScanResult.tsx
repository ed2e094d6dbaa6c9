// The scan kind's panel on its job page: what was scanned, and the audit it can start.
import { Link } from "react-router";
import type { Job } from "../../api/client";

export function ScanResult({ job }: { job: Job }) {
  const spec = job.spec as { model_id?: number; image_set_ids?: number[]; layers?: string[]; k?: number };
  const result = (job.result ?? {}) as { scans?: Record<string, number>; weights?: string };
  return (
    <section className="panel" aria-label="Scan">
      <h2>Scan</h2>
      <dl className="kv">
        <div>
          <dt>model</dt>
          <dd>#{spec.model_id}</dd>
        </div>
        <div>
          <dt>layers</dt>
          <dd className="mono">{(spec.layers ?? []).join(", ")}</dd>
        </div>
        <div>
          <dt>image sets</dt>
          <dd>{(spec.image_set_ids ?? []).map((i) => `#${i}`).join(", ")}</dd>
        </div>
        <div>
          <dt>top-k kept</dt>
          <dd>{spec.k ?? 10}</dd>
        </div>
      </dl>
      {result.weights && <p className="muted small">Weights: {result.weights}</p>}
      {job.status === "succeeded" && spec.layers?.length ? (
        <p>
          <Link className="button primary" to={`/launch?model=${spec.model_id}&${spec.layers.map((l) => `layer=${encodeURIComponent(l)}`).join("&")}`}>
            Audit {spec.layers.join(", ")}…
          </Link>
        </p>
      ) : null}
    </section>
  );
}
