import type { ReactNode } from "react";
import { ApiError } from "../api/client";

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
