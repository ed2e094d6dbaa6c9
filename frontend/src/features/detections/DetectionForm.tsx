// "Check a model" (SPEC §6): the form that launches a `detect` job. The suspect is a
// registered model or an attack job's weights on one; an optional reference (the model it
// claims to derive from); a population of clean models to calibrate against, chosen from
// the registered models and the attack jobs' results of the same architecture; an image
// set, layers, k. Numbers default to the job-kind registry's (`GET /job-kinds`); an empty
// field is left out so the server applies its own. The server's 422 lands on the field
// its `detail[].loc` names.
import { useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { Link, useNavigate } from "react-router";
import { type ImageSetOut, type Job, type ModelOut, type ValidationItem } from "../../api/client";
import { type LaunchBody, useAllModels, useAttackJobs, useCreateJob, useJobKinds, useLayers, useUsableImageSets, useUsableModels } from "../../api/queries";
import { fieldAria, FieldError, FieldRow, FormProblems, ImageSetSelect, listsGate, sendForm, SubmitForm, unlessOnFields } from "../../components/FormField";
import { defaultLayer, LayerField } from "../../components/LayerPicker";
import { Empty } from "../../components/States";
import { jobTitle, kindOf } from "../../lib/chain";
import { attackLabel } from "../../lib/format";
import { detectionPath } from "./DetectionShared";

export type WeightsState = "selected" | "final";

/** A model taking part: its id and "" (its own weights) or "<attack job id>:<state>". */
export type RefForm = { model_id: string; weights: string };

export type DetectForm = {
  name: string;
  suspect: RefForm;
  useReference: boolean;
  reference: RefForm;
  /** "m:<model id>" (a model's own weights) or "a:<attack job id>" (that job's weights, in `populationState`) */
  population: string[];
  populationState: WeightsState;
  image_set_id: string;
  layers: string[];
  k: string;
  k_clip: string;
  embedder: string;
  batch_size: string;
  unit: string;
  suspicious_p: string;
  manipulated_p: string;
};

export type DetectField =
  | "name" | "suspect" | "reference" | "population" | "image_set_id" | "layers" | "k" | "k_clip" | "embedder" | "batch_size"
  | "unit" | "suspicious_p" | "manipulated_p" | "thresholds";

export type DetectErrors = Partial<Record<DetectField, string>>;

const FIELD_ORDER: DetectField[] = [
  "name", "suspect", "reference", "population", "image_set_id", "layers", "k", "k_clip", "embedder", "batch_size", "unit",
  "suspicious_p", "manipulated_p", "thresholds",
];
const ADVANCED: DetectField[] = ["embedder", "batch_size", "unit", "suspicious_p", "manipulated_p", "thresholds"];
const THRESHOLDS = ["unit", "suspicious_p", "manipulated_p"] as const;

type TextField = "k" | "k_clip" | "embedder" | "batch_size" | "unit" | "suspicious_p" | "manipulated_p";
/** The fields typed as text, in the order shown: the first two in the form, the rest under "Advanced". */
const TEXT_FIELDS: { field: TextField; label: string; hint?: string; mode?: "numeric" | "decimal" }[] = [
  { field: "k", label: "k", hint: "top-k images per unit", mode: "numeric" },
  { field: "k_clip", label: "k for CLIP-δ", hint: "top-k images embedded (≤ k)", mode: "numeric" },
  { field: "embedder", label: "embedder", hint: "auto | none | efficientnet-lite0 | open_clip:<model>:<tag>" },
  { field: "batch_size", label: "batch size", mode: "numeric" },
  { field: "unit", label: "unit threshold", hint: "a unit is flagged above this suspicion", mode: "decimal" },
  { field: "suspicious_p", label: "'suspicious' below p", mode: "decimal" },
  { field: "manipulated_p", label: "'manipulated' below p", mode: "decimal" },
];

export const EMPTY_FORM: DetectForm = {
  name: "", suspect: { model_id: "", weights: "" }, useReference: false, reference: { model_id: "", weights: "" },
  population: [], populationState: "final", image_set_id: "", layers: [], k: "", k_clip: "", embedder: "", batch_size: "",
  unit: "", suspicious_p: "", manipulated_p: "",
};

const str = (v: unknown): string => (typeof v === "number" || typeof v === "string" ? String(v) : "");

/** The registry's defaults of the detect kind (k, k_clip, embedder, batch size, thresholds) as form strings. */
export function detectDefaults(defaults: Record<string, unknown> | undefined): Partial<DetectForm> {
  const d = defaults ?? {};
  const th = (d.thresholds && typeof d.thresholds === "object" ? d.thresholds : {}) as Record<string, unknown>;
  return {
    k: str(d.k), k_clip: str(d.k_clip), embedder: str(d.embedder), batch_size: str(d.batch_size),
    unit: str(th.unit), suspicious_p: str(th.suspicious_p), manipulated_p: str(th.manipulated_p),
  };
}

const INT = /^\d+$/;
const isProb = (v: string) => v.trim() !== "" && Number.isFinite(Number(v)) && Number(v) > 0 && Number(v) < 1;

export function validateDetect(f: DetectForm): DetectErrors {
  const e: DetectErrors = {};
  if (!f.suspect.model_id) e.suspect = "Choose the model to check.";
  if (f.useReference && !f.reference.model_id) e.reference = "Choose the reference model, or untick “compare with a reference”.";
  const need = f.useReference ? 1 : 2;
  if (f.population.length < need)
    e.population = f.useReference
      ? "Choose at least 1 clean model to calibrate against (a benign fine-tune of the reference)."
      : "Without a reference, choose at least 2 clean models of the family (each is judged against the others to calibrate).";
  if (!f.image_set_id) e.image_set_id = "Choose an image set.";
  if (!f.layers.length) e.layers = "Choose at least one layer.";
  for (const key of ["k", "k_clip", "batch_size"] as const) {
    const v = f[key].trim();
    if (v && (!INT.test(v) || Number(v) < 1)) e[key] = "A whole number, 1 or more.";
  }
  if (!e.k && !e.k_clip && INT.test(f.k.trim()) && INT.test(f.k_clip.trim()) && Number(f.k_clip) > Number(f.k))
    e.k_clip = `k for CLIP-δ (${f.k_clip}) must not exceed k (${f.k}).`;
  for (const key of THRESHOLDS) if (f[key].trim() && !isProb(f[key])) e[key] = "A number between 0 and 1.";
  if (!e.suspicious_p && !e.manipulated_p && isProb(f.suspicious_p) && isProb(f.manipulated_p) && Number(f.manipulated_p) > Number(f.suspicious_p))
    e.manipulated_p = "Must not exceed the 'suspicious' p-value.";
  return e;
}

function modelRef(r: RefForm): Record<string, unknown> {
  const out: Record<string, unknown> = { model_id: Number(r.model_id) };
  if (r.weights) {
    const [job, state] = r.weights.split(":");
    out.weights_from = { job_id: Number(job), state };
  }
  return out;
}

/** The POST /jobs body of a form (validated first): empty optional fields are left to the server. */
export function buildDetectRequest(f: DetectForm, attackModel: (jobId: number) => number | undefined): LaunchBody {
  const population = f.population.map((key) => {
    const [kind, id] = key.split(":");
    if (kind === "m") return { model_id: Number(id) };
    return { model_id: attackModel(Number(id)) ?? 0, weights_from: { job_id: Number(id), state: f.populationState } };
  });
  const spec: Record<string, unknown> = {
    suspect: modelRef(f.suspect),
    reference: f.useReference ? modelRef(f.reference) : null,
    population,
    image_set_id: Number(f.image_set_id),
    layers: f.layers,
  };
  if (f.name.trim()) spec.name = f.name.trim();
  for (const key of ["k", "k_clip", "batch_size"] as const) if (f[key].trim()) spec[key] = Number(f[key]);
  if (f.embedder.trim()) spec.embedder = f.embedder.trim();
  const th = Object.fromEntries(THRESHOLDS.filter((k) => f[k].trim()).map((k) => [k, Number(f[k])]));
  if (Object.keys(th).length) spec.thresholds = th;
  return { kind: "detect", spec };
}

const SPEC_FIELDS: Record<string, DetectField> = {
  name: "name", suspect: "suspect", reference: "reference", population: "population", image_set_id: "image_set_id",
  layers: "layers", k: "k", k_clip: "k_clip", embedder: "embedder", batch_size: "batch_size", thresholds: "thresholds",
};

/** The server's 422 items onto the form's fields (`["body", "spec", "population", 0, "model_id"]` → population). */
export function mapDetectErrors(items: ValidationItem[]): { fields: DetectErrors; form: string[] } {
  const fields: DetectErrors = {};
  const form: string[] = [];
  for (const it of items) {
    const loc = (it.loc ?? []).map(String);
    const at = loc.indexOf("spec");
    let rest = at < 0 ? [] : loc.slice(at + 1);
    // a union of job bodies may name the member it tried ("detect") before the field
    if (rest.length > 1 && !(rest[0] in SPEC_FIELDS)) rest = rest.slice(1);
    let field: DetectField | undefined = SPEC_FIELDS[rest[0]];
    if (field === "thresholds" && (THRESHOLDS as readonly string[]).includes(rest[1])) field = rest[1] as DetectField;
    let msg = it.msg.replace(/^Value error, /, "");
    if (field === "population" && /^\d+$/.test(rest[1] ?? "")) msg = `Population model ${Number(rest[1]) + 1}: ${msg}`;
    if (field === "layers" && /^\d+$/.test(rest[1] ?? "")) msg = `Layer ${Number(rest[1]) + 1}: ${msg}`;
    if (field) fields[field] = fields[field] ? `${fields[field]}; ${msg}` : msg;
    else form.push(loc.length ? `${loc.filter((p) => p !== "body").join(".")}: ${msg}` : msg);
  }
  return { fields, form };
}

/** Keys sorted at every depth: two prune records compare equal whatever their key order. */
function canon(v: unknown): string {
  if (v && typeof v === "object" && !Array.isArray(v))
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon((v as Record<string, unknown>)[k])}`).join(",")}}`;
  return JSON.stringify(v ?? null);
}

/** Models whose units compare one to one (same registry architecture, pruned the same way). */
export const archKey = (m: ModelOut) => `${m.registry_name}|${m.prune ? canon(m.prune) : ""}`;

const jobModel = (j: Job) => (typeof j.spec.model_id === "number" ? j.spec.model_id : undefined);
const attackKind = (j: Job) => ((j.spec.attack ?? {}) as { kind?: string }).kind;
export const attackText = (j: Job) => `job ${j.id}: ${jobTitle(j, attackLabel)}`;

function pickSet(sets: ImageSetOut[]): string {
  const s = sets.find((x) => /test|val/i.test(x.name + x.source)) ?? sets[0];
  return s ? String(s.id) : "";
}

export function DetectionForm({ initialSuspect }: { initialSuspect?: string | null }) {
  const navigate = useNavigate();
  // the choices: ready, unhidden models and usable image sets; every model (hidden ones too) names and
  // classifies the attack results, whose weights stay usable whatever their model's listing
  const models = useUsableModels();
  const allModels = useAllModels();
  const sets = useUsableImageSets();
  const kinds = useJobKinds();
  const attacks = useAttackJobs();
  const create = useCreateJob();
  const [form, setForm] = useState<DetectForm>(() => ({ ...EMPTY_FORM, suspect: { model_id: initialSuspect ?? "", weights: "" } }));
  const edited = useRef(new Set<keyof DetectForm>());
  const [submitted, setSubmitted] = useState(false);
  const [server, setServer] = useState<{ fields: DetectErrors; form: string[] }>({ fields: {}, form: [] });
  const formRef = useRef<HTMLFormElement>(null);
  const layers = useLayers(form.suspect.model_id ? Number(form.suspect.model_id) : null);

  useEffect(() => {
    const d = detectDefaults(kindOf(kinds.data, "detect")?.defaults);
    setForm((f) => ({ ...f, ...Object.fromEntries(Object.entries(d).filter(([k]) => !edited.current.has(k as keyof DetectForm))) }));
  }, [kinds.data]);
  useEffect(() => {
    if (models.data?.length && !models.data.some((m) => String(m.id) === form.suspect.model_id))
      setForm((f) => ({ ...f, suspect: { model_id: String(models.data![0].id), weights: "" } }));
  }, [models.data]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    if (sets.data?.length && !form.image_set_id) setForm((f) => ({ ...f, image_set_id: pickSet(sets.data!) }));
  }, [sets.data]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    if (!layers.data?.length) return;
    setForm((f) => {
      const known = f.layers.filter((n) => layers.data!.some((l) => l.name === n));
      return { ...f, layers: known.length ? known : [defaultLayer(layers.data!)].filter(Boolean) };
    });
  }, [layers.data]);

  const byId = useMemo(() => new Map([...(allModels.data ?? []), ...(models.data ?? [])].map((m) => [String(m.id), m])), [allModels.data, models.data]);
  const suspectModel = byId.get(form.suspect.model_id);
  const arch = suspectModel ? archKey(suspectModel) : null;
  const sameArch = (modelId: number | undefined) => {
    const m = modelId != null ? byId.get(String(modelId)) : undefined;
    return !!m && archKey(m) === arch;
  };
  const attackJobs = attacks.data ?? [];
  const attackModel = (jobId: number) => {
    const j = attackJobs.find((x) => x.id === jobId);
    return j ? jobModel(j) : undefined;
  };
  const errors = useMemo(() => validateDetect(form), [form]);
  const shown = (f: DetectField): string | undefined => server.fields[f] ?? (submitted ? errors[f] : undefined);

  const set = <K extends keyof DetectForm>(key: K, value: DetectForm[K], field: DetectField = key as DetectField) => {
    edited.current.add(key);
    setForm((f) => ({ ...f, [key]: value }));
    if (server.fields[field]) setServer((s) => ({ ...s, fields: { ...s.fields, [field]: undefined } }));
  };

  const focusFirst = (errs: DetectErrors) => {
    const first = FIELD_ORDER.find((f) => errs[f]);
    if (!first) return;
    if (ADVANCED.includes(first)) formRef.current?.querySelector("details")?.setAttribute("open", "");
    formRef.current?.querySelector<HTMLElement>(`#f-${first}`)?.focus();
  };

  const submit = () =>
    sendForm({ errors, focusFirst, setSubmitted, setServer, mapServer: mapDetectErrors,
               send: () => create.mutateAsync(buildDetectRequest(form, attackModel)),
               created: (id) => navigate(detectionPath(id)) });

  const gate = listsGate("Loading models and image sets", [models, sets]);
  if (gate) return gate;
  if (!models.data?.length || !sets.data?.length)
    return (
      <Empty>
        {!models.data?.length ? "No model is registered yet. " : "No image set is registered yet. "}
        <Link to="/register">Register {!models.data?.length ? "a model" : "an image set"}</Link> first.
      </Empty>
    );

  const candidates = models.data.filter((m) => archKey(m) === arch);
  const attackOptions = (modelId: string) => attackJobs.filter((j) => String(jobModel(j)) === modelId);
  // the population: models and attack results of the suspect's architecture, never the suspect itself;
  // benign fine-tunes (α = 0) first, the natural calibration set with a reference
  const popModels = candidates.filter((m) => !(String(m.id) === form.suspect.model_id && !form.suspect.weights));
  const popAttacks = attackJobs
    .filter((j) => sameArch(jobModel(j)) && !form.suspect.weights.startsWith(`${j.id}:`))
    .sort((a, b) => Number(attackKind(b) === "finetune") - Number(attackKind(a) === "finetune") || b.id - a.id);
  const togglePop = (key: string, on: boolean) =>
    set("population", on ? [...form.population, key] : form.population.filter((k) => k !== key));
  const submitError = unlessOnFields(create.error);
  const textRows = (fields: typeof TEXT_FIELDS) =>
    fields.map(({ field, label, hint, mode }) => (
      <FieldRow key={field} field={field} label={label} hint={hint} error={shown(field)}>
        <input
          id={`f-${field}`}
          inputMode={mode}
          value={form[field]}
          onChange={(e) => set(field, e.target.value)}
          placeholder={form[field] === "" ? "server default" : undefined}
          {...fieldAria(field, shown(field))}
        />
      </FieldRow>
    ));

  return (
    <SubmitForm formRef={formRef} label="Check a model" className="form detect-form" submit={submit}>
      {/* the suspect and its reference side by side in two columns of their own (issue 19, item 9: in the
          three-column field grid the selects, as wide as their longest option, ran under the next column) */}
      <div className="detect-models">
        <FieldRow field="suspect" label="Suspect model" hint="the model to check: a registered model, or an attack job's weights on it" error={shown("suspect")}>
          <ModelRefPicker
            field="suspect"
            models={models.data}
            value={form.suspect}
            attacks={attackOptions(form.suspect.model_id)}
            onChange={(v) => {
              set("suspect", v);
              // another architecture: the chosen population no longer compares unit by unit
              const other = byId.get(v.model_id);
              if (!other || archKey(other) !== arch) setForm((f) => ({ ...f, suspect: v, population: [], reference: { model_id: "", weights: "" }, useReference: false }));
            }}
            error={shown("suspect")}
          />
        </FieldRow>
        <div className={`field${shown("reference") ? " invalid" : ""}`}>
          <label className="check" htmlFor="f-useReference">
            <input
              id="f-useReference"
              type="checkbox"
              checked={form.useReference}
              onChange={(e) => {
                const on = e.target.checked;
                set("useReference", on, "reference");
                // the usual reference: the model the suspect's attack weights came from, as registered
                if (on && !form.reference.model_id) setForm((f) => ({ ...f, useReference: on, reference: { model_id: f.suspect.model_id, weights: "" } }));
              }}
            />{" "}
            Compare with a reference
          </label>
          {form.useReference ? (
            <>
              <ModelRefPicker
                field="reference"
                models={candidates}
                value={form.reference}
                attacks={attackOptions(form.reference.model_id)}
                onChange={(v) => set("reference", v)}
                error={shown("reference")}
              />
              {!shown("reference") && <p className="hint muted small">the model the suspect claims to derive from: every unit is compared with its own</p>}
            </>
          ) : (
            <p className="hint muted small">
              Without a reference the suspect is judged against the population alone (its units' class shares).
            </p>
          )}
          <FieldError field="reference" msg={shown("reference")} />
        </div>
      </div>
      <div className="grid-form">
        <FieldRow field="name" label="Name" hint="optional; default: detection <id>" error={shown("name")}>
          <input id="f-name" value={form.name} onChange={(e) => set("name", e.target.value)} placeholder="e.g. check the vendor's checkpoint" {...fieldAria("name", shown("name"))} />
        </FieldRow>
        <FieldRow field="image_set_id" label="Image set" hint="labelled images whose top-k are compared (e.g. the validation set)" error={shown("image_set_id")}>
          <ImageSetSelect id="image_set_id" sets={sets.data} value={form.image_set_id} onChange={(v) => set("image_set_id", v)} error={shown("image_set_id")} />
        </FieldRow>
      </div>

      <fieldset className={`population${shown("population") ? " invalid" : ""}`} id="f-population" tabIndex={-1} aria-invalid={!!shown("population") || undefined} aria-describedby={shown("population") ? "e-population" : "h-population"}>
        <legend>Population: clean models to calibrate against ({form.population.length} chosen)</legend>
        <p className="hint muted small" id="h-population">
          {form.useReference
            ? "With a reference: benign fine-tunes of the reference (fine-tune baseline, α = 0, other seeds); at least 1. They show how far an honest fine-tune moves each unit; the suspect is judged against that."
            : "Without a reference: at least 2 clean models of the same family (other seeds, other checkpoints). The suspect's class shares are judged against theirs."}
        </p>
        {popModels.length + popAttacks.length === 0 ? (
          <p className="muted">No other model or attack result of this architecture. Register one, or run a fine-tune baseline on the reference.</p>
        ) : (
          <div className="population-list">
            {popModels.length > 0 && (
              <div role="group" aria-label="Registered models">
                <p className="muted small group-title">registered models (their own weights)</p>
                {popModels.map((m) => (
                  <PopCheck key={m.id} value={`m:${m.id}`} chosen={form.population} onToggle={togglePop}>
                    {m.name} <span className="muted small">model {m.id}</span>
                  </PopCheck>
                ))}
              </div>
            )}
            {popAttacks.length > 0 && (
              <div role="group" aria-label="Attack results">
                <p className="muted small group-title">
                  attack results, in their{" "}
                  <select aria-label="Weights of the attack results" value={form.populationState} onChange={(e) => set("populationState", e.target.value as WeightsState, "population")}>
                    <option value="final">final state</option>
                    <option value="selected">selected state</option>
                  </select>
                </p>
                {popAttacks.map((j) => (
                  <PopCheck key={j.id} value={`a:${j.id}`} chosen={form.population} onToggle={togglePop}>
                    {attackText(j)} <span className="muted small">· {byId.get(String(jobModel(j)))?.name ?? `model ${jobModel(j)}`}</span>
                    {attackKind(j) === "finetune" && <span className="badge"> benign fine-tune</span>}
                  </PopCheck>
                ))}
              </div>
            )}
          </div>
        )}
        <FieldError field="population" msg={shown("population")} />
      </fieldset>

      <LayerField layers={layers} value={form.layers} onChange={(v) => set("layers", v)} error={shown("layers")} />

      <div className="grid-form narrow">{textRows(TEXT_FIELDS.slice(0, 2))}</div>

      <details className="advanced" open={ADVANCED.some((f) => !!shown(f))}>
        <summary>Advanced: embedder, batch size, verdict thresholds</summary>
        <div className="grid-form narrow">{textRows(TEXT_FIELDS.slice(2))}</div>
        <FieldError field="thresholds" msg={shown("thresholds")} />
      </details>

      <FormProblems what="detection" refused={server.form} error={submitError} invalid={submitted ? Object.keys(errors).length : 0} />
      <div className="row end">
        <button type="submit" className="primary" disabled={create.isPending}>
          {create.isPending ? "Launching…" : "Check the model"}
        </button>
      </div>
    </SubmitForm>
  );
}

/** A model and whose weights: its own, or an attack job's selected / final state on it. */
function ModelRefPicker({ field, models, value, attacks, onChange, error }: {
  field: "suspect" | "reference";
  models: ModelOut[];
  value: RefForm;
  attacks: Job[];
  onChange: (v: RefForm) => void;
  error?: string;
}) {
  return (
    <div className="row wrap model-ref">
      <select id={`f-${field}`} aria-label={`${field === "suspect" ? "Suspect" : "Reference"} model`} value={value.model_id} onChange={(e) => onChange({ model_id: e.target.value, weights: "" })} {...fieldAria(field, error)}>
        <option value="" disabled>
          choose a model
        </option>
        {models.map((m) => (
          <option key={m.id} value={m.id}>
            {m.name} ({m.registry_name})
          </option>
        ))}
      </select>
      <select aria-label={`${field === "suspect" ? "Suspect" : "Reference"} weights`} value={value.weights} onChange={(e) => onChange({ ...value, weights: e.target.value })} disabled={!value.model_id}>
        <option value="">its own weights</option>
        {attacks.flatMap((j) =>
          (["final", "selected"] as const).map((s) => (
            <option key={`${j.id}:${s}`} value={`${j.id}:${s}`}>
              {attackText(j)} · {s === "final" ? "final state" : "selected state (within the accuracy budget)"}
            </option>
          )),
        )}
      </select>
    </div>
  );
}

function PopCheck({ value, chosen, onToggle, children }: { value: string; chosen: string[]; onToggle: (key: string, on: boolean) => void; children: ReactNode }) {
  const on = chosen.includes(value);
  return (
    <label className={`check pop-check${on ? " on" : ""}`}>
      <input type="checkbox" name="population" value={value} checked={on} onChange={(e) => onToggle(value, e.target.checked)} />
      <span className="pop-text">{children}</span>
    </label>
  );
}
