import { useEffect, useRef, useState, type ReactNode } from "react";
import { createPortal } from "react-dom";

/** A modal: Escape or the backdrop closes it, focus moves in and returns on close, Tab stays inside. */
export function Dialog({ title, onClose, children, wide }: { title: string; onClose: () => void; children: ReactNode; wide?: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  // the latest onClose, so a parent that re-renders (a list refreshing behind the dialog) with a new
  // closure does not re-run the effect: that would move focus back to the first control
  const close = useRef(onClose);
  close.current = onClose;
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const el = box.current;
    const first = el?.querySelector<HTMLElement>("input, button:not(.close), select, textarea, a[href]");
    (first ?? el)?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") {
        e.stopPropagation();
        close.current();
      } else if (e.key === "Tab" && el) {
        const f = [...el.querySelectorAll<HTMLElement>("input, button, select, textarea, a[href]")].filter((x) => !x.hasAttribute("disabled"));
        if (!f.length) return;
        if (e.shiftKey && document.activeElement === f[0]) {
          e.preventDefault();
          f[f.length - 1].focus();
        } else if (!e.shiftKey && document.activeElement === f[f.length - 1]) {
          e.preventDefault();
          f[0].focus();
        }
      }
    };
    document.addEventListener("keydown", onKey, true);
    return () => {
      document.removeEventListener("keydown", onKey, true);
      before?.focus?.();
    };
  }, []);
  // rendered at the end of <body>: a dialog opened from a table row (delete…) would otherwise inherit the
  // cell's styles (nowrap, muted colour); React events still bubble to the component that opened it
  return createPortal(
    <div className="backdrop" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div className={`dialog${wide ? " wide" : ""}`} role="dialog" aria-modal="true" aria-label={title} ref={box} tabIndex={-1}>
        <header>
          <h2>{title}</h2>
          <button type="button" className="close" onClick={onClose} aria-label="Close">
            ×
          </button>
        </header>
        {children}
      </div>
    </div>,
    document.body,
  );
}

/**
 * Ask before something that cannot be undone (a delete, a revoke). `onConfirm` runs the
 * request; the dialog closes when it succeeds and otherwise stays open with the server's
 * reason (a 409 says why in words), so the user reads why and can take `alternative`
 * (e.g. "Hide instead") without starting over.
 */
export function ConfirmDialog({
  title,
  children,
  confirmLabel,
  onConfirm,
  onClose,
  alternative,
}: {
  title: string;
  children: ReactNode;
  confirmLabel: string;
  onConfirm: () => Promise<unknown>;
  onClose: () => void;
  /** shown beside the reason when the request was refused */
  alternative?: (error: unknown) => ReactNode;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = async () => {
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
      onClose();
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  return (
    <Dialog title={title} onClose={onClose}>
      <div className="confirm-body">{children}</div>
      {error != null && (
        <div className="state error confirm-refused" role="alert">
          <strong>{(error as { status?: number }).status === 409 ? "It cannot be done now" : "It failed"}</strong>
          <p>{error instanceof Error ? error.message : String(error)}</p>
          {alternative?.(error)}
        </div>
      )}
      <div className="row end">
        <button type="button" onClick={onClose}>
          {error ? "Close" : "Cancel"}
        </button>
        {error == null && (
          <button type="button" className="danger" onClick={() => void run()} disabled={busy}>
            {busy ? "Working…" : confirmLabel}
          </button>
        )}
      </div>
    </Dialog>
  );
}
