// /image-sets: every image set with its status (a folder is "indexing" while its job runs,
// "failed" with the reason when it could not be read), its size and classes, and hide /
// delete. A failed set shows its reason instead of "0 images"; a set runs or scans use
// cannot be deleted (the server's 409 says why; hide it instead).
import { Link } from "react-router";
import { PAGE_SIZE, useImageSetsPage } from "../../api/queries";
import { FilterBar, FilterCheck, Listing, ListScroll, ManageActions, Pager, SearchBox, useListParams } from "../../components/Manage";
import { PageHead } from "../../components/PageHead";
import { StatusBadge, When } from "../../components/States";
import { usePageTitle } from "../../lib/title";

export function ImageSets() {
  usePageTitle("Image sets");
  const lp = useListParams();
  const q = lp.get("q");
  const hidden = lp.get("hidden") === "1";
  const sets = useImageSetsPage({ q: q || undefined, include_hidden: hidden, offset: lp.offset, limit: PAGE_SIZE });
  return (
    <div className="page image-sets">
      <PageHead
        title="Image sets"
        actions={
          <Link to="/register" className="button primary">
            + Register an image folder
          </Link>
        }
      >
        Labelled images the audits scan, attack with and measure on. A folder is indexed by a job; only <em>ready</em>,
        non-empty sets can be picked in a form.
      </PageHead>
      <section className="panel" aria-label="Image sets">
        <FilterBar label="Filter image sets">
          <SearchBox value={q} onSearch={(v) => lp.set({ q: v })} label="Image set name contains" placeholder="name contains…" />
          <FilterCheck label="show hidden" checked={hidden} onChange={(v) => lp.set({ hidden: v })} />
          {sets.data && <span className="muted small">{sets.data.total.toLocaleString("en")} image sets</span>}
        </FilterBar>
        <Listing q={sets} loading="Loading image sets" isEmpty={(d) => !d.items.length} empty={q || lp.offset ? "No image set matches these filters." : <>No image sets. <Link to="/register">Register a folder</Link>.</>}>
          {(data) => (
            <>
              <ListScroll busy={sets.isPlaceholderData}>
                <table className="data manage">
                  <thead>
                    <tr>
                      <th scope="col">image set</th>
                      <th scope="col">status</th>
                      <th scope="col">source</th>
                      <th scope="col" className="num">images</th>
                      <th scope="col" className="num">classes</th>
                      <th scope="col">created</th>
                      <th scope="col">
                        <span className="sr-only">actions</span>
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {data.items.map((s) => {
                      const status = s.status ?? "ready";
                      return (
                        <tr key={s.id} className={s.hidden ? "hidden-row" : undefined} data-set={s.id}>
                          <td>
                            {s.name} <span className="muted small">#{s.id}</span>
                            {s.hidden && <span className="badge"> hidden</span>}
                          </td>
                          <td>
                            <StatusBadge status={status} />
                            {status === "failed" && <p className="reason small">{s.error || "failed (no reason recorded)"}</p>}
                            {s.job_id != null && status !== "ready" && (
                              <>
                                {" "}
                                <Link to={`/jobs/${s.job_id}`} className="small">
                                  job {s.job_id}
                                </Link>
                              </>
                            )}
                          </td>
                          <td className="mono small">{s.source}</td>
                          <td className="num">
                            {status === "ready" ? (
                              s.size.toLocaleString("en")
                            ) : (
                              <span className="muted" title={status === "failed" ? "not indexed" : "being indexed"}>
                                —
                              </span>
                            )}
                          </td>
                          <td className="num" title={s.classes.join(", ")}>
                            {status === "ready" ? s.classes.length : "—"}
                          </td>
                          <td className="nowrap small">
                            <When iso={s.created_at} />
                          </td>
                          <td className="nowrap">
                            <ManageActions what="image-sets" id={s.id} name={s.name} hidden={s.hidden} compact />
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              </ListScroll>
              <Pager what="image sets" offset={lp.offset} total={data.total} onOffset={lp.setOffset} />
            </>
          )}
        </Listing>
      </section>
    </div>
  );
}
