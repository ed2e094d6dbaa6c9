import { useState } from "react";
import { useCreateShare, useRevokeShare, useShares } from "../../api/queries";
import { CopyButton } from "../../components/CopyButton";
import { Dialog } from "../../components/Dialog";
import { ErrorBox, Loading, When } from "../../components/States";
import { when } from "../../lib/format";

/** Share links of a run: create one (read-only access, no login), copy it, list and revoke. */
export function ShareDialog({ runId, runName, onClose }: { runId: number; runName: string; onClose: () => void }) {
  const shares = useShares(runId);
  const create = useCreateShare(runId);
  const revoke = useRevokeShare(runId);
  const [fresh, setFresh] = useState<string | null>(null);
  // revoking cuts everyone who has the link, at once and for good: it asks first (issue 19, item 11)
  const [confirming, setConfirming] = useState<string | null>(null);
  return (
    <Dialog title={`Share “${runName}”`} onClose={onClose} wide>
      <p>
        A share link opens this run <strong>read-only</strong> for anyone who has it, without an API token: the summary, the
        unit table and every unit page. Revoke it to cut access.
      </p>
      <div className="row">
        <button
          type="button"
          className="primary"
          disabled={create.isPending}
          onClick={() => create.mutate(undefined, { onSuccess: (s) => setFresh(s.url) })}
        >
          {create.isPending ? "Creating…" : "Create share link"}
        </button>
      </div>
      {create.error && <ErrorBox error={create.error} />}
      {fresh && (
        <div className="share-new">
          <label htmlFor="share-url">New link</label>
          <div className="row">
            <input id="share-url" className="mono grow" readOnly value={fresh} onFocus={(e) => e.target.select()} data-testid="share-url" />
            <CopyButton text={fresh} className="primary" />
          </div>
        </div>
      )}
      <h3>Active links</h3>
      {shares.isLoading ? (
        <Loading what="Loading links" />
      ) : shares.error ? (
        <ErrorBox error={shares.error} retry={() => shares.refetch()} />
      ) : !shares.data?.length ? (
        <p className="muted">No active share links.</p>
      ) : (
        <ul className="share-list">
          {shares.data.map((s) => (
            <li key={s.token}>
              <code className="grow" title={s.url}>
                {s.url}
              </code>
              <span className="muted small">
                created <When iso={s.created_at} />
              </span>
              <CopyButton text={s.url} label="Copy" />
              {confirming === s.token ? (
                <span className="confirm" role="group" aria-label="Confirm revoking">
                  <span className="small">Anyone using this link loses access. Revoke it?</span>{" "}
                  <button
                    type="button"
                    className="danger"
                    disabled={revoke.isPending}
                    onClick={() => {
                      revoke.mutate(s.token, { onSettled: () => setConfirming(null) });
                      if (fresh === s.url) setFresh(null);
                    }}
                  >
                    Yes, revoke the link
                  </button>{" "}
                  <button type="button" onClick={() => setConfirming(null)}>
                    Keep it
                  </button>
                </span>
              ) : (
                <button type="button" className="danger" disabled={revoke.isPending} onClick={() => setConfirming(s.token)} aria-label={`Revoke link created ${when(s.created_at)}…`}>
                  Revoke…
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {revoke.error && <ErrorBox error={revoke.error} />}
    </Dialog>
  );
}
