// The pieces the index pages share (runs on the home page, /models, /image-sets, /jobs):
// hide / unhide and delete with a confirmation whose refusal (409) says why and offers to
// hide instead, a pager over limit/offset with the total the server counted, and the
// list's filters kept in the address (so a filtered page can be linked and survives reload),
// and the list itself: loading, its error, empty, or its rows in a scroller.
import type { UseQueryResult } from "@tanstack/react-query";
import { useState, type ReactNode } from "react";
import { useSearchParams } from "react-router";
import { ApiError } from "../api/client";
import { type Managed, PAGE_SIZE, useDelete, useSetHidden } from "../api/queries";
import { ConfirmDialog } from "./Dialog";
import { Empty, ErrorBox, Loading } from "./States";

const NOUN: Record<Managed, string> = { runs: "run", models: "model", "image-sets": "image set", sweeps: "sweep" };

/** What a delete takes with it, in the words of the API contract. */
const TAKES: Record<Managed, string> = {
  runs: "its unit results, synthetic images and share links, and the files nothing else uses",
  models: "its weights file, when nothing else uses it",
  "image-sets": "its index of images (the image files on the server stay)",
  sweeps: "its jobs, points and runs, and the pruned models nothing else uses",
};

export function ManageActions({ what, id, name, hidden, compact }: { what: Managed; id: number; name: string; hidden?: boolean; compact?: boolean }) {
  const hide = useSetHidden(what);
  const del = useDelete(what);
  const [confirm, setConfirm] = useState(false);
  const noun = NOUN[what];
  const label = `${noun} ${id}${name ? ` (${name})` : ""}`;
  return (
    <span className={`manage-actions${compact ? " compact" : ""}`} onClick={(e) => e.stopPropagation()}>
      <button
        type="button"
        className="small-btn"
        disabled={hide.isPending}
        onClick={() => hide.mutate({ id, hidden: !hidden })}
        aria-label={`${hidden ? "Unhide" : "Hide"} ${label}`}
        title={hidden ? "list it again" : "leave it out of lists and pickers (it stays reachable by its address)"}
      >
        {hidden ? "Unhide" : "Hide"}
      </button>
      <button type="button" className="small-btn danger" onClick={() => setConfirm(true)} aria-label={`Delete ${label}`}>
        Delete…
      </button>
      {hide.error != null && (
        <span className="field-error" role="alert">
          {(hide.error as Error).message}
        </span>
      )}
      {confirm && (
        <ConfirmDialog
          title={`Delete ${label}?`}
          confirmLabel={`Delete ${noun} ${id}`}
          onConfirm={() => del.mutateAsync(id)}
          onClose={() => setConfirm(false)}
          alternative={(e) =>
            e instanceof ApiError && e.status === 409 && !hidden ? (
              <>
                <button
                  type="button"
                  className="primary"
                  disabled={hide.isPending}
                  onClick={() => hide.mutate({ id, hidden: true }, { onSuccess: () => setConfirm(false) })}
                >
                  Hide {noun} {id} instead
                </button>
                {hide.error != null && <p className="field-error">{(hide.error as Error).message}</p>}
              </>
            ) : null
          }
        >
          <p>
            This deletes {noun} {id}
            {name ? <> “{name}”</> : null} and {TAKES[what]}. It cannot be undone.
          </p>
          {!hidden && <p className="muted small">To only leave it out of lists and pickers, hide it instead.</p>}
        </ConfirmDialog>
      )}
    </span>
  );
}

/** « first · ‹ previous · rows a–b of n · next › */
export function Pager({ offset, total, limit = PAGE_SIZE, onOffset, what }: { offset: number; total: number; limit?: number; onOffset: (o: number) => void; what: string }) {
  if (total <= limit && offset === 0) return null;
  const last = Math.max(0, Math.floor((total - 1) / limit) * limit);
  return (
    <nav className="pager" aria-label={`Pages of ${what}`}>
      <button type="button" onClick={() => onOffset(0)} disabled={offset === 0}>
        « first
      </button>
      <button type="button" onClick={() => onOffset(Math.max(0, offset - limit))} disabled={offset === 0}>
        ‹ previous
      </button>
      <span>
        {total === 0 ? "none" : `${(offset + 1).toLocaleString("en")}–${Math.min(total, offset + limit).toLocaleString("en")} of ${total.toLocaleString("en")}`}
      </span>
      <button type="button" onClick={() => onOffset(offset + limit)} disabled={offset + limit >= total}>
        next ›
      </button>
      <button type="button" onClick={() => onOffset(last)} disabled={offset >= last}>
        last »
      </button>
    </nav>
  );
}

/**
 * A list's filters in the address: `get(name)` reads one ("" when absent), `set({…})`
 * changes some and goes back to the first page (a filter that changes the rows makes the
 * old offset meaningless); `offset` / `setOffset` page through.
 */
export function useListParams() {
  const [params, setParams] = useSearchParams();
  const get = (k: string) => params.get(k) ?? "";
  const set = (changes: Record<string, string | boolean | null>) =>
    setParams(
      (p) => {
        const n = new URLSearchParams(p);
        for (const [k, v] of Object.entries(changes)) {
          if (v === null || v === "" || v === false) n.delete(k);
          else n.set(k, v === true ? "1" : v);
        }
        n.delete("offset");
        return n;
      },
      { replace: true },
    );
  const offset = Math.max(0, Number.parseInt(get("offset"), 10) || 0);
  const setOffset = (o: number) =>
    setParams((p) => {
      const n = new URLSearchParams(p);
      if (o > 0) n.set("offset", String(o));
      else n.delete("offset");
      return n;
    });
  return { get, set, offset, setOffset };
}

/** A row of filters above a list. */
export function FilterBar({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="filter-bar" role="search" aria-label={label}>
      {children}
    </div>
  );
}

/** A text filter that applies when the user stops typing (Enter, or leaving the field), not at each keystroke. */
export function SearchBox({ value, onSearch, label, placeholder }: { value: string; onSearch: (v: string) => void; label: string; placeholder?: string }) {
  const [text, setText] = useState(value);
  const [seen, setSeen] = useState(value);
  if (value !== seen) {
    // the address changed (back button, a link): follow it
    setSeen(value);
    setText(value);
  }
  return (
    <input
      type="search"
      maxLength={200}
      aria-label={label}
      placeholder={placeholder}
      value={text}
      onChange={(e) => setText(e.target.value)}
      onKeyDown={(e) => {
        if (e.key === "Enter") {
          e.preventDefault();
          onSearch(text.trim());
        }
      }}
      onBlur={() => text.trim() !== value && onSearch(text.trim())}
    />
  );
}

/** A filter of a list: a select labelled `label` whose "any" (the empty value) clears it. */
export function FilterSelect({ label, value, onChange, options }: {
  label: string; value: string; onChange: (v: string) => void; options: readonly (string | { value: string | number; text: string })[];
}) {
  return (
    <label>
      {label.toLowerCase()}{" "}
      <select value={value} onChange={(e) => onChange(e.target.value)} aria-label={label}>
        <option value="">any</option>
        {options.map((o) => {
          const { value: v, text } = typeof o === "string" ? { value: o, text: o } : o;
          return (
            <option key={v} value={v}>
              {text}
            </option>
          );
        })}
      </select>
    </label>
  );
}

/** A checkbox of a list's filter bar ("show hidden", "only ready"). */
export function FilterCheck({ label, checked, onChange }: { label: string; checked: boolean; onChange: (v: boolean) => void }) {
  return (
    <label className="check">
      <input type="checkbox" checked={checked} onChange={(e) => onChange(e.target.checked)} /> {label}
    </label>
  );
}

/** A list's body for its query: loading (`loading` names what), its error with a retry, `empty` when it has no rows, else `children(data)`. */
export function Listing<T>({ q, loading, isEmpty, empty, children }: {
  q: UseQueryResult<T>; loading: string; isEmpty: (data: T) => boolean; empty: ReactNode; children: (data: T) => ReactNode;
}) {
  if (q.isPending) return <Loading what={loading} />;
  if (q.error) return <ErrorBox error={q.error} retry={() => q.refetch()} />;
  if (isEmpty(q.data)) return <Empty>{empty}</Empty>;
  return <>{children(q.data)}</>;
}

/** The scroller a list's table sits in; `busy` while the next page loads over it (the rows on screen are the last page's). */
export function ListScroll({ busy, children }: { busy?: boolean; children: ReactNode }) {
  return (
    <div className={`scroll-x${busy ? " is-loading" : ""}`} aria-busy={busy}>
      {children}
    </div>
  );
}
