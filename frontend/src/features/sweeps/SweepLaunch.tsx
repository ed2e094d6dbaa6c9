// /sweeps/new: launch a pruning sweep (thesis Chapter 4; the `sweep` job kind). The form
// names a model, the image sets and the attack every point runs, the pruning methods and
// rates that make the grid (each combination a point: prune, fine-tune, then audit), and
// shows how many points and audits that is before it is sent. Numbers default to the
// registry's (`GET /job-kinds`: the kind's defaults and schema); the server's 422 lands on
// the field it names, a grid value on its axis' field.
import { useEffect, useMemo, useRef, useState } from "react";
import { Link, useNavigate } from "react-router";
import { useCreateJob, useJobKinds, useLayers, useUsableImageSets, useUsableModels } from "../../api/queries";
import { defaultSet, fieldAria, FieldError, FieldRow, FormProblems, ImageSetSelect, KindsUnread, listsGate, sendForm, SubmitForm, unlessOnFields } from "../../components/FormField";
import { defaultLayer, LayerField } from "../../components/LayerPicker";
import { PageHead } from "../../components/PageHead";
import { Empty } from "../../components/States";
import { kindOf } from "../../lib/chain";
import { usePageTitle } from "../../lib/title";
import {
  baselineOf, buildSweepRequest, gridOf, mapSweepErrors, METHOD_TEXT, pointCount, pruneMethods, SWEEP_BLANK, SWEEP_FIELD_ORDER, sweepDefaults,
  sweepAttacks, validateSweep, type SweepAttack, type SweepErrors, type SweepField, type SweepForm,
} from "./sweep";

/** How the form names the attacks it knows; which it offers is the registry's (`sweepAttacks`). */
const ATTACK_TEXT: Record<string, string> = { push_down: "push-down", push_up: "push-up (decoy)" };

type TextKey = "ft_steps" | "ft_lr" | "ft_batch_size" | "ft_train_limit" | "k" | "steps" | "lr" | "batch_size" | "eval_every" | "eval_size" | "acc_budget_pp" | "k_clip" | "embedder" | "scan_batch_size";

const ATTACK_ROWS: { field: TextKey; label: string; hint?: string; mode?: "numeric" | "decimal" }[] = [
  { field: "k", label: "k", hint: "top-k pushed (thesis: 10)", mode: "numeric" },
  { field: "steps", label: "attack steps", mode: "numeric" },
  { field: "lr", label: "learning rate", hint: "Adam", mode: "decimal" },
  { field: "batch_size", label: "batch size", mode: "numeric" },
  { field: "eval_every", label: "evaluate every", hint: "steps between accuracy checks", mode: "numeric" },
  { field: "eval_size", label: "evaluation subset", hint: "validation images the α controller reads (0 = all)", mode: "numeric" },
  { field: "acc_budget_pp", label: "accuracy budget (pp)", mode: "decimal" },
];
const FINETUNE_ROWS: typeof ATTACK_ROWS = [
  { field: "ft_steps", label: "fine-tune steps", hint: "after pruning, two phases (0 = none)", mode: "numeric" },
  { field: "ft_lr", label: "fine-tune learning rate", mode: "decimal" },
  { field: "ft_batch_size", label: "fine-tune batch size", mode: "numeric" },
  { field: "ft_train_limit", label: "fine-tune images", hint: "the first N training images (empty = all)", mode: "numeric" },
];
const ADVANCED_ROWS: typeof ATTACK_ROWS = [
  { field: "k_clip", label: "k for CLIP-δ", mode: "numeric" },
  { field: "embedder", label: "embedder", hint: "auto | none | efficientnet-lite0 | open_clip:<model>:<tag>" },
  { field: "scan_batch_size", label: "scan batch size", mode: "numeric" },
];
const ADVANCED: SweepField[] = ["k_clip", "embedder", "scan_batch_size", "control", "visualize"];

export function SweepLaunch() {
  usePageTitle("Launch a sweep");
  const navigate = useNavigate();
  const models = useUsableModels();
  const sets = useUsableImageSets();
  const kinds = useJobKinds();
  const create = useCreateJob();
  const kind = kindOf(kinds.data, "sweep");
  const methods = useMemo(() => pruneMethods(kind), [kind]);
  const [form, setForm] = useState<SweepForm>(SWEEP_BLANK);
  const edited = useRef(new Set<keyof SweepForm>());
  const [submitted, setSubmitted] = useState(false);
  const [server, setServer] = useState<{ fields: SweepErrors; form: string[] }>({ fields: {}, form: [] });
  // the grid as last sent: a 422 on `grid.i.values.j` is read against it
  const sentGrid = useRef<ReturnType<typeof gridOf>>([]);
  const formRef = useRef<HTMLFormElement>(null);
  const layers = useLayers(form.model_id ? Number(form.model_id) : null);

  useEffect(() => {
    if (!kind) return;
    const d = sweepDefaults(kind);
    setForm((f) => ({ ...f, ...Object.fromEntries(Object.entries(d).filter(([k]) => !edited.current.has(k as keyof SweepForm))) }));
  }, [kind]);
  useEffect(() => {
    if (models.data?.length && !models.data.some((m) => String(m.id) === form.model_id))
      setForm((f) => ({ ...f, model_id: String(models.data![0].id), layers: [] }));
  }, [models.data]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    if (sets.data?.length && !form.train_set_id) {
      const train = defaultSet(sets.data, "train");
      setForm((f) => ({ ...f, train_set_id: train, val_set_id: f.val_set_id || defaultSet(sets.data!, "test", train) }));
    }
  }, [sets.data]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    if (!layers.data?.length) return;
    setForm((f) => {
      const known = f.layers.filter((n) => layers.data!.some((l) => l.name === n));
      return { ...f, layers: known.length ? known : [defaultLayer(layers.data!)].filter(Boolean) };
    });
  }, [layers.data]);

  const errors = useMemo(() => validateSweep(form, kind), [form, kind]);
  const shown = (f: SweepField): string | undefined => server.fields[f] ?? (submitted ? errors[f] : undefined);
  const set = <K extends keyof SweepForm>(key: K, value: SweepForm[K], field: SweepField = key as SweepField) => {
    edited.current.add(key);
    setForm((f) => ({ ...f, [key]: value }));
    if (server.fields[field]) setServer((s) => ({ ...s, fields: { ...s.fields, [field]: undefined } }));
  };
  const focusFirst = (errs: SweepErrors) => {
    const first = SWEEP_FIELD_ORDER.find((f) => errs[f]);
    if (!first) return;
    if (ADVANCED.includes(first)) formRef.current?.querySelector("details.advanced")?.setAttribute("open", "");
    formRef.current?.querySelector<HTMLElement>(`#f-${first}`)?.focus();
  };
  const submit = () =>
    sendForm({
      errors, focusFirst, setSubmitted, setServer,
      mapServer: (items) => mapSweepErrors(items, sentGrid.current),
      send: () => {
        const body = buildSweepRequest(form);
        sentGrid.current = (body.spec.grid as ReturnType<typeof gridOf>) ?? [];
        return create.mutateAsync(body);
      },
      created: (id) => navigate(`/sweeps/${id}`),
    });

  const gate = listsGate("Loading models, image sets and job kinds", [models, sets], [kinds]);
  if (gate) return gate;
  if (!models.data?.length || !sets.data?.length)
    return (
      <Empty>
        {!models.data?.length ? "No ready model is registered. " : "No ready image set is registered. "}
        <Link to="/register">Register {!models.data?.length ? "a model" : "an image folder"}</Link>, or the demo's with <code>fvaudit setup-demo</code>.
      </Empty>
    );

  const train = sets.data.find((s) => String(s.id) === form.train_set_id);
  const points = pointCount(form);
  const audits = points * form.attacks.length * (form.control ? 2 : 1);
  const submitError = unlessOnFields(create.error);
  const textRow = ({ field, label, hint, mode }: (typeof ATTACK_ROWS)[number]) => (
    <FieldRow key={field} field={field} label={label} hint={hint} error={shown(field)}>
      <input id={`f-${field}`} inputMode={mode} value={form[field]} onChange={(e) => set(field, e.target.value)} placeholder={form[field] === "" ? "server default" : undefined} {...fieldAria(field, shown(field))} />
    </FieldRow>
  );
  const toggleIn = <T extends string>(list: T[], v: T, on: boolean): T[] => (on ? [...list.filter((x) => x !== v), v] : list.filter((x) => x !== v));

  return (
    <div className="page sweep-launch">
      <PageHead
        title="Launch a sweep"
        crumbs={<><Link to="/sweeps">Sweeps</Link> / new</>}
      >
        A grid over pruning methods and rates (thesis Chapter 4): each point prunes the model, fine-tunes it, then runs the
        chosen attacks on it, each a full audit. The unpruned model is the baseline point.
      </PageHead>
      <KindsUnread error={kinds.error} />
      <SubmitForm formRef={formRef} label="Launch a sweep" className="panel form sweep-form" submit={submit}>
        <div className="grid-form">
          <FieldRow field="name" label="Sweep name" hint="optional" error={shown("name")}>
            <input id="f-name" value={form.name} onChange={(e) => set("name", e.target.value)} placeholder="e.g. norm vs vulnerability" {...fieldAria("name", shown("name"))} />
          </FieldRow>
          <FieldRow field="model_id" label="Model" hint="ready models only" error={shown("model_id")}>
            <select id="f-model_id" value={form.model_id} onChange={(e) => setForm((f) => ({ ...f, model_id: e.target.value, layers: [] }))} {...fieldAria("model_id", shown("model_id"))}>
              {models.data.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.name} ({m.registry_name})
                </option>
              ))}
            </select>
          </FieldRow>
          <FieldRow field="train_set_id" label="Training set" hint="fine-tuning, top-k to attack, decoys" error={shown("train_set_id")}>
            <ImageSetSelect id="train_set_id" sets={sets.data} value={form.train_set_id} onChange={(v) => set("train_set_id", v)} error={shown("train_set_id")} />
          </FieldRow>
          <FieldRow field="val_set_id" label="Validation set" hint="the metrics and accuracy" error={shown("val_set_id")}>
            <ImageSetSelect id="val_set_id" sets={sets.data} value={form.val_set_id} onChange={(v) => set("val_set_id", v)} error={shown("val_set_id")} />
          </FieldRow>
        </div>

        <LayerField layers={layers} value={form.layers} onChange={(v) => set("layers", v)} error={shown("layers")}>
          {form.layers.length > 1 && (
            <label className="check sweep-per-layer">
              <input type="checkbox" checked={form.perLayer} onChange={(e) => set("perLayer", e.target.checked, "layers")} /> one point per layer (a grid
              axis), instead of attacking all {form.layers.length} layers at once
            </label>
          )}
        </LayerField>

        <fieldset className="sweep-attacks" id="f-attacks" tabIndex={-1} aria-invalid={!!shown("attacks") || undefined}>
          <legend>Attacks at every point</legend>
          <div className="row wrap">
            {sweepAttacks(kind).map((a) => (
              <label key={a} className="check">
                <input type="checkbox" name="attacks" value={a} checked={form.attacks.includes(a)} onChange={(e) => set("attacks", toggleIn(form.attacks, a, e.target.checked).sort() as SweepAttack[])} />{" "}
                {ATTACK_TEXT[a] ?? a}
              </label>
            ))}
          </div>
          <FieldError field="attacks" msg={shown("attacks")} />
          {form.attacks.includes("push_up") && (
            <div className={`field sweep-decoy${shown("decoy_class") ? " invalid" : ""}`}>
              <label htmlFor="f-decoy_class">Decoy class{train ? ` (of ${train.name})` : ""}</label>
              <select id="f-decoy_class" value={form.decoy_class} onChange={(e) => set("decoy_class", e.target.value)} {...fieldAria("decoy_class", shown("decoy_class"))}>
                <option value="" disabled>
                  choose a class
                </option>
                {(train?.classes ?? []).map((c, i) => (
                  <option key={i} value={i}>
                    {i}: {c}
                  </option>
                ))}
              </select>
              <FieldError field="decoy_class" msg={shown("decoy_class")} />
            </div>
          )}
        </fieldset>

        <fieldset className="sweep-grid">
          <legend>Pruning grid</legend>
          <label className="check">
            <input type="checkbox" checked={form.prune} onChange={(e) => set("prune", e.target.checked, "methods")} /> prune each point (off: audit the model as it
            is{form.perLayer ? ", one point per layer" : ""})
          </label>
          {form.prune && (
            <>
              <div className={`field${shown("methods") ? " invalid" : ""}`}>
                <div className="sweep-methods" role="group" aria-label="Pruning methods" id="f-methods" tabIndex={-1} aria-invalid={!!shown("methods") || undefined}>
                  {methods.map((m) => (
                    <label key={m} className="check">
                      <input type="checkbox" name="methods" value={m} checked={form.methods.includes(m)} onChange={(e) => set("methods", methods.filter((x) => (x === m ? e.target.checked : form.methods.includes(x))))} />{" "}
                      {METHOD_TEXT[m] ?? m}
                    </label>
                  ))}
                  {methods.length === 0 && <p className="muted small">The server did not list its pruning methods.</p>}
                </div>
                <FieldError field="methods" msg={shown("methods")} />
              </div>
              <div className="grid-form narrow">
                <FieldRow field="rates" label="rates" hint="fractions in (0, 1), e.g. 0.25, 0.5; by method: weights zeroed, group sparsity, or channels removed" error={shown("rates")}>
                  <input id="f-rates" value={form.rates} onChange={(e) => set("rates", e.target.value)} placeholder="0.25, 0.5" {...fieldAria("rates", shown("rates"))} />
                </FieldRow>
                {FINETUNE_ROWS.map(textRow)}
              </div>
              <label className="check">
                <input id="f-baseline" type="checkbox" checked={form.baseline} onChange={(e) => set("baseline", e.target.checked)} /> the unpruned model as point 0 (the
                curves' rate 0; vulnerability pruning ranks channels by its push-down)
              </label>
              <FieldError field="baseline" msg={shown("baseline")} />
            </>
          )}
          <p className="sweep-count" aria-live="polite" id="f-points" tabIndex={-1}>
            <strong>
              {points} point{points === 1 ? "" : "s"}
            </strong>{" "}
            · {audits} audit{audits === 1 ? "" : "s"}
            {baselineOf(form) ? " (the baseline included)" : ""}
          </p>
          <FieldError field="points" msg={shown("points")} />
        </fieldset>

        <fieldset className="sweep-attack-settings">
          <legend>Attack settings (every audit)</legend>
          <div className="grid-form narrow">{ATTACK_ROWS.map(textRow)}</div>
        </fieldset>

        <details className="advanced" open={ADVANCED.some((f) => !!shown(f))}>
          <summary>Advanced: CLIP, scans, control, visualization</summary>
          <div className="grid-form narrow">{ADVANCED_ROWS.map(textRow)}</div>
          <label className="check">
            <input id="f-control" type="checkbox" checked={form.control} onChange={(e) => set("control", e.target.checked)} /> an α = 0 control per audit (doubles the
            attacks)
          </label>
          <FieldError field="control" msg={shown("control")} />
          <label className="check">
            <input id="f-visualize" type="checkbox" checked={form.visualize} onChange={(e) => set("visualize", e.target.checked)} /> synthetic visualizations per audit
          </label>
          <FieldError field="visualize" msg={shown("visualize")} />
        </details>

        <FormProblems what="sweep" refused={server.form} error={submitError} invalid={submitted ? Object.keys(errors).length : 0} />
        <div className="row end">
          <Link to="/sweeps" className="button">
            Cancel
          </Link>
          <button type="submit" className="primary" disabled={create.isPending}>
            {create.isPending ? "Launching…" : `Launch the sweep (${points} point${points === 1 ? "" : "s"})`}
          </button>
        </div>
      </SubmitForm>
    </div>
  );
}
