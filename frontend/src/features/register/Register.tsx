// Register models and image sets from the dashboard (issue 13, item 18): a registry model,
// an uploaded checkpoint (with upload progress), an image folder under an allowed root
// (indexed by a register_images job whose progress is followed here). Each form checks
// what it can in the browser and shows the server's 422 on the field it names.
import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useState, type FormEvent, type ReactNode } from "react";
import { Link } from "react-router";
import { ApiError, isTerminal, type ModelOut } from "../../api/client";
import { useImageSet, useJob, useModelRegistry, useRegisterImageSet, useRegisterModel } from "../../api/queries";
import { FieldRow, fieldAria, unlessOnFields } from "../../components/FormField";
import { PageHead } from "../../components/PageHead";
import { ErrorBox, StatusBadge } from "../../components/States";
import { useJobEvents } from "../../lib/sse";
import { usePageTitle } from "../../lib/title";
import {
  bytesText, folderBody, mapRegisterErrors, modelBody, uploadCheckpoint, validateFolder, validateModel, validateUpload,
  type FolderForm, type ModelForm, type RegErrors, type RegField, type RegisteredSet, type UploadForm,
} from "./register";

type Registry = ReturnType<typeof useModelRegistry>;

export function Register() {
  usePageTitle("Register a model or an image set");
  const registry = useModelRegistry();
  return (
    <div className="page register">
      <PageHead
        title="Register"
      >
        The models and image sets audits run on. The server checks each exactly as the API and the CLI do: weights must fit
        the architecture (pickled code never runs), and folders must lie under one of the server's allowed roots.
      </PageHead>
      {registry.error != null && <ErrorBox error={registry.error} title="The model registry could not be read" retry={() => registry.refetch()} />}
      <div className="register-forms">
        <RegistryModelForm registry={registry} />
        <UploadCheckpointForm registry={registry} />
        <FolderSetForm />
      </div>
    </div>
  );
}

// ---------------------------------------------------------------- shared pieces

/** Field state of one form: values, which fields were left (their errors show), the server's errors. */
function useFields<T extends Record<string, unknown>>(initial: T, check: (v: T) => RegErrors) {
  const [values, setValues] = useState<T>(initial);
  const [touched, setTouched] = useState<Set<string>>(new Set());
  const [server, setServer] = useState<{ fields: RegErrors; form: string[] }>({ fields: {}, form: [] });
  const errors = check(values);
  const shown = (f: RegField) => server.fields[f] ?? (touched.has(f) ? errors[f] : undefined);
  const set = <K extends keyof T>(k: K, v: T[K]) => {
    setValues((x) => ({ ...x, [k]: v }));
    setServer((s) => ({ fields: { ...s.fields, [k as string]: undefined }, form: s.form }));
  };
  const blur = (f: RegField) => () => setTouched((t) => new Set(t).add(f));
  /** On submit: show every error; true when the form may be sent. */
  const submitting = () => {
    setTouched(new Set(Object.keys(values)));
    setServer({ fields: {}, form: [] });
    return Object.keys(errors).length === 0;
  };
  const refused = (e: unknown, fields: readonly RegField[]) => {
    if (e instanceof ApiError && e.fieldErrors.length) setServer(mapRegisterErrors(e.fieldErrors, fields));
  };
  /** A form's onSubmit: checks everything, then sends the values. */
  const onSubmit = (send: (v: T) => void) => (e: FormEvent) => {
    e.preventDefault();
    if (submitting()) send(values);
  };
  return { values, set, shown, blur, submitting, onSubmit, refused, server, reset: () => { setValues(initial); setTouched(new Set()); } };
}

type TextFields<K extends RegField> = {
  values: Record<K, string>; set: (k: K, v: string) => void; shown: (f: RegField) => string | undefined; blur: (f: RegField) => () => void;
};

/** A labelled text input bound to one field of a form (`<prefix>-<field>` names it in the form kit). */
function TextRow<K extends RegField>({ prefix, field, f, label, hint, className, placeholder, numeric }: {
  prefix: string; field: K; f: TextFields<K>; label: string; hint?: string; className?: string; placeholder?: string; numeric?: boolean;
}) {
  const id = `${prefix}-${field}`;
  const error = f.shown(field);
  return (
    <FieldRow field={id} label={label} error={error} hint={hint}>
      <input
        id={`f-${id}`} className={className} placeholder={placeholder} inputMode={numeric ? "numeric" : undefined} value={f.values[field]}
        onChange={(e) => f.set(field, e.target.value)} onBlur={f.blur(field)} {...fieldAria(id, error, !!hint)}
      />
    </FieldRow>
  );
}

/** The architecture of a model: a registry name, in the row of field `id`. */
function ArchSelect({ id, registry, value, onChange, onBlur, error, hint = false }: {
  id: string; registry: Registry; value: string; onChange: (v: string) => void; onBlur: () => void; error?: string; hint?: boolean;
}) {
  return (
    <select id={`f-${id}`} value={value} onChange={(e) => onChange(e.target.value)} onBlur={onBlur} {...fieldAria(id, error, hint)}>
      <option value="">{registry.isLoading ? "loading the registry…" : "choose an architecture"}</option>
      {(registry.data ?? []).map((m) => (
        <option key={m.name} value={m.name}>
          {m.name} · {m.description}
          {m.offline ? "" : " (pretrained weights need a download)"}
        </option>
      ))}
    </select>
  );
}

/** The end of each form: what no field shows (422 items without a field, other failures), the result, the button. */
function FormFoot({ serverForm, failed, failedTitle, busy, busyLabel, label, children }: {
  serverForm: string[]; failed: unknown; failedTitle: string; busy: boolean; busyLabel: string; label: string; children?: ReactNode;
}) {
  return (
    <>
      {serverForm.length > 0 && (
        <div className="state error" role="alert">
          {serverForm.map((m) => (
            <p key={m}>{m}</p>
          ))}
        </div>
      )}
      {failed != null && <ErrorBox error={failed} title={failedTitle} />}
      {children}
      <div className="row end">
        <button type="submit" className="primary" disabled={busy}>
          {busy ? busyLabel : label}
        </button>
      </div>
    </>
  );
}

function ModelDone({ model }: { model: ModelOut }) {
  return (
    <div className="banner ok" role="status">
      Registered model #{model.id} <strong>{model.name}</strong> ({model.registry_name}): {model.n_layers} layers, {model.n_classes} classes.{" "}
      <Link to={`/models/${model.id}`}>Open it</Link> · <Link to={`/launch?model=${model.id}`}>audit it…</Link>
    </div>
  );
}

function Progress({ label, done, total, failed }: { label: string; done: number; total: number | null; failed?: boolean }) {
  const pct = total ? Math.min(100, Math.round((100 * done) / total)) : 0;
  return (
    <div className={`progress${failed ? " failed" : ""}`} role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={total ? pct : undefined}>
      <div style={{ width: `${total ? pct : 0}%` }} className={total ? "" : "indeterminate"} />
    </div>
  );
}

// ---------------------------------------------------------------- a registry model

const MODEL_FIELDS: RegField[] = ["name", "registry_name", "pretrained", "checkpoint_path"];

function RegistryModelForm({ registry }: { registry: Registry }) {
  const f = useFields<ModelForm>({ name: "", registry_name: "", pretrained: true, checkpoint_path: "" }, validateModel);
  const create = useRegisterModel();
  const submit = f.onSubmit((v) => create.mutate(modelBody(v), { onError: (err) => f.refused(err, MODEL_FIELDS), onSuccess: () => f.reset() }));
  const other = unlessOnFields(create.error);
  return (
    <form className="panel form" aria-label="Register a registry model" noValidate onSubmit={submit}>
      <h2>A model from the registry</h2>
      <p className="muted small">By name: torchvision, timm (when installed) and the demo CNN. Weights come from the library's cache, or from a file on the server.</p>
      <TextRow prefix="rm" field="name" f={f} label="Name" hint="how the dashboard lists it" />
      <FieldRow field="rm-registry_name" label="Architecture" error={f.shown("registry_name")}>
        <ArchSelect id="rm-registry_name" registry={registry} value={f.values.registry_name} onChange={(v) => f.set("registry_name", v)} onBlur={f.blur("registry_name")} error={f.shown("registry_name")} />
      </FieldRow>
      <label className="check">
        <input type="checkbox" checked={f.values.pretrained} onChange={(e) => f.set("pretrained", e.target.checked)} /> pretrained weights (off: random
        initialisation)
      </label>
      <TextRow
        prefix="rm" field="checkpoint_path" f={f} label="Checkpoint on the server (optional)" className="mono" placeholder="/data/weights/model.safetensors"
        hint="a .safetensors file under an allowed root; replaces the pretrained weights"
      />
      <FormFoot serverForm={f.server.form} failed={other} failedTitle="Registration failed" busy={create.isPending} busyLabel="Registering…" label="Register model">
        {create.data && !create.isPending && <ModelDone model={create.data} />}
      </FormFoot>
    </form>
  );
}

// ---------------------------------------------------------------- an uploaded checkpoint

const UPLOAD_FIELDS: RegField[] = ["name", "registry_name", "file"];

function UploadCheckpointForm({ registry }: { registry: Registry }) {
  const f = useFields<UploadForm>({ name: "", registry_name: "", file: null }, validateUpload);
  const qc = useQueryClient();
  const [sent, setSent] = useState<{ done: number; total: number } | null>(null);
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState<ModelOut | null>(null);
  const [failed, setFailed] = useState<unknown>(null);
  const [fileInput, setFileInput] = useState(0); // a new <input type=file> once registered: it cannot be cleared by value
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!f.submitting()) return;
    setBusy(true);
    setDone(null);
    setFailed(null);
    setSent({ done: 0, total: f.values.file!.size });
    try {
      const model = await uploadCheckpoint(f.values, (d, t) => setSent({ done: d, total: t }));
      setDone(model);
      f.reset();
      setFileInput((n) => n + 1);
      await qc.invalidateQueries({ queryKey: ["models"] });
    } catch (err) {
      f.refused(err, UPLOAD_FIELDS);
      setFailed(unlessOnFields(err));
    } finally {
      setBusy(false);
    }
  };
  const uploaded = sent && sent.done >= sent.total;
  return (
    <form className="panel form" aria-label="Upload a checkpoint" noValidate onSubmit={submit}>
      <h2>An uploaded checkpoint</h2>
      <p className="muted small">Your own weights for a registry architecture: .safetensors, or a weights-only .pt. A pickle that would run code is refused.</p>
      <TextRow prefix="up" field="name" f={f} label="Name" />
      <FieldRow field="up-registry_name" label="Architecture" error={f.shown("registry_name")} hint="the model the weights were trained as">
        <ArchSelect id="up-registry_name" registry={registry} value={f.values.registry_name} onChange={(v) => f.set("registry_name", v)} onBlur={f.blur("registry_name")} error={f.shown("registry_name")} hint />
      </FieldRow>
      <FieldRow field="up-file" label="Checkpoint file" error={f.shown("file")} hint=".safetensors, .pt or .pth">
        <input key={fileInput} id="f-up-file" type="file" accept=".safetensors,.pt,.pth" onChange={(e) => f.set("file", e.target.files?.[0] ?? null)} onBlur={f.blur("file")} {...fieldAria("up-file", f.shown("file"), true)} />
      </FieldRow>
      {busy && sent && (
        <div className="upload-progress">
          <Progress label="Upload progress" done={sent.done} total={sent.total} />
          <p className="muted small" aria-live="polite">
            {uploaded ? "Uploaded; the server is checking the weights against the architecture…" : `Uploading ${bytesText(sent.done, sent.total)}`}
          </p>
        </div>
      )}
      <FormFoot serverForm={f.server.form} failed={failed} failedTitle="Upload failed" busy={busy} busyLabel="Uploading…" label="Upload and register">
        {done && !busy && <ModelDone model={done} />}
      </FormFoot>
    </form>
  );
}

// ---------------------------------------------------------------- an image folder

const FOLDER_FIELDS: RegField[] = ["name", "source", "limit"];

function FolderSetForm() {
  const f = useFields<FolderForm>({ name: "", source: "", limit: "" }, validateFolder);
  const create = useRegisterImageSet();
  const submit = f.onSubmit((v) => create.mutate(folderBody(v), { onError: (err) => f.refused(err, FOLDER_FIELDS), onSuccess: () => f.reset() }));
  const other = unlessOnFields(create.error);
  const started = create.data as RegisteredSet | undefined;
  return (
    <form className="panel form" aria-label="Register an image folder" noValidate onSubmit={submit}>
      <h2>An image folder</h2>
      <p className="muted small">
        A folder of class subfolders (<span className="mono">root/&lt;class&gt;/&lt;image&gt;</span>) under one of the server's allowed roots
        (<span className="mono">FVAUDIT_ALLOWED_ROOTS</span>). Every image gets a stable id; unreadable files and links leaving the roots are skipped
        with the reason.
      </p>
      <TextRow prefix="fs" field="name" f={f} label="Name" />
      <TextRow
        prefix="fs" field="source" f={f} label="Folder on the server" className="mono" placeholder="/data/pets"
        hint="an absolute path; the server says which roots are allowed if it is outside them"
      />
      <TextRow prefix="fs" field="limit" f={f} label="Limit (optional)" className="short" numeric hint="keep N images: a seeded sample stratified by class (the same N images each time), not the first N" />
      <FormFoot serverForm={f.server.form} failed={other} failedTitle="Registration failed" busy={create.isPending} busyLabel="Checking the folder…" label="Register folder">
        {started && <FolderProgress started={started} />}
      </FormFoot>
    </form>
  );
}

/** A folder being indexed by its job: the job's live progress, then the set as registered. */
function FolderProgress({ started }: { started: RegisteredSet }) {
  const jobId = started.job?.id ?? (started.status === "indexing" ? started.job_id ?? 0 : 0);
  const stream = useJobEvents(jobId, jobId > 0);
  const polled = useJob(jobId, { poll: !stream.connected });
  const job = stream.job ?? polled.data ?? started.job ?? null;
  const ended = !jobId || (job != null && isTerminal(job.status));
  const set = useImageSet(started.id, ended);
  const qc = useQueryClient();
  const final = (set.data as RegisteredSet | undefined) ?? (jobId ? undefined : started);
  const p = (stream.progress ?? job?.progress ?? {}) as { stage?: string; done?: number; total?: number | null };
  const ready = final?.status === "ready" || (final != null && final.status == null);
  useEffect(() => {
    if (ready) void qc.invalidateQueries({ queryKey: ["image-sets"] }); // the launch form's set lists
  }, [ready, qc]);
  if (final && final.status !== "indexing") {
    if (final.status === "failed")
      return <ErrorBox title={`Image set ${final.name} was not registered`} error={new Error(final.error ?? job?.error ?? "the registration job failed")} />;
    const skipped = final.skipped ?? [];
    return (
      <div className="banner ok" role="status">
        Registered image set #{final.id} <strong>{final.name}</strong>: {final.size.toLocaleString("en")} images in {final.classes.length} classes
        {final.classes.length ? ` (${final.classes.slice(0, 6).join(", ")}${final.classes.length > 6 ? ", …" : ""})` : ""}
        {skipped.length ? `; ${skipped.length} file${skipped.length === 1 ? "" : "s"} skipped` : ""}. <Link to="/launch">Audit with it…</Link>
        {skipped.length > 0 && (
          <details>
            <summary>Skipped files</summary>
            <ul className="small">
              {skipped.slice(0, 20).map((s, i) => (
                <li key={`${s.path}-${i}`}>
                  <span className="mono">{s.path?.split("/").pop()}</span>: {s.reason}
                </li>
              ))}
            </ul>
          </details>
        )}
      </div>
    );
  }
  if (job?.status === "failed" || job?.status === "cancelled")
    return <ErrorBox title={`Image set ${started.name} was not registered`} error={new Error(job.error ?? `the registration job was ${job.status}`)} />;
  return (
    <div className="upload-progress" aria-label="Indexing progress">
      <p className="small">
        Indexing <strong>{started.name}</strong> (job <Link to={`/jobs/${jobId}`}>{jobId}</Link>) <StatusBadge status={job?.status ?? "queued"} />{" "}
        <span aria-live="polite">
          {p.stage ?? "waiting for a worker"}
          {p.total ? ` · ${(p.done ?? 0).toLocaleString("en")} / ${p.total.toLocaleString("en")} files` : ""}
        </span>
      </p>
      <Progress label="Indexing progress" done={p.done ?? 0} total={p.total ?? null} />
    </div>
  );
}
