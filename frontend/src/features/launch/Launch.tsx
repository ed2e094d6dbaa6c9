import { useEffect, useMemo, useRef, useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { type ImageSetOut, type LayerOut } from "../../api/client";
import { useCreateJob, useJobKinds, useLayers, useUsableImageSets, useUsableModels } from "../../api/queries";
import { DecoyClassPicker, DecoyImagePicker } from "./DecoyPicker";
import { fieldAria, FieldError, FieldRow, FormProblems, ImageSetSelect, sendForm, unlessOnFields } from "../../components/FormField";
import { LayerField } from "../../components/LayerPicker";
import { PageHead } from "../../components/PageHead";
import { Empty, ErrorBox, Loading } from "../../components/States";
import { kindOf } from "../../lib/chain";
import { BLANK, buildRequest, formDefaults, launchKinds, mapServerErrors, unitsApply, validate, type Errors, type Field, type LaunchForm, type LaunchKind } from "./launch";
import { usePageTitle } from "../../lib/title";

/** How the form names the kinds it knows; which kinds it offers is the registry's (`launchKinds`). */
const KIND_TEXT: Record<string, { label: string; help: string }> = {
  push_down: { label: "Push-down", help: "push the unit's initial top-k out of its top-k" },
  push_up: { label: "Push-up (decoy)", help: "make decoy images out-activate the training set" },
  finetune: { label: "Fine-tune baseline", help: "α = 0: plain fine-tuning, the control" },
  scan: { label: "Scan only", help: "top-k of layers over the image sets, no attack" },
};
const kindText = (kind: LaunchKind) => KIND_TEXT[kind] ?? { label: kind, help: "" };

const FIELD_ORDER: Field[] = [
  "kind", "name", "model_id", "layers", "train_set_id", "val_set_id", "units", "decoy", "k", "alpha", "lr", "steps",
  "batch_size", "seed", "score_norm", "visualize", "n_synth", "synth_steps", "synth_objective", "control", "eval_every",
  "eval_size", "acc_budget_pp", "alpha_factor", "lr_schedule", "k_clip", "embedder",
];
const ADVANCED: Field[] = ["eval_every", "eval_size", "acc_budget_pp", "alpha_factor", "lr_schedule", "k_clip", "embedder"];

function pickLayer(layers: LayerOut[]): string {
  const labelled = layers.filter((l) => l.label);
  if (labelled.length) return labelled[labelled.length - 1].name;
  const conv = layers.filter((l) => l.kind === "conv");
  return (conv[conv.length - 1] ?? layers[0])?.name ?? "";
}

function pickSet(sets: ImageSetOut[], word: string, exclude?: string): string {
  const s = sets.find((x) => String(x.id) !== exclude && (x.name + x.source).toLowerCase().includes(word)) ?? sets.find((x) => String(x.id) !== exclude) ?? sets[0];
  return s ? String(s.id) : "";
}

/** ?layer=relu2&layer=relu3 or ?layer=relu2,relu3 */
function layersParam(params: URLSearchParams): string[] {
  return params.getAll("layer").flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
}

/** A layer named by its name or its label, on the model's list. */
function resolve(layers: LayerOut[], names: string[]): string[] {
  const out = names.map((n) => layers.find((l) => l.name === n || l.label === n)?.name).filter((n): n is string => !!n);
  return layers.filter((l) => out.includes(l.name)).map((l) => l.name);
}

export function LaunchPage() {
  usePageTitle("Launch an audit");
  const [params] = useSearchParams();
  // the model the address asked for (?model=): when the form cannot offer it, the page says so
  const requested = params.get("model");
  const navigate = useNavigate();
  // only what an audit can use: ready models (not a pruned model still pending) and indexed, non-empty sets; nothing hidden
  const models = useUsableModels();
  const sets = useUsableImageSets();
  const kinds = useJobKinds();
  const [form, setForm] = useState<LaunchForm>(() => ({
    ...BLANK,
    kind: params.get("kind") || BLANK.kind,
    model_id: params.get("model") ?? "",
    layers: layersParam(params),
  }));
  const layers = useLayers(form.model_id ? Number(form.model_id) : null);
  const create = useCreateJob();
  const [touched, setTouched] = useState<Set<Field>>(new Set());
  const edited = useRef<Set<keyof LaunchForm>>(new Set());
  const [submitted, setSubmitted] = useState(false);
  const [server, setServer] = useState<{ fields: Errors; form: string[] }>({ fields: {}, form: [] });
  const formRef = useRef<HTMLFormElement>(null);

  const offered = useMemo(() => launchKinds(kinds.data), [kinds.data]);
  // a ?kind= the registry does not offer: the form's own kind
  useEffect(() => {
    if (kinds.data && !offered.includes(form.kind)) setForm((f) => ({ ...f, kind: BLANK.kind }));
  }, [offered]); // eslint-disable-line react-hooks/exhaustive-deps
  // defaults once the lists arrive: the registry's numbers (never the user's edits), a model, its layer, two sets
  useEffect(() => {
    if (!kinds.data) return;
    const d = formDefaults(kinds.data, form.kind);
    setForm((f) => ({ ...f, ...Object.fromEntries(Object.entries(d).filter(([k]) => !edited.current.has(k as keyof LaunchForm))) }));
  }, [kinds.data, form.kind === "scan"]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    if (models.data?.length && !models.data.some((m) => String(m.id) === form.model_id))
      setForm((f) => ({ ...f, model_id: String(models.data![0].id), layers: [] }));
  }, [models.data]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    if (!layers.data?.length) return;
    setForm((f) => {
      const known = resolve(layers.data!, f.layers);
      return { ...f, layers: known.length ? known : [pickLayer(layers.data!)].filter(Boolean) };
    });
  }, [layers.data]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    if (sets.data?.length && !form.train_set_id) {
      const train = pickSet(sets.data, "train");
      setForm((f) => ({ ...f, train_set_id: train, val_set_id: f.val_set_id || pickSet(sets.data!, "test", train) }));
    }
  }, [sets.data]); // eslint-disable-line react-hooks/exhaustive-deps

  const chosen = useMemo(() => (layers.data ?? []).filter((l) => form.layers.includes(l.name)), [layers.data, form.layers]);
  const one = chosen.length === 1 ? chosen[0] : null;
  const train = sets.data?.find((s) => String(s.id) === form.train_set_id) ?? null;
  const val = sets.data?.find((s) => String(s.id) === form.val_set_id) ?? null;
  const errors = useMemo(() => validate(form, { kinds: kinds.data, layers: chosen, train, val }), [form, kinds.data, chosen, train, val]);
  const shown = (f: Field): string | undefined => server.fields[f] ?? (submitted || touched.has(f) ? errors[f] : undefined);

  const set = <K extends keyof LaunchForm>(key: K, value: LaunchForm[K], field: Field = key as Field) => {
    // errors of a text field show once it is left (blur) or the form is sent, then follow each keystroke
    edited.current.add(key);
    setForm((f) => ({ ...f, [key]: value }));
    if (server.fields[field]) setServer((s) => ({ ...s, fields: { ...s.fields, [field]: undefined } }));
  };
  const blur = (field: Field) => () => setTouched((t) => new Set(t).add(field));

  const focusFirst = (errs: Errors) => {
    const first = FIELD_ORDER.find((f) => errs[f]);
    if (first) formRef.current?.querySelector<HTMLElement>(`#f-${first}`)?.focus();
  };

  const submit = () =>
    sendForm({ errors, focusFirst, setSubmitted, setServer, mapServer: mapServerErrors,
               send: () => create.mutateAsync(buildRequest(form)), created: (id) => navigate(`/jobs/${id}`) });

  if (models.isLoading || sets.isLoading || kinds.isLoading) return <Loading what="Loading models, image sets and job kinds" />;
  if (models.error) return <ErrorBox error={models.error} retry={() => models.refetch()} />;
  if (sets.error) return <ErrorBox error={sets.error} retry={() => sets.refetch()} />;
  if (!models.data?.length || !sets.data?.length)
    return (
      <Empty>
        {!models.data?.length ? "No ready model is registered yet. " : "No ready image set is registered yet. "}
        <Link to="/register">Register {!models.data?.length ? "a model" : "an image folder"}</Link>, or the demo's with{" "}
        <code>fvaudit setup-demo</code>.
      </Empty>
    );

  const attack = form.kind !== "scan";
  const serverOther = server.form;
  const submitError = unlessOnFields(create.error);
  const kindLabel = kindText(form.kind).label;
  const audit = kindOf(kinds.data, "audit");
  const chainText = (audit?.steps ?? [])
    .filter((s) => (form.visualize || !/visuali[sz]e|synth/.test(s.key)) && ((form.control && form.kind !== "finetune") || !s.key.startsWith("control")))
    .map((s) => s.label)
    .join(" → ");
  const fieldProps = (f: Field & keyof LaunchForm) => ({
    id: `f-${f}`,
    value: form[f] as string,
    onChange: (e: { target: { value: string } }) => set(f, e.target.value as never),
    onBlur: blur(f),
    placeholder: form[f] === "" ? "server default" : undefined,
    ...fieldAria(f, shown(f)),
  });

  return (
    <div className="page launch">
      <PageHead
        title="Launch"
      >
        {attack
          ? `An audit${chainText ? `: ${chainText}` : ""}. It runs on the worker; you can follow it live.`
          : "A scan computes the top-k of layers over image sets; it makes no run by itself."}
      </PageHead>
      {requested && !models.data.some((m) => String(m.id) === requested) && (
        <div className="banner warn" role="note" data-testid="model-not-usable">
          Model {requested} cannot be audited (it is not ready, or it is hidden): the form starts on another model.{" "}
          <Link to={`/models/${requested}`}>Open model {requested}</Link> to see why.
        </div>
      )}
      {kinds.error && (
        <div className="banner warn" role="note">
          The job kinds (and their defaults) could not be read: {(kinds.error as Error).message} Empty fields take the server's defaults.
        </div>
      )}
      <form
        ref={formRef}
        noValidate
        className="panel form"
        aria-label="Launch"
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <fieldset className="kinds" id="f-kind" tabIndex={-1}>
          <legend>What to run</legend>
          {offered.map((k) => (
            <label key={k} className={`kind${form.kind === k ? " on" : ""}`}>
              <input type="radio" name="kind" value={k} checked={form.kind === k} onChange={() => set("kind", k)} />
              <span className="t">{kindText(k).label}</span>
              <span className="muted small">{kindText(k).help}</span>
            </label>
          ))}
          <FieldError field="kind" msg={shown("kind")} />
        </fieldset>

        <div className="grid-form">
          {attack && (
            <FieldRow field="name" label="Run name" hint="optional; default: model, layers, attack" error={shown("name")}>
              <input id="f-name" value={form.name} onChange={(e) => set("name", e.target.value)} onBlur={blur("name")} placeholder="e.g. conv3 push-down" {...fieldAria("name", shown("name"))} />
            </FieldRow>
          )}
          <FieldRow field="model_id" label="Model" error={shown("model_id")}>
            <select id="f-model_id" value={form.model_id} onChange={(e) => setForm((f) => ({ ...f, model_id: e.target.value, layers: [] }))} {...fieldAria("model_id", shown("model_id"))}>
              {models.data.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.name} ({m.registry_name})
                </option>
              ))}
            </select>
            {form.model_id && (
              <p className="hint small">
                <Link to={`/models/${form.model_id}`}>Browse this model's synthetic visualizations</Link>
              </p>
            )}
          </FieldRow>
          <FieldRow field="train_set_id" label={attack ? "Training set" : "Image set"} hint={attack ? "top-k to attack, fine-tuning data, decoys" : undefined} error={shown("train_set_id")}>
            <ImageSetSelect id="train_set_id" sets={sets.data} value={form.train_set_id} onChange={(v) => set("train_set_id", v)} error={shown("train_set_id")} />
          </FieldRow>
          <FieldRow field="val_set_id" label={attack ? "Validation set" : "Second image set"} hint={attack ? "D_τ: the metrics and accuracy" : undefined} error={shown("val_set_id")}>
            <ImageSetSelect id="val_set_id" sets={sets.data} value={form.val_set_id} onChange={(v) => set("val_set_id", v)} error={shown("val_set_id")} />
          </FieldRow>
        </div>

        <LayerField layers={layers} value={form.layers} onChange={(v) => set("layers", v)} error={shown("layers")}>
          {one && !shown("layers") && (
            <p className="hint muted small" data-testid="layer-hint">
              {one.module_type} · output {one.shape.join("×")} · {one.units} units
            </p>
          )}
        </LayerField>

        {attack && (
          <fieldset className="units">
            <legend>Units to attack</legend>
            {unitsApply(form) ? (
              <div className="row wrap">
                {(["all", "one", "several"] as const).map((m) => (
                  <label key={m} className="check">
                    <input type="radio" name="unitsMode" checked={form.unitsMode === m} onChange={() => set("unitsMode", m, "units")} />
                    {m === "all" ? `all${one ? ` (${one.units}; dead units are left out)` : ""}` : m === "one" ? "one unit" : "several"}
                  </label>
                ))}
                {form.unitsMode === "one" && (
                  <input id="f-units" className="short" inputMode="numeric" value={form.unitOne} onChange={(e) => set("unitOne", e.target.value, "units")} onBlur={blur("units")} aria-label="Unit index" {...fieldAria("units", shown("units"))} />
                )}
                {form.unitsMode === "several" && (
                  <input id="f-units" className="grow" value={form.unitsSeveral} onChange={(e) => set("unitsSeveral", e.target.value, "units")} onBlur={blur("units")} placeholder="0, 3, 10-15" aria-label="Unit indices" {...fieldAria("units", shown("units"))} />
                )}
              </div>
            ) : (
              <p className="muted" id="f-units" tabIndex={-1}>
                {form.layers.length > 1
                  ? `All units of each of the ${form.layers.length} layers (dead units are left out). Choose a single layer to pick units.`
                  : "Choose a layer first."}
              </p>
            )}
            <FieldError field="units" msg={shown("units")} />
          </fieldset>
        )}

        {form.kind === "push_up" && train && (
          <fieldset className="decoys">
            <legend>Decoys (from {train.name})</legend>
            <div className="row">
              <label className="check">
                <input type="radio" name="decoyMode" checked={form.decoyMode === "class"} onChange={() => set("decoyMode", "class", "decoy")} /> a decoy class (random images of it)
              </label>
              <label className="check">
                <input type="radio" name="decoyMode" checked={form.decoyMode === "images"} onChange={() => set("decoyMode", "images", "decoy")} /> chosen images
              </label>
            </div>
            {form.decoyMode === "class" ? (
              <DecoyClassPicker set={train} value={form.decoy_class} onChange={(v) => set("decoy_class", v, "decoy")} invalid={!!shown("decoy")} />
            ) : (
              <DecoyImagePicker set={train} value={form.decoy_ids} onChange={(ids) => set("decoy_ids", ids, "decoy")} />
            )}
            <FieldError field="decoy" msg={shown("decoy")} />
          </fieldset>
        )}

        <div className="grid-form narrow">
          <FieldRow field="k" label="k" hint={attack ? "top-k pushed (thesis: 10)" : "top-k kept per unit"} error={shown("k")}>
            <input inputMode="numeric" {...fieldProps("k")} />
          </FieldRow>
          {attack && (
            <>
              <FieldRow field="alpha" label="α" hint={form.kind === "finetune" ? "0 for the baseline" : form.alphaMode === "dynamic" ? "dynamic: halves / grows with the accuracy drop against the budget" : "L = α·L_attack + (1−α)·L_maintain"} error={shown("alpha")}>
                {form.kind === "finetune" ? (
                  <input id="f-alpha" value="0" disabled aria-label="α (0 for the baseline)" />
                ) : (
                  <div className="row">
                    <select id={form.alphaMode === "dynamic" ? "f-alpha" : "f-alpha-mode"} value={form.alphaMode} onChange={(e) => set("alphaMode", e.target.value as LaunchForm["alphaMode"], "alpha")} aria-label="α mode">
                      <option value="dynamic">dynamic</option>
                      <option value="fixed">fixed</option>
                    </select>
                    {form.alphaMode === "fixed" && (
                      <input id="f-alpha" className="short" inputMode="decimal" value={form.alpha} onChange={(e) => set("alpha", e.target.value)} onBlur={blur("alpha")} aria-label="α value" {...fieldAria("alpha", shown("alpha"))} />
                    )}
                  </div>
                )}
              </FieldRow>
              <FieldRow field="lr" label="learning rate" hint="Adam" error={shown("lr")}>
                <input inputMode="decimal" {...fieldProps("lr")} />
              </FieldRow>
              <FieldRow field="steps" label="steps" error={shown("steps")}>
                <input inputMode="numeric" {...fieldProps("steps")} />
              </FieldRow>
              <FieldRow field="batch_size" label="batch size" error={shown("batch_size")}>
                <input inputMode="numeric" {...fieldProps("batch_size")} />
              </FieldRow>
              <FieldRow field="seed" label="seed" error={shown("seed")}>
                <input inputMode="numeric" {...fieldProps("seed")} />
              </FieldRow>
              <FieldRow field="score_norm" label="score normalisation" hint="batch_mean: invariant to rescaling a unit" error={shown("score_norm")}>
                <select id="f-score_norm" value={form.score_norm} onChange={(e) => set("score_norm", e.target.value)} {...fieldAria("score_norm", shown("score_norm"))}>
                  {form.score_norm === "" && <option value="">server default</option>}
                  <option value="batch_mean">batch_mean</option>
                  <option value="init_mean">init_mean</option>
                  <option value="none">none (the thesis' formula)</option>
                </select>
              </FieldRow>
            </>
          )}
        </div>

        {attack && (
          <fieldset className="extras">
            <legend>Also run</legend>
            <div className="toggle-row">
              <label className="check" htmlFor="f-visualize">
                <input id="f-visualize" type="checkbox" checked={form.visualize} onChange={(e) => set("visualize", e.target.checked)} /> synthetic visualization
                <span className="muted small"> · images rendered from noise for every unit, the same seeds under θ_init and θ_final (SPEC §4)</span>
              </label>
              {form.visualize && (
                <div className="grid-form narrow">
                  <FieldRow field="n_synth" label="seeds per unit" error={shown("n_synth")}>
                    <input inputMode="numeric" {...fieldProps("n_synth")} />
                  </FieldRow>
                  <FieldRow field="synth_steps" label="visualization steps" error={shown("synth_steps")}>
                    <input inputMode="numeric" {...fieldProps("synth_steps")} />
                  </FieldRow>
                  <FieldRow field="synth_objective" label="objective" hint="channel mean: for layers whose outputs can be negative" error={shown("synth_objective")}>
                    <select id="f-synth_objective" value={form.synth_objective} onChange={(e) => set("synth_objective", e.target.value)} {...fieldAria("synth_objective", shown("synth_objective"))}>
                      {form.synth_objective === "" && <option value="">server default</option>}
                      <option value="score">score a_j</option>
                      <option value="channel_mean">channel mean</option>
                    </select>
                  </FieldRow>
                </div>
              )}
              <FieldError field="visualize" msg={shown("visualize")} />
            </div>
            {form.kind !== "finetune" && (
              <div className="toggle-row">
                <label className="check" htmlFor="f-control">
                  <input id="f-control" type="checkbox" checked={form.control} onChange={(e) => set("control", e.target.checked)} /> the α = 0 control
                  <span className="muted small"> · a plain fine-tune with the same settings, measured like the attack: its row sits next to the attack's</span>
                </label>
                <FieldError field="control" msg={shown("control")} />
              </div>
            )}
          </fieldset>
        )}

        {attack && (
          <details className="advanced" open={ADVANCED.some((f) => !!shown(f))}>
            <summary>Advanced: evaluation, accuracy budget, CLIP</summary>
            <div className="grid-form narrow">
              <FieldRow field="eval_every" label="evaluate every" hint="steps between accuracy checks (dynamic α)" error={shown("eval_every")}>
                <input inputMode="numeric" {...fieldProps("eval_every")} />
              </FieldRow>
              <FieldRow field="eval_size" label="evaluation subset" hint="validation images the α controller reads (0 = all); the budget is confirmed on the full set" error={shown("eval_size")}>
                <input inputMode="numeric" {...fieldProps("eval_size")} />
              </FieldRow>
              <FieldRow field="acc_budget_pp" label="accuracy budget (pp)" hint="allowed drop on the full validation set; the result is the last state within it" error={shown("acc_budget_pp")}>
                <input inputMode="decimal" {...fieldProps("acc_budget_pp")} />
              </FieldRow>
              {form.kind !== "finetune" && form.alphaMode === "dynamic" && (
                <FieldRow field="alpha_factor" label="α factor" hint="dynamic α: ÷ factor over budget, × factor within" error={shown("alpha_factor")}>
                  <input inputMode="decimal" {...fieldProps("alpha_factor")} />
                </FieldRow>
              )}
              <FieldRow field="lr_schedule" label="learning-rate schedule" error={shown("lr_schedule")}>
                <select id="f-lr_schedule" value={form.lr_schedule} onChange={(e) => set("lr_schedule", e.target.value)} {...fieldAria("lr_schedule", shown("lr_schedule"))}>
                  {form.lr_schedule === "" && <option value="">server default</option>}
                  <option value="constant">constant</option>
                  <option value="cosine">cosine (decays to 0)</option>
                </select>
              </FieldRow>
              <FieldRow field="k_clip" label="k for CLIP-δ" hint="top-k compared by the embedder (thesis: 5)" error={shown("k_clip")}>
                <input inputMode="numeric" {...fieldProps("k_clip")} />
              </FieldRow>
              <FieldRow field="embedder" label="embedder" hint="auto | none | efficientnet-lite0 | open_clip:<model>:<tag>" error={shown("embedder")}>
                <input {...fieldProps("embedder")} />
              </FieldRow>
            </div>
          </details>
        )}

        <FormProblems what="launch" refused={serverOther} error={submitError} invalid={submitted ? Object.keys(errors).length : 0} />
        <div className="row end">
          <Link to="/" className="button">
            Cancel
          </Link>
          <button type="submit" className="primary" disabled={create.isPending}>
            {create.isPending ? "Launching…" : `Launch ${kindLabel.toLowerCase()}`}
          </button>
        </div>
      </form>
    </div>
  );
}
