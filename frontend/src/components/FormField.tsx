// The form kit every form shares (Launch, the sweep form, "Check a model", Register): a
// labelled field row whose error replaces its hint, the error paragraph a control names with
// aria-describedby, the image-set select, the problems above the buttons, and sending. Ids
// follow one rule: the control of field F is `f-F`, its error `e-F`, its hint `h-F`, so a form
// can focus the first field a 422 names (a page with several forms prefixes F per form).
import type { UseQueryResult } from "@tanstack/react-query";
import type { ReactNode, RefObject } from "react";
import { ApiError, type ImageSetOut, type ValidationItem } from "../api/client";
import { ErrorBox, Loading } from "./States";

/** aria-invalid / aria-describedby of the control of `field`, given its error (if any); `hint`: its hint describes it otherwise. */
export function fieldAria(field: string, error?: string, hint = false) {
  return { "aria-invalid": !!error, "aria-describedby": error ? `e-${field}` : hint ? `h-${field}` : undefined };
}

export function FieldError({ field, msg }: { field: string; msg?: string }) {
  return msg ? (
    <p className="field-error" id={`e-${field}`} role="alert">
      {msg}
    </p>
  ) : null;
}

export function FieldRow({ field, label, hint, error, children }: { field: string; label: string; hint?: ReactNode; error?: string; children: ReactNode }) {
  return (
    <div className={`field${error ? " invalid" : ""}`}>
      <label htmlFor={`f-${field}`}>{label}</label>
      {children}
      {hint && !error && (
        <p className="hint muted small" id={`h-${field}`}>
          {hint}
        </p>
      )}
      <FieldError field={field} msg={error} />
    </div>
  );
}

export function ImageSetSelect({ id, sets, value, onChange, error }: { id: string; sets: ImageSetOut[]; value: string; onChange: (v: string) => void; error?: string }) {
  return (
    <select id={`f-${id}`} value={value} onChange={(e) => onChange(e.target.value)} {...fieldAria(id, error)}>
      <option value="" disabled>
        choose an image set
      </option>
      {sets.map((s) => (
        <option key={s.id} value={s.id}>
          {s.name} · {s.size.toLocaleString("en")} images
        </option>
      ))}
    </select>
  );
}

/** The set a form starts on: the first whose name or source contains `word` (not `exclude`), else another. */
export function defaultSet(sets: ImageSetOut[], word: string, exclude?: string): string {
  const s = sets.find((x) => String(x.id) !== exclude && (x.name + x.source).toLowerCase().includes(word)) ?? sets.find((x) => String(x.id) !== exclude) ?? sets[0];
  return s ? String(s.id) : "";
}

/** What a form shows while the lists it picks from load (`loading` names them) or when one of `lists` failed; null once it can be filled. */
export function listsGate(loading: string, lists: UseQueryResult<unknown>[], others: UseQueryResult<unknown>[] = []): ReactNode | null {
  if ([...lists, ...others].some((q) => q.isLoading)) return <Loading what={loading} />;
  const failed = lists.find((q) => q.error);
  return failed ? <ErrorBox error={failed.error} retry={() => failed.refetch()} /> : null;
}

/** Said above a launch form when the job-kind registry could not be read: the form still works on the server's defaults. */
export function KindsUnread({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <div className="banner warn" role="note">
      The job kinds (and their defaults) could not be read: {(error as Error).message} Empty fields take the server's defaults.
    </div>
  );
}

/** A form that sends itself with `submit` (no browser validation: the form checks and says what is wrong). */
export function SubmitForm({ formRef, label, className = "panel form", submit, children }: {
  formRef: RefObject<HTMLFormElement | null>; label: string; className?: string; submit: () => Promise<void>; children: ReactNode;
}) {
  return (
    <form
      ref={formRef}
      noValidate
      className={className}
      aria-label={label}
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      {children}
    </form>
  );
}

/**
 * What stops a form at the bottom, above its buttons: the server's refusals that name no
 * field of the form (`refused`), another failure of the request (`error`), and, once the
 * form was sent, how many fields marked above still need fixing (`invalid`).
 */
export function FormProblems({ what, refused, error, invalid }: { what: string; refused: string[]; error: unknown; invalid: number }) {
  return (
    <>
      {refused.length > 0 && (
        <div className="state error" role="alert">
          <strong>The server refused the {what}</strong>
          <ul>
            {refused.map((m) => (
              <li key={m}>{m}</li>
            ))}
          </ul>
        </div>
      )}
      {error != null && error !== false && <ErrorBox error={error} />}
      {invalid > 0 && (
        <p className="field-error" role="alert">
          Fix the {invalid === 1 ? "field" : `${invalid} fields`} marked above.
        </p>
      )}
    </>
  );
}


/** A failure of a form's request that no field shows (anything but a 422 naming fields): for the form's own error box. */
export const unlessOnFields = (e: unknown) => (e && !(e instanceof ApiError && e.fieldErrors.length) ? e : null);

/** The errors a form shows: per field (keyed by its field name) and for the form as a whole. */
export type FormErrors<E> = { fields: E; form: string[] };

/**
 * Send a launch-style form: its own (client-side) errors first, focusing the first field
 * named; then the request, and on success `created(id)`; a 422 from the server maps onto
 * the fields it names (`mapServer`) and focuses the first of them. Other errors stay with
 * the mutation, which shows them.
 */
export async function sendForm<E extends object>(o: {
  errors: E;
  focusFirst: (errs: E) => void;
  setSubmitted: (v: boolean) => void;
  setServer: (s: FormErrors<E>) => void;
  mapServer: (items: ValidationItem[]) => FormErrors<E>;
  send: () => Promise<{ id: number }>;
  created: (id: number) => void;
}): Promise<void> {
  o.setSubmitted(true);
  o.setServer({ fields: {} as E, form: [] });
  if (Object.keys(o.errors).length) {
    o.focusFirst(o.errors);
    return;
  }
  try {
    o.created((await o.send()).id);
  } catch (e) {
    if (e instanceof ApiError && e.fieldErrors.length) {
      const mapped = o.mapServer(e.fieldErrors);
      o.setServer(mapped);
      o.focusFirst(mapped.fields);
    }
  }
}
