import { useEffect, useState, type ReactNode } from "react";
import { ApiError } from "../api/client";
import { absTime, when } from "../lib/format";
import { selectedIsInitText, type AttackOutcome } from "../lib/rows";

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div className="state loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> {what}…
    </div>
  );
}

export function ErrorBox({ error, retry, title }: { error: unknown; retry?: () => void; title?: string }) {
  const msg = error instanceof Error ? error.message : String(error);
  const status = error instanceof ApiError ? error.status : undefined;
  return (
    <div className="state error" role="alert">
      <strong>{title ?? (status ? `Error ${status}` : "Something went wrong")}</strong>
      <p>{msg}</p>
      {retry && (
        <button type="button" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="state empty">{children}</div>;
}

export function StatusBadge({ status }: { status: string | null | undefined }) {
  const s = status ?? "unknown";
  return <span className={`badge status-${s}`}>{s}</span>;
}

/**
 * An address that names something the run (or model) does not have: say so, instead of
 * quietly showing something else (issue 13, item 13). `children` offers the way back.
 */
export function NotFound({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <section className="panel not-found" aria-label="Not found" data-testid="not-found">
      <h1>{title}</h1>
      {children}
    </section>
  );
}

/** The current time (ms), re-read every `everyMs`: relative times that keep ticking. */
export function useNow(everyMs = 30_000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = window.setInterval(() => setNow(Date.now()), everyMs);
    return () => window.clearInterval(t);
  }, [everyMs]);
  return now;
}

/**
 * A time as "2 min ago" that stays true (re-rendered each half minute), with the full
 * date as its tooltip; `absolute` shows the date itself (a finished job's start and end).
 */
export function When({ iso, absolute = false }: { iso: string | null | undefined; absolute?: boolean }) {
  const now = useNow();
  if (!iso) return <>{when(iso)}</>;
  return (
    <time dateTime={iso} title={absTime(iso)}>
      {absolute ? absTime(iso) : when(iso, now)}
    </time>
  );
}

/**
 * Says that the run's "selected" state is θ_init (no evaluated state stayed within the
 * accuracy budget) and offers the final state (issue 19, item 2). Nothing when the attack
 * had a state within budget.
 */
export function SelectedIsInit({ outcome, children }: { outcome: AttackOutcome | null; children?: ReactNode }) {
  if (!outcome?.selected_is_init) return null;
  return (
    <div className="banner warn selected-is-init" role="note" data-testid="selected-is-init">
      <strong>The selected state shows no attack.</strong> {selectedIsInitText(outcome)}
      {children ? <> {children}</> : null}
    </div>
  );
}
