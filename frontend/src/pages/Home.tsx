import { Link, useNavigate } from "react-router";
import type { Job } from "../api/client";
import { useImageSets, useJobKinds, useJobs, useModels, useRuns } from "../api/hooks";
import { NeedsToken } from "../components/Layout";
import { Empty, ErrorBox, Loading, StatusBadge } from "../components/States";
import { jobTitle as titleOf, liveStepLabel } from "../lib/chain";
import { attackLabel, num, pct, progressText, signed, when } from "../lib/format";
import { usePageTitle } from "../lib/title";

export function Home() {
  return (
    <NeedsToken>
      <HomeInner />
    </NeedsToken>
  );
}

function HomeInner() {
  const runs = useRuns();
  const jobs = useJobs();
  const models = useModels();
  const sets = useImageSets();
  const kinds = useJobKinds();
  const navigate = useNavigate();
  usePageTitle("Runs");
  const active = (jobs.data ?? []).filter((j) => j.status === "queued" || j.status === "running");
  // the 6 most recent, or every job in progress when there are more: the heading counts what is listed
  const shown = (jobs.data ?? []).slice(0, Math.max(6, active.length));
  return (
    <div className="page home">
      <div className="page-head">
        <div>
          <h1>Runs</h1>
          <p className="muted">
            Each run is an audit: scan the model (θ_init), attack one or several layers, scan again (the selected and
            the final state), measure how far the top-k dataset examples moved, next to an α = 0 control and the units'
            synthetic visualizations.
          </p>
        </div>
        <Link to="/launch" className="button primary">
          + Launch an audit
        </Link>
      </div>

      {(jobs.data?.length ?? 0) > 0 && (
        <section className="panel" aria-label="Recent jobs">
          <h2>
            Jobs{" "}
            <span className="muted small">
              {active.length ? `${active.length} in progress` : "none in progress"} ·{" "}
              {shown.length === 1 ? "the most recent" : `the ${shown.length} most recent`}
            </span>
          </h2>
          <ul className="job-list">
            {shown.map((j) => (
              <li key={j.id}>
                <StatusBadge status={j.status} />{" "}
                <Link to={`/jobs/${j.id}`}>
                  job {j.id}: {jobTitle(j)}
                </Link>{" "}
                <span className="muted small">
                  {j.status === "running" || j.status === "queued"
                    ? progressText(j.progress, (n) => liveStepLabel(kinds.data, j, n, j.progress))
                    : j.status === "failed"
                      ? (j.error ?? "").slice(0, 140)
                      : when(j.finished_at ?? j.created_at)}
                </span>
              </li>
            ))}
          </ul>
        </section>
      )}

      <section className="panel" aria-label="Runs">
        {runs.isLoading ? (
          <Loading what="Loading runs" />
        ) : runs.error ? (
          <ErrorBox error={runs.error} retry={() => runs.refetch()} />
        ) : !runs.data?.length ? (
          <Empty>
            No runs yet. <Link to="/launch">Launch an audit</Link> (a push-down on the demo model takes about a minute on a
            CPU).
          </Empty>
        ) : (
          <div className="scroll-x">
            <table className="data runs">
              <thead>
                <tr>
                  <th scope="col">run</th>
                  <th scope="col">status</th>
                  <th scope="col">model</th>
                  <th scope="col">layers</th>
                  <th scope="col">attack</th>
                  <th scope="col" className="num" title="mean over attacked units">CLIP-δ</th>
                  <th scope="col" className="num">Kendall-τ</th>
                  <th scope="col" className="num">CLIP-W</th>
                  <th scope="col" className="num">Kendall-τ-W</th>
                  <th scope="col" className="num">Acc</th>
                  <th scope="col" className="num">ΔAcc (pp)</th>
                  <th scope="col">created</th>
                </tr>
              </thead>
              <tbody>
                {runs.data.map((r) => (
                  <tr key={r.id} className="clickable" onClick={() => navigate(`/runs/${r.id}`)}>
                    <td>
                      <Link to={`/runs/${r.id}`} onClick={(e) => e.stopPropagation()}>
                        #{r.id} {r.name}
                      </Link>
                    </td>
                    <td>
                      <StatusBadge status={r.status} />
                      {(r.status === "running" || r.status === "queued") && r.job_id && (
                        <>
                          {" "}
                          <Link to={`/jobs/${r.job_id}`} onClick={(e) => e.stopPropagation()}>
                            progress
                          </Link>
                        </>
                      )}
                    </td>
                    <td>
                      {r.model_id != null ? (
                        <Link to={`/models/${r.model_id}`} onClick={(e) => e.stopPropagation()}>
                          {r.model ?? `model ${r.model_id}`}
                        </Link>
                      ) : (
                        (r.model ?? "—")
                      )}
                    </td>
                    <td className="mono">{r.layers.join(", ")}</td>
                    <td>{attackLabel(r.attack_kind)}</td>
                    <td className="num">{num(r.headline.clip_delta)}</td>
                    <td className="num">{num(r.headline.kendall_tau)}</td>
                    <td className="num">{num(r.headline.clip_w)}</td>
                    <td className="num">{num(r.headline.kendall_tau_w)}</td>
                    <td className="num">{pct(r.headline.acc_final)}</td>
                    <td className="num">{signed(r.headline.delta_acc)}</td>
                    <td className="nowrap">{when(r.created_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>

      <div className="grid2">
        <section className="panel" aria-label="Models">
          <div className="section-head">
            <h2>Models</h2>
            <Link to="/register">+ register a model</Link>
          </div>
          {models.isLoading ? (
            <Loading what="Loading models" />
          ) : models.error ? (
            <ErrorBox error={models.error} retry={() => models.refetch()} />
          ) : !models.data?.length ? (
            <Empty>
              No models registered. <Link to="/register">Register one</Link> (a registry model or your own checkpoint).
            </Empty>
          ) : (
            <table className="data compact">
              <thead>
                <tr>
                  <th scope="col">name</th>
                  <th scope="col">architecture</th>
                  <th scope="col">weights</th>
                  <th scope="col" className="num">layers</th>
                  <th scope="col" className="num">classes</th>
                  <th scope="col" />
                </tr>
              </thead>
              <tbody>
                {models.data.map((m) => (
                  <tr key={m.id}>
                    <td>
                      <Link to={`/models/${m.id}`} title="layers and synthetic visualizations">
                        {m.name}
                      </Link>
                    </td>
                    <td className="mono">{m.registry_name}</td>
                    <td className="small" title={m.weights}>
                      {m.weights.length > 40 ? m.weights.slice(0, 40) + "…" : m.weights}
                    </td>
                    <td className="num">{m.n_layers}</td>
                    <td className="num">{m.n_classes}</td>
                    <td>
                      <Link to={`/launch?model=${m.id}`}>audit…</Link>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
        <section className="panel" aria-label="Image sets">
          <div className="section-head">
            <h2>Image sets</h2>
            <Link to="/register">+ register an image folder</Link>
          </div>
          {sets.isLoading ? (
            <Loading what="Loading image sets" />
          ) : sets.error ? (
            <ErrorBox error={sets.error} retry={() => sets.refetch()} />
          ) : !sets.data?.length ? (
            <Empty>
              No image sets. <Link to="/register">Register a folder</Link> of class subfolders.
            </Empty>
          ) : (
            <table className="data compact">
              <thead>
                <tr>
                  <th scope="col">name</th>
                  <th scope="col">source</th>
                  <th scope="col" className="num">images</th>
                  <th scope="col" className="num">classes</th>
                </tr>
              </thead>
              <tbody>
                {sets.data.map((s) => (
                  <tr key={s.id}>
                    <td>{s.name}</td>
                    <td className="mono small">{s.source}</td>
                    <td className="num">{s.size.toLocaleString("en")}</td>
                    <td className="num" title={s.classes.join(", ")}>
                      {s.classes.length}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
      </div>
    </div>
  );
}

function jobTitle(j: Job): string {
  return titleOf(j, attackLabel);
}
