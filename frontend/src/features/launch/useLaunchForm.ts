// The launch form's state: the lists it picks from (usable models and image sets, the kind
// registry, the chosen model's layers), the form with the registry's defaults and the
// address's choices (?kind=, ?model=, ?layer=), its errors as they show, and sending it.
import { useEffect, useMemo, useRef, useState } from "react";
import { useNavigate, useSearchParams } from "react-router";
import { useCreateJob, useJobKinds, useLayers, useUsableImageSets, useUsableModels } from "../../api/queries";
import { defaultSet, fieldAria, sendForm } from "../../components/FormField";
import { defaultLayer, resolveLayers } from "../../components/LayerPicker";
import { BLANK, SLINGSHOT_FIELDS, buildRequest, formDefaults, launchKinds, mapServerErrors, validate, type Errors, type Field, type LaunchForm } from "./launch";

/** The order the form's fields stand in: a refused form focuses the first one with an error. */
const FIELD_ORDER: Field[] = [
  "kind", "name", "model_id", "layers", "train_set_id", "val_set_id", "units", "decoy", "target", "k", "alpha", "lr", "steps",
  "batch_size", "seed", "score_norm", "visualize", "n_synth", "synth_steps", "synth_objective", "control", "eval_every",
  "eval_size", "acc_budget_pp", "alpha_factor", "lr_schedule", "optimizer", "maintain", "k_clip", "embedder", ...SLINGSHOT_FIELDS,
];

/** ?layer=relu2&layer=relu3 or ?layer=relu2,relu3 */
function layersParam(params: URLSearchParams): string[] {
  return params.getAll("layer").flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
}

export type LaunchState = ReturnType<typeof useLaunchForm>;

export function useLaunchForm() {
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
  // a ?kind= the registry does not offer (or, unread, cannot): the form's own kind
  useEffect(() => {
    if (!kinds.isPending && !offered.includes(form.kind)) setForm((f) => ({ ...f, kind: BLANK.kind }));
  }, [offered, kinds.isPending]); // eslint-disable-line react-hooks/exhaustive-deps
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
      const known = resolveLayers(layers.data!, f.layers);
      return { ...f, layers: known.length ? known : [defaultLayer(layers.data!)].filter(Boolean) };
    });
  }, [layers.data]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    if (sets.data?.length && !form.train_set_id) {
      const train = defaultSet(sets.data, "train");
      setForm((f) => ({ ...f, train_set_id: train, val_set_id: f.val_set_id || defaultSet(sets.data!, "test", train), target_set_id: f.target_set_id || train }));
    }
  }, [sets.data]); // eslint-disable-line react-hooks/exhaustive-deps

  const chosen = useMemo(() => (layers.data ?? []).filter((l) => form.layers.includes(l.name)), [layers.data, form.layers]);
  const one = chosen.length === 1 ? chosen[0] : null;
  const train = sets.data?.find((s) => String(s.id) === form.train_set_id) ?? null;
  const val = sets.data?.find((s) => String(s.id) === form.val_set_id) ?? null;
  const target = sets.data?.find((s) => String(s.id) === form.target_set_id) ?? null;
  const errors = useMemo(() => validate(form, { kinds: kinds.data, layers: chosen, train, val, target }), [form, kinds.data, chosen, train, val, target]);
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

  const fieldProps = (f: Field & keyof LaunchForm) => ({
    id: `f-${f}`,
    value: form[f] as string,
    onChange: (e: { target: { value: string } }) => set(f, e.target.value as never),
    onBlur: blur(f),
    placeholder: form[f] === "" ? "server default" : undefined,
    ...fieldAria(f, shown(f)),
  });

  return { requested, models, sets, kinds, layers, create, offered, form, setForm, set, blur, shown, fieldProps, errors, server, submitted, submit, formRef, one, train };
}
