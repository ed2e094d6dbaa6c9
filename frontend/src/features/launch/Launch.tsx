// /launch: an audit (scan θ_init → attack → scans → metrics, with the α = 0 control and the
// synthetic visualizations) or a scan. The form's state lives in useLaunchForm; each group
// of fields below is a small component of it.
import { Link } from "react-router";
import type { ImageSetOut, ModelOut } from "../../api/client";
import { fieldAria, FieldError, FieldRow, FormProblems, ImageSetSelect, KindsUnread, listsGate, SubmitForm, unlessOnFields } from "../../components/FormField";
import { LayerField } from "../../components/LayerPicker";
import { PageHead } from "../../components/PageHead";
import { Empty } from "../../components/States";
import { kindOf } from "../../lib/chain";
import { aimsAtTarget, usesScoreNorm } from "../../lib/format";
import { usePageTitle } from "../../lib/title";
import { DecoyClassPicker, DecoyImagePicker } from "./DecoyPicker";
import { SLINGSHOT_FIELDS, unitsApply, usesDecoy, type Field, type LaunchForm, type LaunchKind } from "./launch";
import { TargetField } from "./TargetPicker";
import { useLaunchForm, type LaunchState } from "./useLaunchForm";

/** How the form names the kinds it knows; which kinds it offers is the registry's (`launchKinds`). */
const KIND_TEXT: Record<string, { label: string; help: string }> = {
  push_down: { label: "Push-down", help: "push the unit's initial top-k out of its top-k" },
  push_up: { label: "Push-up (decoy)", help: "make decoy images out-activate the training set" },
  finetune: { label: "Fine-tune baseline", help: "α = 0: plain fine-tuning, the control" },
  slingshot: { label: "Gradient Slingshots", help: "the unit's synthetic visualization converges to a target image; its natural top-k stays (one layer)" },
  push_up_slingshot: { label: "Push-up + Slingshots", help: "decoys pushed up and the visualization aimed at a decoy image: both views agree on the lie (one layer)" },
  scan: { label: "Scan only", help: "top-k of layers over the image sets, no attack" },
};
const kindText = (kind: LaunchKind) => KIND_TEXT[kind] ?? { label: kind, help: "" };

const ADVANCED: Field[] = ["eval_every", "eval_size", "acc_budget_pp", "alpha_factor", "lr_schedule", "optimizer", "maintain", "k_clip", "embedder", ...SLINGSHOT_FIELDS];

export function LaunchPage() {
  usePageTitle("Launch an audit");
  const f = useLaunchForm();
  const { requested, models, sets, kinds, layers, create, form, set, shown, errors, server, submitted, submit, formRef, one, train } = f;

  const gate = listsGate("Loading models, image sets and job kinds", [models, sets], [kinds]);
  if (gate) return gate;
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
  const chainText = (kindOf(kinds.data, "audit")?.steps ?? [])
    .filter((s) => (form.visualize || !/visuali[sz]e|synth/.test(s.key)) && ((form.control && form.kind !== "finetune") || !s.key.startsWith("control")))
    .map((s) => s.label)
    .join(" → ");

  return (
    <div className="page launch">
      <PageHead title="Launch">
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
      <KindsUnread error={kinds.error} />
      <SubmitForm formRef={formRef} label="Launch" submit={submit}>
        <KindField f={f} />
        <SourceFields f={f} attack={attack} models={models.data} sets={sets.data} />
    <LayerField layers={layers} value={form.layers} onChange={(v) => set("layers", v)} error={shown("layers")}>
      {one && !shown("layers") && (
        <p className="hint muted small" data-testid="layer-hint">
          {one.module_type} · output {one.shape.join("×")} · {one.units} units
        </p>
      )}
    </LayerField>
        {attack && <UnitsField f={f} />}
        {usesDecoy(form.kind) && train && <DecoyField f={f} train={train} />}
        {aimsAtTarget(form.kind) && <TargetField f={f} sets={sets.data} />}
        <SettingsFields f={f} attack={attack} />
        {attack && <ExtrasFields f={f} />}
        {attack && <AdvancedFields f={f} />}
        <FormProblems what="launch" refused={serverOther} error={submitError} invalid={submitted ? Object.keys(errors).length : 0} />
        <div className="row end">
          <Link to="/" className="button">
            Cancel
          </Link>
          <button type="submit" className="primary" disabled={create.isPending}>
            {create.isPending ? "Launching…" : `Launch ${kindLabel.toLowerCase()}`}
          </button>
        </div>
      </SubmitForm>
    </div>
  );
}

/** What to run: the registry's attack kinds, or a scan. */
function KindField({ f }: { f: LaunchState }) {
  const { form, set, shown, offered } = f;
  return (
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
  );
}

/** The run's name, the model and the two image sets. */
function SourceFields({ f, attack, models, sets }: { f: LaunchState; attack: boolean; models: ModelOut[]; sets: ImageSetOut[] }) {
  const { form, set, blur, shown, setForm } = f;
  return (
    <div className="grid-form">
      {attack && (
        <FieldRow field="name" label="Run name" hint="optional; default: model, layers, attack" error={shown("name")}>
          <input id="f-name" value={form.name} onChange={(e) => set("name", e.target.value)} onBlur={blur("name")} placeholder="e.g. conv3 push-down" {...fieldAria("name", shown("name"))} />
        </FieldRow>
      )}
      <FieldRow field="model_id" label="Model" error={shown("model_id")}>
        <select id="f-model_id" value={form.model_id} onChange={(e) => setForm((f) => ({ ...f, model_id: e.target.value, layers: [] }))} {...fieldAria("model_id", shown("model_id"))}>
          {models.map((m) => (
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
        <ImageSetSelect id="train_set_id" sets={sets} value={form.train_set_id} onChange={(v) => set("train_set_id", v)} error={shown("train_set_id")} />
      </FieldRow>
      <FieldRow field="val_set_id" label={attack ? "Validation set" : "Second image set"} hint={attack ? "D_τ: the metrics and accuracy" : undefined} error={shown("val_set_id")}>
        <ImageSetSelect id="val_set_id" sets={sets} value={form.val_set_id} onChange={(v) => set("val_set_id", v)} error={shown("val_set_id")} />
      </FieldRow>
    </div>
  );
}

/** Which units of the layer to attack: all, one or several (only with a single layer). */
function UnitsField({ f }: { f: LaunchState }) {
  const { form, set, blur, shown, one } = f;
  return (
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
  );
}

/** A push-up's decoys from the training set: a class, or chosen images. */
function DecoyField({ f, train }: { f: LaunchState; train: ImageSetOut }) {
  const { form, set, shown } = f;
  return (
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
  );
}

/** k, and the attack's settings: α, learning rate, steps, batch size, seed, score normalisation. */
function SettingsFields({ f, attack }: { f: LaunchState; attack: boolean }) {
  const { form, set, blur, shown, fieldProps } = f;
  return (
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
          {usesScoreNorm(form.kind) && (
            <ChoiceRow f={f} field="score_norm" label="score normalisation" hint="batch_mean: invariant to rescaling a unit" options={[["batch_mean", "batch_mean"], ["init_mean", "init_mean"], ["none", "none (the thesis' formula)"]]} />
          )}
        </>
      )}
    </div>
  );
}

/** What the audit also runs: the synthetic visualizations, the α = 0 control. */
function ExtrasFields({ f }: { f: LaunchState }) {
  const { form, set, shown, fieldProps } = f;
  return (
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
            <ChoiceRow f={f} field="synth_objective" label="objective" hint="channel mean: for layers whose outputs can be negative" options={[["score", "score a_j"], ["channel_mean", "channel mean"]]} />
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
  );
}

/** Evaluation, the accuracy budget, the α factor, the schedule and CLIP: folded unless one has an error. */
function AdvancedFields({ f }: { f: LaunchState }) {
  const { form, shown, fieldProps } = f;
  return (
    <details className="advanced" open={ADVANCED.some((f) => !!shown(f))}>
      <summary>Advanced: evaluation, accuracy budget, CLIP{aimsAtTarget(form.kind) ? ", Slingshots" : ""}</summary>
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
        <ChoiceRow f={f} field="lr_schedule" label="learning-rate schedule" options={[["constant", "constant"], ["cosine", "cosine (decays to 0)"]]} />
        <ChoiceRow f={f} field="optimizer" label="optimizer" options={[["adam", "Adam"], ["sgd", "SGD (momentum 0.9)"]]} />
        <ChoiceRow f={f} field="maintain" label="keep the model by" hint="labels: an honest fine-tune's loss, for a detector's clean family" options={[["distill", "distillation from θ_init (SPEC §2)"], ["labels", "cross-entropy on the labels"]]} />
        <FieldRow field="k_clip" label="k for CLIP-δ" hint="top-k compared by the embedder (thesis: 5)" error={shown("k_clip")}>
          <input inputMode="numeric" {...fieldProps("k_clip")} />
        </FieldRow>
        <FieldRow field="embedder" label="embedder" hint="auto | none | efficientnet-lite0 | open_clip:<model>:<tag>" error={shown("embedder")}>
          <input {...fieldProps("embedder")} />
        </FieldRow>
      </div>
      {aimsAtTarget(form.kind) && <SlingshotFields f={f} />}
    </details>
  );
}

/** The Slingshots settings (SPEC §8.1): the wanted landscape, the tunnel, the loss, the preservation, the render. */
function SlingshotFields({ f }: { f: LaunchState }) {
  const { form, set, shown, fieldProps } = f;
  return (
    <fieldset className="slingshot" aria-label="Slingshots settings">
      <legend>Slingshots</legend>
      <div className="grid-form narrow">
        <FieldRow field="gamma" label="γ" hint="the wanted landscape −γ/2·‖q_t − q‖² around the target" error={shown("gamma")}>
          <input inputMode="decimal" {...fieldProps("gamma")} />
        </FieldRow>
        <FieldRow field="tunnel_sd" label="tunnel sd" hint="noise u ~ U(−sd, sd) around the path to the target" error={shown("tunnel_sd")}>
          <input inputMode="decimal" {...fieldProps("tunnel_sd")} />
        </FieldRow>
        <FieldRow field="tunnel_batch" label="tunnel samples" hint="per attacked unit per step" error={shown("tunnel_batch")}>
          <input inputMode="numeric" {...fieldProps("tunnel_batch")} />
        </FieldRow>
        <ChoiceRow f={f} field="tunnel_path" label="tunnel" hint="segment: q = p·q_t + u (SPEC §8.1); clipped: the path a render's Adam takes" options={[["segment", "segment"], ["clipped", "clipped"]]} />
        <ChoiceRow f={f} field="slingshot_form" label="manipulation loss" hint="L_S on the input gradient (double back-propagation) or on the activation" options={[["gradient", "gradient"], ["activation", "activation"]]} />
        <ChoiceRow f={f} field="slingshot_norm" label="loss normalisation" hint="cosine: the gradient's direction; none: the paper's MSE" options={[["cosine", "cosine"], ["relative", "relative MSE"], ["adam", "Adam-like RMS"], ["none", "none"]]} />
        <FieldRow field="slingshot_weight" label="Slingshots weight" hint={form.kind === "push_up_slingshot" ? "L_A = L_push-up + weight·L_S" : "the weight of L_S in L_A"} error={shown("slingshot_weight")}>
          <input inputMode="decimal" {...fieldProps("slingshot_weight")} />
        </FieldRow>
        <FieldRow field="unit_weight" label="unit weight w" hint="L_P = w·MSE(a_j) + (1 − w)·MSE(A_l) on natural images" error={shown("unit_weight")}>
          <input inputMode="decimal" {...fieldProps("unit_weight")} />
        </FieldRow>
        <ChoiceRow f={f} field="fv_objective" label="visualization objective" hint="the objective the auditor renders with" options={[["score", "score a_j"], ["channel_mean", "channel mean"]]} />
      </div>
      <div className="row wrap">
        <label className="check" htmlFor="f-softplus">
          <input id="f-softplus" type="checkbox" checked={form.softplus} onChange={(e) => set("softplus", e.target.checked)} /> ReLU → Softplus inside L_S
        </label>
        <label className="check" htmlFor="f-fv_transforms">
          <input id="f-fv_transforms" type="checkbox" checked={form.fv_transforms} onChange={(e) => set("fv_transforms", e.target.checked)} /> the render's jitter, scale and rotation in L_S
        </label>
      </div>
      <FieldError field="softplus" msg={shown("softplus")} />
      <FieldError field="fv_transforms" msg={shown("fv_transforms")} />
    </fieldset>
  );
}

/**
 * A choice of the form's: its select in a labelled row. Empty is the server's default, offered
 * only while the field has no value (the registry's default fills it).
 */
function ChoiceRow({ f, field, label, hint, options }: {
  f: LaunchState; field: "score_norm" | "synth_objective" | "lr_schedule" | "optimizer" | "maintain" | "tunnel_path" | "slingshot_form" | "slingshot_norm" | "fv_objective";
  label: string; hint?: string; options: [string, string][];
}) {
  const { form, set, shown } = f;
  return (
    <FieldRow field={field} label={label} hint={hint} error={shown(field)}>
      <select id={`f-${field}`} value={form[field]} onChange={(e) => set(field, e.target.value)} {...fieldAria(field, shown(field))}>
        {form[field] === "" && <option value="">server default</option>}
        {options.map(([value, text]) => (
          <option key={value} value={value}>
            {text}
          </option>
        ))}
      </select>
    </FieldRow>
  );
}
