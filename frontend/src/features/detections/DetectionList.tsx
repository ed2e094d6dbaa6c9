// Detections (SPEC §6): every "check this model" job with its suspect, regime, status (live
// progress while it runs) and verdict, and the form that launches one. `?suspect=<model>`
// (the model page's "Check this model") pre-fills the suspect and brings the form into view.
import { useEffect, useMemo } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { isLive } from "../../api/client";
import { useAllModels, useDetections } from "../../api/queries";
import { Listing, ListScroll } from "../../components/Manage";
import { PageHead } from "../../components/PageHead";
import { StatusBadge, When } from "../../components/States";
import { usePageTitle } from "../../lib/title";
import { DetectionForm } from "./DetectionForm";
import { detectionPath, liveText, VerdictBadge, type DetectionItem } from "./DetectionShared";

const REGIME: Record<DetectionItem["regime"], { label: string; help: string }> = {
  reference: { label: "with a reference", help: "every unit compared with the reference's, calibrated on benign fine-tunes of it" },
  population: { label: "population only", help: "the suspect's class shares judged against clean models of its family" },
};

export function DetectionList() {
  usePageTitle("Detections");
  const [params] = useSearchParams();
  const suspect = params.get("suspect");
  const q = useDetections();
  const models = useAllModels();
  const navigate = useNavigate();
  const names = useMemo(() => new Map((models.data ?? []).map((m) => [m.id, m.name])), [models.data]);
  useEffect(() => {
    if (suspect) document.getElementById("check")?.scrollIntoView?.({ block: "start" });
  }, [suspect]);
  const modelLink = (id: number | null) =>
    id == null ? (
      <span className="muted">none</span>
    ) : (
      <Link to={`/models/${id}`} onClick={(e) => e.stopPropagation()}>
        {names.get(id) ?? `model ${id}`}
      </Link>
    );

  return (
    <div className="page detections">
      <PageHead
        title="Detections"
        actions={
          <div className="actions">
            <a className="button primary" href="#check">
              Check a model…
            </a>
          </div>
        }
      >
        Check a model for manipulated explanations (SPEC §6): each unit gets a suspicion in [0, 1], calibrated against clean
        models; each layer and the model a verdict (no sign / suspicious / manipulated) with the evidence that drove it.
      </PageHead>

      <section className="panel" aria-label="Detections list">
        <Listing q={q} loading="Loading detections" isEmpty={(d) => d.length === 0} empty="No detection yet: check a model with the form below.">
          {(data) => (
            <ListScroll>
              <table className="data detections">
                <thead>
                  <tr>
                    <th scope="col">detection</th>
                    <th scope="col">suspect</th>
                    <th scope="col">reference</th>
                    <th scope="col">regime</th>
                    <th scope="col">layers</th>
                    <th scope="col">status</th>
                    <th scope="col">verdict</th>
                    <th scope="col">created</th>
                  </tr>
                </thead>
                <tbody>
                  {data.map((d) => (
                    <tr key={d.id} className="clickable" onClick={() => navigate(detectionPath(d.id))}>
                      <td>
                        <Link to={detectionPath(d.id)} onClick={(e) => e.stopPropagation()}>
                          {d.name}
                        </Link>
                      </td>
                      <td>{modelLink(d.suspect_model_id)}</td>
                      <td>{modelLink(d.reference_model_id)}</td>
                      <td title={REGIME[d.regime].help}>{REGIME[d.regime].label}</td>
                      <td className="mono small">{d.layers.join(", ")}</td>
                      <td>
                        <StatusBadge status={d.status} />
                        {isLive(d) && (
                          <span className="muted small" data-testid="progress">
                            {" "}
                            {liveText(d.status, d.progress)}
                          </span>
                        )}
                      </td>
                      <td>{d.status === "succeeded" ? <VerdictBadge verdict={d.verdict} p={d.p_value} /> : <span className="muted">—</span>}</td>
                      <td>
                        <When iso={d.created_at} />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </ListScroll>
          )}
        </Listing>
      </section>

      <section className="panel" id="check" aria-label="Check a model">
        <h2>Check a model</h2>
        <DetectionForm initialSuspect={suspect} />
      </section>
    </div>
  );
}
