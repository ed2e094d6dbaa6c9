// The launch form: its state, its defaults (read from the job-kind registry, never
// written here), client-side validation, the request it sends, and the mapping of the
// server's 422 `detail[].loc` back onto the form's fields.
import type { ImageSetOut, LayerOut, ValidationItem } from "../../api/client";
import type { JobKind } from "../../api/contract";
import type { LaunchBody } from "../../api/queries";
import { kindOf } from "../../lib/chain";
import { aimsAtTarget, usesScoreNorm } from "../../lib/format";
import { choicesOf, floatError, intError, maxLengthOf, parseFloatStrict, parseIntStrict, rangeOf, type Range } from "../../lib/specSchema";

/**
 * What the form launches: an audit with one of its attack kinds (`push_down`, `push_up`,
 * `finetune`, `slingshot`, `push_up_slingshot`: the choices of the audit spec's `attack.kind`),
 * or `scan`.
 */
export type LaunchKind = string;

/** The kinds that push a decoy class up (SPEC §2, §8.2). */
export const DECOY_KINDS: readonly string[] = ["push_up", "push_up_slingshot"];
export const usesDecoy = (kind: string | null | undefined) => !!kind && DECOY_KINDS.includes(kind);

/** A target image uploaded with `POST /api/v1/target-images`. */
export type TargetUpload = { artifact_id: number; url: string; width: number; height: number; format: string; mode: string; size_bytes: number; file: string };

export type LaunchForm = {
  kind: LaunchKind;
  name: string;
  model_id: string;
  /** attack.layers (audit) or layers (scan): at least one */
  layers: string[];
  train_set_id: string;
  val_set_id: string;
  /** units apply only when exactly one layer is chosen */
  unitsMode: "all" | "one" | "several";
  unitOne: string;
  unitsSeveral: string;
  k: string;
  alphaMode: "dynamic" | "fixed";
  alpha: string;
  alpha_factor: string;
  lr: string;
  /** attack.lr_schedule: "constant" | "cosine" ("" = the server's default) */
  lr_schedule: string;
  /** attack.optimizer: "adam" | "sgd" ("" = the server's default) */
  optimizer: string;
  /** attack.maintain: "distill" | "labels" (L_M; "" = the server's default) */
  maintain: string;
  steps: string;
  batch_size: string;
  seed: string;
  score_norm: string;
  decoyMode: "class" | "images";
  decoy_class: string;
  decoy_ids: number[];
  k_clip: string;
  eval_every: string;
  eval_size: string;
  acc_budget_pp: string;
  embedder: string;
  /** spec.visualize: the synthetic visualization step of the audit chain */
  visualize: boolean;
  n_synth: string;
  synth_steps: string;
  /** spec.synth_objective: "score" (a_j) | "channel_mean" */
  synth_objective: string;
  /** spec.control: the α = 0 fine-tune with the same settings */
  control: boolean;
  /** Slingshots kinds: the target image, an image of a registered set or an upload (one for every attacked unit) */
  targetMode: "set" | "upload";
  target_set_id: string;
  target_image_id: string;
  target_upload: TargetUpload | null;
  /** Slingshots settings (attack.*; "" = the server's default) */
  gamma: string;
  tunnel_sd: string;
  tunnel_batch: string;
  tunnel_path: string;
  slingshot_form: string;
  slingshot_norm: string;
  slingshot_weight: string;
  unit_weight: string;
  softplus: boolean;
  fv_objective: string;
  fv_transforms: boolean;
};

export type Field =
  | "name" | "model_id" | "layers" | "train_set_id" | "val_set_id" | "units" | "k" | "alpha" | "alpha_factor" | "lr"
  | "steps" | "batch_size" | "seed" | "score_norm" | "decoy" | "k_clip" | "eval_every" | "eval_size" | "acc_budget_pp"
  | "embedder" | "kind" | "visualize" | "n_synth" | "synth_steps" | "synth_objective" | "control" | "lr_schedule"
  | "optimizer" | "maintain" | "target" | "gamma" | "tunnel_sd" | "tunnel_batch" | "tunnel_path" | "slingshot_form"
  | "slingshot_norm" | "slingshot_weight" | "unit_weight" | "softplus" | "fv_objective" | "fv_transforms";

/** The Slingshots settings of the advanced section, in the order they stand. */
export const SLINGSHOT_FIELDS: Field[] = [
  "gamma", "tunnel_sd", "tunnel_batch", "tunnel_path", "slingshot_form", "slingshot_norm", "slingshot_weight", "unit_weight",
  "softplus", "fv_objective", "fv_transforms",
];

export type Errors = Partial<Record<Field, string>>;

/**
 * The form before the registry's defaults arrive: choices only, no numbers. Every number
 * and default choice comes from `formDefaults` (the API's `defaults`); a field the API
 * gives no default for stays empty, and an empty optional field is left out of the
 * request so the server applies its own default.
 */
export const BLANK: LaunchForm = {
  kind: "push_down",
  name: "",
  model_id: "",
  layers: [],
  train_set_id: "",
  val_set_id: "",
  unitsMode: "all",
  unitOne: "",
  unitsSeveral: "",
  k: "",
  alphaMode: "dynamic",
  alpha: "",
  alpha_factor: "",
  lr: "",
  lr_schedule: "",
  optimizer: "",
  maintain: "",
  steps: "",
  batch_size: "",
  seed: "",
  score_norm: "",
  decoyMode: "class",
  decoy_class: "",
  decoy_ids: [],
  k_clip: "",
  eval_every: "",
  eval_size: "",
  acc_budget_pp: "",
  embedder: "",
  visualize: true,
  n_synth: "",
  synth_steps: "",
  synth_objective: "",
  control: true,
  targetMode: "set",
  target_set_id: "",
  target_image_id: "",
  target_upload: null,
  gamma: "",
  tunnel_sd: "",
  tunnel_batch: "",
  tunnel_path: "",
  slingshot_form: "",
  slingshot_norm: "",
  slingshot_weight: "",
  unit_weight: "",
  softplus: false,
  fv_objective: "",
  fv_transforms: true,
};

const str = (v: unknown): string | undefined => (typeof v === "number" ? String(v) : typeof v === "string" ? v : undefined);

/**
 * The form's defaults from `GET /api/v1/job-kinds`: the audit kind's `defaults` (its
 * `attack` object holds ATTACK_DEFAULTS; a flat `defaults` is read the same way) and the
 * scan kind's `k`. Fields the registry does not mention keep their blank value.
 */
export function formDefaults(kinds: JobKind[] | undefined, kind: LaunchKind = "push_down"): Partial<LaunchForm> {
  const audit = kinds?.find((k) => k.kind === "audit")?.defaults ?? {};
  const scan = kinds?.find((k) => k.kind === "scan")?.defaults ?? {};
  const attack = (audit.attack && typeof audit.attack === "object" ? audit.attack : {}) as Record<string, unknown>;
  const pick = (key: string) => str(attack[key]) ?? str(audit[key]);
  const out: Partial<LaunchForm> = {};
  const set = (field: keyof LaunchForm, v: string | undefined) => {
    if (v !== undefined) (out as Record<string, unknown>)[field] = v;
  };
  set("k", kind === "scan" ? (str(scan.k) ?? pick("k")) : pick("k"));
  set("lr", pick("lr"));
  set("lr_schedule", pick("lr_schedule"));
  set("optimizer", pick("optimizer"));
  set("maintain", pick("maintain"));
  set("steps", pick("steps"));
  set("batch_size", pick("batch_size"));
  set("seed", pick("seed"));
  set("score_norm", pick("score_norm"));
  set("eval_every", pick("eval_every"));
  set("eval_size", pick("eval_size"));
  set("acc_budget_pp", pick("acc_budget_pp"));
  set("alpha_factor", pick("alpha_factor"));
  // the fixed-α field starts where the dynamic controller starts
  set("alpha", str(attack.alpha) ?? pick("alpha_init"));
  set("k_clip", str(audit.k_clip));
  set("embedder", str(audit.embedder));
  set("n_synth", str(audit.n_synth));
  set("synth_steps", str(audit.synth_steps));
  set("synth_objective", str(audit.synth_objective));
  for (const key of ["gamma", "tunnel_sd", "tunnel_batch", "tunnel_path", "slingshot_form", "slingshot_norm", "slingshot_weight", "unit_weight", "fv_objective"] as const)
    set(key, pick(key));
  if (typeof attack.softplus === "boolean") out.softplus = attack.softplus;
  if (typeof attack.fv_transforms === "boolean") out.fv_transforms = attack.fv_transforms;
  if (typeof audit.visualize === "boolean") out.visualize = audit.visualize;
  if (typeof audit.control === "boolean") out.control = audit.control;
  return out;
}

/**
 * The kinds the form offers, from the registry: the audit's attack kinds (its spec's
 * `attack.kind` choices, in their order), then a scan when the registry runs one. Without a
 * registry, the form's own kind.
 */
export function launchKinds(kinds: JobKind[] | undefined): LaunchKind[] {
  const attacks = choicesOf(kindOf(kinds, "audit")?.spec_schema, ["attack", "kind"]);
  const offered = [...attacks, ...(kindOf(kinds, "scan")?.runnable ? ["scan"] : [])];
  return offered.length ? offered : [BLANK.kind];
}

export type LaunchContext = {
  /** the job-kind registry: the bounds of every number are its specs' (`spec_schema`) */
  kinds?: JobKind[];
  /** the chosen layers, resolved on the model's layer list */
  layers?: LayerOut[];
  train?: ImageSetOut | null;
  val?: ImageSetOut | null;
  /** the image set the Slingshots target is picked from */
  target?: ImageSetOut | null;
};

/** "0, 3, 10-12" → [0, 3, 10, 11, 12]; throws Error with a message that names the problem. */
export function parseUnits(text: string, nUnits?: number): number[] {
  const parts = text.split(/[\s,;]+/).filter(Boolean);
  if (!parts.length) throw new Error("list at least one unit, e.g. 0, 3, 10-15");
  const out: number[] = [];
  for (const p of parts) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(p);
    if (!m) throw new Error(`“${p}” is not a unit index or a range like 10-15`);
    const a = Number(m[1]);
    const b = m[2] != null ? Number(m[2]) : a;
    if (b < a) throw new Error(`range ${p} runs backwards`);
    if (b - a > 100_000) throw new Error(`range ${p} is too long`);
    for (let u = a; u <= b; u++) out.push(u);
  }
  const seen = new Set<number>();
  for (const u of out) {
    if (seen.has(u)) throw new Error(`unit ${u} is listed twice`);
    seen.add(u);
  }
  if (nUnits != null) {
    const bad = out.find((u) => u >= nUnits);
    if (bad != null) throw new Error(`unit ${bad} is out of range: the layer has ${nUnits} units (0–${nUnits - 1})`);
  }
  return out;
}

/** Units are chosen per layer only when the audit attacks exactly one layer. */
export const unitsApply = (f: LaunchForm) => f.kind !== "scan" && f.layers.length === 1;

export function validate(f: LaunchForm, ctx: LaunchContext = {}): Errors {
  const e: Errors = {};
  const attack = f.kind !== "scan";
  const schema = kindOf(ctx.kinds, attack ? "audit" : "scan")?.spec_schema;
  /** the range of a field of the spec (`at` its path), or of the audit's attack */
  const range = (...at: string[]) => rangeOf(schema, at);
  const ofAttack = (field: string) => range(...(attack ? ["attack", field] : [field]));
  const maxName = maxLengthOf(schema, ["name"]);
  if (f.name.length > maxName) e.name = `at most ${maxName} characters`;
  if (!f.model_id) e.model_id = "choose a model";
  if (!f.layers.length) e.layers = f.model_id ? "choose at least one layer" : "choose a model first";
  else if (aimsAtTarget(f.kind) && f.layers.length > 1) e.layers = "a Slingshots attack aims the units of exactly one layer: choose one";
  if (!f.train_set_id) e.train_set_id = "choose the training image set";
  if (!f.val_set_id) e.val_set_id = "choose the validation image set";
  else if (!attack && f.val_set_id === f.train_set_id) e.val_set_id = "scan two different image sets (or only one: pick it as training set)";

  e.k = intError(f.k, ofAttack("k"), "k", { hi: Math.min(ctx.train?.size ?? Infinity, !attack && ctx.val ? ctx.val.size : Infinity) });
  if (!e.k && f.k.trim() && ctx.train && parseIntStrict(f.k)! > ctx.train.size) e.k = `k is larger than the training set (${ctx.train.size} images)`;

  if (!attack) return strip(e);

  if (unitsApply(f)) {
    const nUnits = ctx.layers?.[0]?.units;
    if (f.unitsMode === "one") {
      const u = parseIntStrict(f.unitOne);
      if (u == null) e.units = "the unit must be a whole number ≥ 0";
      else if (nUnits != null && u >= nUnits) e.units = `unit ${u} is out of range: the layer has ${nUnits} units (0–${nUnits - 1})`;
    } else if (f.unitsMode === "several") {
      try {
        parseUnits(f.unitsSeveral, nUnits);
      } catch (err) {
        e.units = (err as Error).message;
      }
    }
  }

  if (f.kind === "finetune") {
    // the baseline's α is 0 by definition
  } else if (f.alphaMode === "fixed") {
    const alpha = ofAttack("alpha");
    if (parseFloatStrict(f.alpha) == null) e.alpha = "α must be a number";
    else e.alpha = floatError(f.alpha, alpha, (r) => `α must be between ${r.lo} and ${r.hi}`);
  } else {
    e.alpha_factor = floatError(f.alpha_factor, ofAttack("alpha_factor"), (r) => `the α factor must be a number > ${r.lo} (the thesis: 2)`);
  }
  e.lr = floatError(f.lr, ofAttack("lr"), (r) => (parseFloatStrict(f.lr) == null ? "the learning rate must be a number, e.g. 1e-4" : `the learning rate must be > ${r.lo} and ≤ ${r.hi}`));
  e.steps = intError(f.steps, ofAttack("steps"), "steps");
  e.batch_size = intError(f.batch_size, ofAttack("batch_size"), "batch size");
  e.seed = intError(f.seed, ofAttack("seed"), "seed");
  e.eval_every = intError(f.eval_every, ofAttack("eval_every"), "evaluation interval");
  e.eval_size = intError(f.eval_size, ofAttack("eval_size"), "evaluation subset size");
  e.acc_budget_pp = floatError(f.acc_budget_pp, ofAttack("acc_budget_pp"), (r) => `the accuracy budget is ${r.lo}–${r.hi} percentage points`);
  e.k_clip = intError(f.k_clip, range("k_clip"), "k for CLIP", { hi: ctx.val?.size });
  if (!e.k_clip && f.k_clip.trim() && ctx.val && parseIntStrict(f.k_clip)! > ctx.val.size) e.k_clip = `larger than the validation set`;
  if (f.visualize) {
    e.n_synth = intError(f.n_synth, range("n_synth"), "seeds per unit");
    e.synth_steps = intError(f.synth_steps, range("synth_steps"), "visualization steps");
  }

  if (aimsAtTarget(f.kind)) {
    if (f.targetMode === "upload") {
      if (!f.target_upload) e.target = "upload a PNG or JPEG target image";
    } else if (!f.target_set_id) e.target = "choose the image set of the target";
    else if (!f.target_image_id.trim()) e.target = "pick a target image";
    else e.target = intError(f.target_image_id, { lo: 0, hi: Infinity, loExclusive: false, hiExclusive: false }, "the image id", { hi: ctx.target ? ctx.target.size - 1 : undefined });
    const of = (field: string) => ofAttack(field);
    const bad = (r: Range) => `must be a number${Number.isFinite(r.lo) ? ` ${r.loExclusive ? ">" : "≥"} ${r.lo}` : ""}${Number.isFinite(r.hi) ? ` and ${r.hiExclusive ? "<" : "≤"} ${r.hi.toLocaleString("en")}` : ""}`;
    e.gamma = floatError(f.gamma, of("gamma"), (r) => `γ ${bad(r)}`);
    e.tunnel_sd = floatError(f.tunnel_sd, of("tunnel_sd"), (r) => `the tunnel's sd ${bad(r)}`);
    e.tunnel_batch = intError(f.tunnel_batch, of("tunnel_batch"), "tunnel samples");
    e.slingshot_weight = floatError(f.slingshot_weight, of("slingshot_weight"), (r) => `the weight ${bad(r)}`);
    e.unit_weight = floatError(f.unit_weight, of("unit_weight"), (r) => `w ${bad(r)}`);
  }

  if (usesDecoy(f.kind)) {
    if (f.decoyMode === "class") {
      if (f.decoy_class === "") e.decoy = "pick a decoy class";
    } else if (!f.decoy_ids.length) e.decoy = "pick at least one decoy image";
  }
  return strip(e);
}

function strip(e: Errors): Errors {
  for (const k of Object.keys(e) as Field[]) if (!e[k]) delete e[k];
  return e;
}

export function unitsOf(f: LaunchForm): number[] | null {
  if (!unitsApply(f) || f.unitsMode === "all") return null;
  if (f.unitsMode === "one") return [parseIntStrict(f.unitOne)!];
  return parseUnits(f.unitsSeveral);
}

/** Only the fields with a value: an empty optional field takes the server's default. */
function present(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
const optInt = (s: string) => (s.trim() ? parseIntStrict(s)! : undefined);
const optFloat = (s: string) => (s.trim() ? parseFloatStrict(s)! : undefined);
const optStr = (s: string) => (s.trim() ? s.trim() : undefined);

/** The POST /jobs body for a valid form. */
export function buildRequest(f: LaunchForm): LaunchBody {
  const name = f.name.trim() || undefined;
  if (f.kind === "scan") {
    const ids = [Number(f.train_set_id)];
    if (f.val_set_id && f.val_set_id !== f.train_set_id) ids.push(Number(f.val_set_id));
    return { kind: "scan", spec: present({ model_id: Number(f.model_id), image_set_ids: ids, layers: [...f.layers], k: optInt(f.k) }) };
  }
  const push_up = usesDecoy(f.kind);
  const sling = aimsAtTarget(f.kind);
  const dynamic = f.kind !== "finetune" && f.alphaMode === "dynamic";
  return {
    kind: "audit",
    spec: present({
      name,
      model_id: Number(f.model_id),
      train_set_id: Number(f.train_set_id),
      val_set_id: Number(f.val_set_id),
      attack: present({
        kind: f.kind,
        layers: [...f.layers],
        units: unitsOf(f),
        k: optInt(f.k),
        alpha: f.kind === "finetune" ? 0 : dynamic ? null : parseFloatStrict(f.alpha)!,
        alpha_factor: dynamic ? optFloat(f.alpha_factor) : undefined,
        lr: optFloat(f.lr),
        lr_schedule: optStr(f.lr_schedule),
        optimizer: optStr(f.optimizer),
        maintain: optStr(f.maintain),
        steps: optInt(f.steps),
        batch_size: optInt(f.batch_size),
        seed: optInt(f.seed),
        score_norm: usesScoreNorm(f.kind) ? optStr(f.score_norm) : undefined,
        eval_every: optInt(f.eval_every),
        eval_size: optInt(f.eval_size),
        acc_budget_pp: optFloat(f.acc_budget_pp),
        decoy_class: push_up && f.decoyMode === "class" ? Number(f.decoy_class) : null,
        decoy_ids: push_up && f.decoyMode === "images" ? [...f.decoy_ids] : null,
        ...(sling ? slingshotParams(f) : {}),
      }),
      k_clip: optInt(f.k_clip),
      embedder: optStr(f.embedder),
      visualize: f.visualize,
      n_synth: f.visualize ? optInt(f.n_synth) : undefined,
      synth_steps: f.visualize ? optInt(f.synth_steps) : undefined,
      synth_objective: f.visualize ? optStr(f.synth_objective) : undefined,
      // a fine-tune baseline is itself the α = 0 control
      control: f.kind === "finetune" ? false : f.control,
    }),
  };
}

/** A Slingshots attack's target and settings (the fields other kinds leave at their defaults). */
function slingshotParams(f: LaunchForm): Record<string, unknown> {
  return {
    target_images: [
      f.targetMode === "upload"
        ? { artifact_id: f.target_upload!.artifact_id }
        : { image_set_id: Number(f.target_set_id), image_id: parseIntStrict(f.target_image_id)! },
    ],
    gamma: optFloat(f.gamma),
    tunnel_sd: optFloat(f.tunnel_sd),
    tunnel_batch: optInt(f.tunnel_batch),
    tunnel_path: optStr(f.tunnel_path),
    slingshot_form: optStr(f.slingshot_form),
    slingshot_norm: optStr(f.slingshot_norm),
    slingshot_weight: optFloat(f.slingshot_weight),
    unit_weight: optFloat(f.unit_weight),
    softplus: f.softplus,
    fv_objective: optStr(f.fv_objective),
    fv_transforms: f.fv_transforms,
  };
}

const ATTACK_FIELDS: Record<string, Field> = {
  kind: "kind", layers: "layers", layer: "layers", units: "units", k: "k", alpha: "alpha", alpha_max: "alpha",
  alpha_init: "alpha", alpha_factor: "alpha_factor", lr: "lr", lr_schedule: "lr_schedule", optimizer: "optimizer", maintain: "maintain", steps: "steps", batch_size: "batch_size", seed: "seed",
  score_norm: "score_norm", decoy_class: "decoy", decoy_ids: "decoy", n_decoys: "decoy", eval_every: "eval_every",
  eval_size: "eval_size", acc_budget_pp: "acc_budget_pp", target_images: "target",
  ...Object.fromEntries(SLINGSHOT_FIELDS.map((f) => [f, f])),
};
const SPEC_FIELDS: Record<string, Field> = {
  name: "name", model_id: "model_id", train_set_id: "train_set_id", val_set_id: "val_set_id", k: "k",
  k_clip: "k_clip", embedder: "embedder", layers: "layers", visualize: "visualize", n_synth: "n_synth",
  synth_steps: "synth_steps", synth_objective: "synth_objective", control: "control",
};

/** Map a 422's `detail` items onto form fields; what names no field is returned in `form`. */
export function mapServerErrors(items: ValidationItem[]): { fields: Errors; form: string[] } {
  const fields: Errors = {};
  const form: string[] = [];
  for (const it of items) {
    const loc = (it.loc ?? []).map(String);
    let field: Field | undefined;
    const at = loc.indexOf("spec");
    if (at < 0) {
      if (loc.includes("kind")) field = "kind";
    } else {
      let rest = loc.slice(at + 1);
      // a discriminated union names the member it tried ("audit", "scan", …) before the field
      if (rest.length > 1 && !(rest[0] in SPEC_FIELDS) && rest[0] !== "attack" && rest[0] !== "image_set_ids") rest = rest.slice(1);
      const key = rest[0];
      if (key === "attack") field = rest[1] ? ATTACK_FIELDS[rest[1]] : "kind";
      else if (key === "image_set_ids") field = rest[1] === "1" ? "val_set_id" : "train_set_id";
      else if (key) field = SPEC_FIELDS[key];
    }
    const msg = it.msg.replace(/^Value error, /, "");
    if (field) fields[field] = fields[field] ? `${fields[field]}; ${msg}` : msg;
    else form.push(loc.length ? `${loc.filter((p) => p !== "body").join(".")}: ${msg}` : msg);
  }
  return { fields, form };
}
