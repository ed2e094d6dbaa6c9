import { Link, useNavigate } from "react-router";
import { isLive, STATUSES, type Job } from "../../api/client";
import { modelUsable, PAGE_SIZE, useAllModels, useImageSetsPage, useJobKinds, useJobs, useModelsPage, useRunsPage } from "../../api/queries";
import { FilterBar, FilterCheck, FilterSelect, Listing, ListScroll, ManageActions, Pager, SearchBox, useListParams } from "../../components/Manage";
import { PageHead } from "../../components/PageHead";
import { Empty, ErrorBox, Loading, StatusBadge, When } from "../../components/States";
import { jobTitle as titleOf, liveStepLabel } from "../../lib/chain";
import { attackLabel, num, pct, progressText, signed } from "../../lib/format";
import { usePageTitle } from "../../lib/title";

export function Home() {
  const jobs = useJobs();
  // the home page names a few of each; the index pages list them all
  const models = useModelsPage({ limit: 5 });
  const sets = useImageSetsPage({ limit: 5 });
  const kinds = useJobKinds();
  usePageTitle("Runs");
  const active = (jobs.data ?? []).filter(isLive);
  // the 6 most recent, or every job in progress when there are more: the heading counts what is listed
  const shown = (jobs.data ?? []).slice(0, Math.max(6, active.length));
  return (
    <div className="page home">
      <PageHead
        title="Runs"
        actions={
          <Link to="/launch" className="button primary">
            + Launch an audit
          </Link>
        }
      >
        Each run is an audit: scan the model (θ_init), attack one or several layers, scan again (the selected and
        the final state), measure how far the top-k dataset examples moved, next to an α = 0 control and the units'
        synthetic visualizations.
      </PageHead>

      {(jobs.data?.length ?? 0) > 0 && (
        <section className="panel" aria-label="Recent jobs">
          <div className="section-head">
            <h2>
              Jobs{" "}
              <span className="muted small">
                {active.length ? `${active.length} in progress` : "none in progress"} ·{" "}
                {shown.length === 1 ? "the most recent" : `the ${shown.length} most recent`}
              </span>
            </h2>
            <Link to="/jobs">all jobs →</Link>
          </div>
          <ul className="job-list">
            {shown.map((j) => (
              <li key={j.id}>
                <StatusBadge status={j.status} />{" "}
                <Link to={`/jobs/${j.id}`}>
                  job {j.id}: {jobTitle(j)}
                </Link>{" "}
                <span className="muted small">
                  {isLive(j)
                    ? progressText(j.progress, (n) => liveStepLabel(kinds.data, j, n, j.progress))
                    : j.status === "failed"
                      ? (j.error ?? "").slice(0, 140)
                      : <When iso={j.finished_at ?? j.created_at} />}
                </span>
              </li>
            ))}
          </ul>
        </section>
      )}

      <RunsPanel />

      <div className="grid2">
        <section className="panel" aria-label="Models">
          <div className="section-head">
            <h2>Models</h2>
            <Link to="/models">all models{models.data ? ` (${models.data.total})` : ""} →</Link>
            <Link to="/register">+ register a model</Link>
          </div>
          {models.isLoading ? (
            <Loading what="Loading models" />
          ) : models.error ? (
            <ErrorBox error={models.error} retry={() => models.refetch()} />
          ) : !models.data?.items.length ? (
            <Empty>
              No models registered. <Link to="/register">Register one</Link> (a registry model or your own checkpoint).
            </Empty>
          ) : (
            <table className="data compact">
              <thead>
                <tr>
                  <th scope="col">name</th>
                  <th scope="col">architecture</th>
                  <th scope="col" className="num">layers</th>
                  <th scope="col" className="num">classes</th>
                  <th scope="col" />
                </tr>
              </thead>
              <tbody>
                {models.data.items.map((m) => (
                  <tr key={m.id}>
                    <td>
                      <Link to={`/models/${m.id}`} title="layers and synthetic visualizations">
                        {m.name}
                      </Link>
                    </td>
                    <td className="mono">{m.registry_name}</td>
                    <td className="num">{m.n_layers}</td>
                    <td className="num">{m.n_classes}</td>
                    <td>{modelUsable(m) ? <Link to={`/launch?model=${m.id}`}>audit…</Link> : <StatusBadge status={m.status} />}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
        <section className="panel" aria-label="Image sets">
          <div className="section-head">
            <h2>Image sets</h2>
            <Link to="/image-sets">all image sets{sets.data ? ` (${sets.data.total})` : ""} →</Link>
            <Link to="/register">+ register an image folder</Link>
          </div>
          {sets.isLoading ? (
            <Loading what="Loading image sets" />
          ) : sets.error ? (
            <ErrorBox error={sets.error} retry={() => sets.refetch()} />
          ) : !sets.data?.items.length ? (
            <Empty>
              No image sets. <Link to="/register">Register a folder</Link> of class subfolders.
            </Empty>
          ) : (
            <table className="data compact">
              <thead>
                <tr>
                  <th scope="col">name</th>
                  <th scope="col">status</th>
                  <th scope="col" className="num">images</th>
                  <th scope="col" className="num">classes</th>
                </tr>
              </thead>
              <tbody>
                {sets.data.items.map((s) => (
                  <tr key={s.id}>
                    <td title={s.source}>{s.name}</td>
                    <td>
                      <StatusBadge status={s.status ?? "ready"} />
                      {s.status === "failed" && s.error && <span className="muted small"> {s.error.slice(0, 80)}</span>}
                    </td>
                    <td className="num">{s.status === "ready" || !s.status ? s.size.toLocaleString("en") : "—"}</td>
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

/**
 * The runs, a page at a time (the API's limit/offset and X-Total-Count), filtered by
 * status, model, name and hidden; the filters live in the address. Each run can be hidden
 * or deleted (with a confirmation).
 */
function RunsPanel() {
  const navigate = useNavigate();
  const lp = useListParams();
  const status = lp.get("status");
  const model = lp.get("model");
  const q = lp.get("q");
  const hidden = lp.get("hidden") === "1";
  const runs = useRunsPage({ status: status || undefined, model_id: model ? Number(model) : undefined, q: q || undefined, include_hidden: hidden, offset: lp.offset, limit: PAGE_SIZE });
  // every model, hidden ones too: their runs are listed with "show hidden"
  const allModels = useAllModels();
  const filtered = !!(status || model || q);
  return (
    <section className="panel" aria-label="Runs">
      <div className="section-head">
        <h2>
          Runs{" "}
          {runs.data && (
            <span className="muted small">
              {runs.data.total.toLocaleString("en")} {filtered ? "matching" : hidden ? "with the hidden ones" : "in all"}
            </span>
          )}
        </h2>
      </div>
      <FilterBar label="Filter runs">
        <FilterSelect label="Status" value={status} onChange={(v) => lp.set({ status: v })} options={STATUSES} />
        <FilterSelect label="Model" value={model} onChange={(v) => lp.set({ model: v })} options={(allModels.data ?? []).map((m) => ({ value: m.id, text: m.name }))} />
        <SearchBox value={q} onSearch={(v) => lp.set({ q: v })} label="Run name contains" placeholder="name contains…" />
        <FilterCheck label="show hidden" checked={hidden} onChange={(v) => lp.set({ hidden: v })} />
        {filtered && (
          <button type="button" className="link" onClick={() => lp.set({ status: null, model: null, q: null })}>
            clear filters
          </button>
        )}
      </FilterBar>
      <Listing
        q={runs}
        loading="Loading runs"
        isEmpty={(d) => !d.items.length}
        empty={
          filtered || lp.offset ? (
            "No run matches these filters."
          ) : (
            <>
              No runs yet. <Link to="/launch">Launch an audit</Link> (a push-down on the demo model takes about a minute on a
              CPU).
            </>
          )
        }
      >
        {(data) => (
          <>
            <ListScroll busy={runs.isPlaceholderData}>
              <table className="data runs runs-paged">
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
                    <th scope="col">
                      <span className="sr-only">actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {data.items.map((r) => (
                    <tr key={r.id} className={`clickable${r.hidden ? " hidden-row" : ""}`} onClick={() => navigate(`/runs/${r.id}`)}>
                      <td>
                        <Link to={`/runs/${r.id}`} onClick={(e) => e.stopPropagation()}>
                          #{r.id} {r.name}
                        </Link>
                        {r.hidden && <span className="badge"> hidden</span>}
                        {r.attack_outcome?.selected_is_init && (
                          <span className="badge over" title={r.attack_outcome.message ?? undefined} data-testid="selected-is-init">
                            selected = θ_init
                          </span>
                        )}
                      </td>
                      <td>
                        <StatusBadge status={r.status} />
                        {isLive(r) && r.job_id && (
                          <>
                            {" "}
                            <Link to={`/jobs/${r.job_id}`} onClick={(e) => e.stopPropagation()}>
                              progress
                            </Link>
                          </>
                        )}
                      </td>
                      <td className="model-cell">
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
                      <td className="created-cell">
                        <When iso={r.created_at} />
                      </td>
                      <td>
                        <ManageActions what="runs" id={r.id} name={r.name} hidden={r.hidden} compact />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </ListScroll>
            <Pager what="runs" offset={lp.offset} total={data.total} onOffset={lp.setOffset} />
          </>
        )}
      </Listing>
    </section>
  );
}

function jobTitle(j: Job): string {
  return titleOf(j, attackLabel);
}
