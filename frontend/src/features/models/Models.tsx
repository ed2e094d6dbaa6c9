// /models: every registered model with its status (a pruned model stays "pending" until its
import type { ModelOut } from "../../api/client";
// prune step produced weights, "failed" when that step failed), where it comes from (the
// model it was pruned from, by which job), what uses it, and hide / delete. A model that
// runs or other models derive from cannot be deleted: the server's 409 says why and the
// dialog offers to hide it instead.
import { Link } from "react-router";
import { modelUsable, PAGE_SIZE, useModelsPage } from "../../api/queries";
import { FilterBar, FilterCheck, Listing, ListScroll, ManageActions, Pager, SearchBox, useListParams } from "../../components/Manage";
import { PageHead } from "../../components/PageHead";
import { StatusBadge, When } from "../../components/States";
import { usePageTitle } from "../../lib/title";

/** "norm 50 %", "vulnerability 12 channels of relu3": the prune record in words. */
export function pruneText(p: Record<string, unknown> | null | undefined): string | null {
  if (!p) return null;
  const method = typeof p.method === "string" ? p.method.replace("_", " ") : "pruned";
  const channels = Array.isArray(p.channels) ? `${p.channels.length} channels` : null;
  const rate = typeof p.rate === "number" ? `${Math.round(p.rate * 1000) / 10} %` : null;
  const layer = typeof p.layer === "string" ? ` of ${p.layer}` : "";
  return `${method} ${channels ?? rate ?? ""}${channels || rate ? layer : ""}`.trim();
}

function usageText(m: ModelOut): string {
  const u = m.usage;
  if (!u) return "—";
  const n = (v: number | undefined, one: string) => `${v ?? 0} ${one}${v === 1 ? "" : "s"}`;
  return [n(u.runs, "run"), n(u.models, "derived model"), n(u.jobs, "job")].join(" · ");
}

export function Models() {
  usePageTitle("Models");
  const lp = useListParams();
  const q = lp.get("q");
  const hidden = lp.get("hidden") === "1";
  const usable = lp.get("usable") === "1";
  const models = useModelsPage({ q: q || undefined, include_hidden: hidden, usable: usable || undefined, offset: lp.offset, limit: PAGE_SIZE });
  const names = new Map((models.data?.items ?? []).map((m) => [m.id, m.name]));
  return (
    <div className="page models">
      <PageHead
        title="Models"
        actions={
          <Link to="/register" className="button primary">
            + Register a model
          </Link>
        }
      >
        Registered models and the models pruned from them (sweeps make one per pruned point). Only <em>ready</em> models can be
        audited. A model that runs or other models derive from can be hidden, not deleted.
      </PageHead>
      <section className="panel" aria-label="Models">
        <FilterBar label="Filter models">
          <SearchBox value={q} onSearch={(v) => lp.set({ q: v })} label="Model name contains" placeholder="name contains…" />
          <FilterCheck label="only ready" checked={usable} onChange={(v) => lp.set({ usable: v })} />
          <FilterCheck label="show hidden" checked={hidden} onChange={(v) => lp.set({ hidden: v })} />
          {models.data && <span className="muted small">{models.data.total.toLocaleString("en")} models</span>}
        </FilterBar>
        <Listing q={models} loading="Loading models" isEmpty={(d) => !d.items.length} empty={q || usable || lp.offset ? "No model matches these filters." : <>No models. <Link to="/register">Register one</Link>.</>}>
          {(data) => (
            <>
              <ListScroll busy={models.isPlaceholderData}>
                <table className="data manage">
                  <thead>
                    <tr>
                      <th scope="col">model</th>
                      <th scope="col">status</th>
                      <th scope="col">architecture</th>
                      <th scope="col">lineage</th>
                      <th scope="col">used by</th>
                      <th scope="col">created</th>
                      <th scope="col">
                        <span className="sr-only">actions</span>
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {data.items.map((m) => (
                      <tr key={m.id} className={m.hidden ? "hidden-row" : undefined} data-model={m.id}>
                        <td>
                          <Link to={`/models/${m.id}`}>{m.name}</Link> <span className="muted small">#{m.id}</span>
                          {m.hidden && <span className="badge"> hidden</span>}
                        </td>
                        <td>
                          <StatusBadge status={m.status ?? "ready"} />
                          {m.status_reason && <p className="reason small">{m.status_reason}</p>}
                        </td>
                        <td className="mono small">{m.registry_name}</td>
                        <td className="small">
                          {m.parent_model_id != null ? (
                            <>
                              from <Link to={`/models/${m.parent_model_id}`}>{names.get(m.parent_model_id) ?? `model ${m.parent_model_id}`}</Link>
                              {pruneText(m.prune) && <>, {pruneText(m.prune)}</>}
                              {m.prune_job_id != null && (
                                <>
                                  {" "}
                                  by <Link to={`/jobs/${m.prune_job_id}`}>job {m.prune_job_id}</Link>
                                </>
                              )}
                            </>
                          ) : (
                            <span className="muted">{m.source === "registry" ? (m.pretrained ? "registry, pretrained" : "registry") : m.source}</span>
                          )}
                        </td>
                        <td className="small nowrap">{usageText(m)}</td>
                        <td className="nowrap small">
                          <When iso={m.created_at} />
                        </td>
                        <td className="nowrap">
                          {modelUsable(m) && (
                            <Link to={`/launch?model=${m.id}`} className="small-link">
                              audit…
                            </Link>
                          )}{" "}
                          <ManageActions what="models" id={m.id} name={m.name} hidden={m.hidden} compact />
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </ListScroll>
              <Pager what="models" offset={lp.offset} total={data.total} onOffset={lp.setOffset} />
            </>
          )}
        </Listing>
      </section>
    </div>
  );
}
