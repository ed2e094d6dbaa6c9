// /jobs: every top-level job (an audit chain is one row; its steps are on its page),
// filtered by kind and status, a page at a time, each linking to its job page and to what
// it made (a run, a sweep, a detection).
import { Link } from "react-router";
import { isLive, STATUSES } from "../../api/client";
import { PAGE_SIZE, useJobKinds, useJobsPage } from "../../api/queries";
import { FilterBar, FilterSelect, Listing, ListScroll, Pager, useListParams } from "../../components/Manage";
import { PageHead } from "../../components/PageHead";
import { StatusBadge, When } from "../../components/States";
import { jobTitle, kindOf, liveStepLabel } from "../../lib/chain";
import { attackLabel, progressText } from "../../lib/format";
import { usePageTitle } from "../../lib/title";
import { resultLink } from "./kindViews";

export function Jobs() {
  usePageTitle("Jobs");
  const lp = useListParams();
  const kind = lp.get("kind");
  const status = lp.get("status");
  const kinds = useJobKinds();
  const jobs = useJobsPage({ kind: kind || undefined, status: status || undefined, offset: lp.offset, limit: PAGE_SIZE });
  const filtered = !!(kind || status);
  return (
    <div className="page jobs">
      <PageHead
        title="Jobs"
      >
        Everything queued on the worker: audits, scans, sweeps, detections, registrations of image folders. A chain (an audit,
        a sweep) is one job here; its steps are on its page.
      </PageHead>
      <section className="panel" aria-label="Jobs">
        <FilterBar label="Filter jobs">
          <FilterSelect
            label="Kind"
            value={kind}
            onChange={(v) => lp.set({ kind: v })}
            options={[...(kinds.data ?? []).map((k) => ({ value: k.kind, text: k.title || k.kind })), ...(kind && !kindOf(kinds.data, kind) ? [kind] : [])]}
          />
          <FilterSelect label="Status" value={status} onChange={(v) => lp.set({ status: v })} options={STATUSES} />
          {filtered && (
            <button type="button" className="link" onClick={() => lp.set({ kind: null, status: null })}>
              clear filters
            </button>
          )}
          {jobs.data && (
            <span className="muted small">
              {jobs.data.total.toLocaleString("en")} job{jobs.data.total === 1 ? "" : "s"}
              {filtered ? " matching" : ""}
            </span>
          )}
        </FilterBar>
        <Listing q={jobs} loading="Loading jobs" isEmpty={(d) => !d.items.length} empty={filtered || lp.offset ? "No job matches these filters." : <>No jobs yet. <Link to="/launch">Launch an audit</Link>.</>}>
          {(data) => (
            <>
              <ListScroll busy={jobs.isPlaceholderData}>
                <table className="data manage">
                  <thead>
                    <tr>
                      <th scope="col">job</th>
                      <th scope="col">kind</th>
                      <th scope="col">status</th>
                      <th scope="col">progress or outcome</th>
                      <th scope="col">result</th>
                      <th scope="col">created</th>
                    </tr>
                  </thead>
                  <tbody>
                    {data.items.map((j) => {
                      const result = resultLink(j);
                      return (
                        <tr key={j.id}>
                          <td>
                            <Link to={`/jobs/${j.id}`}>
                              job {j.id}: {jobTitle(j, attackLabel)}
                            </Link>
                          </td>
                          <td className="small">{kindOf(kinds.data, j.kind)?.title ?? j.kind}</td>
                          <td>
                            <StatusBadge status={j.status} />
                          </td>
                          <td className="small">
                            {isLive(j)
                              ? progressText(j.progress, (n) => liveStepLabel(kinds.data, j, n, j.progress))
                              : j.status === "failed" || j.status === "cancelled"
                                ? <span className="reason">{(j.error ?? "").slice(0, 200)}</span>
                                : <>finished <When iso={j.finished_at} /></>}
                          </td>
                          <td className="small">{result ? <Link to={result.to}>{result.text}</Link> : <span className="muted">—</span>}</td>
                          <td className="nowrap small">
                            <When iso={j.created_at} />
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              </ListScroll>
              <Pager what="jobs" offset={lp.offset} total={data.total} onOffset={lp.setOffset} />
            </>
          )}
        </Listing>
      </section>
    </div>
  );
}
