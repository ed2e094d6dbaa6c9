// The launch form: its state, client-side validation, the request it sends, and the
// mapping of the server's 422 `detail[].loc` back onto the form's fields.
import type { ImageSetOut, LayerOut, ValidationItem } from "../api/client";
import type { LaunchBody } from "../api/hooks";

export type LaunchKind = "scan" | "push_down" | "push_up" | "finetune";

export type LaunchForm = {
  kind: LaunchKind;
  name: string;
  model_id: string;
  layer: string;
  train_set_id: string;
  val_set_id: string;
  unitsMode: "all" | "one" | "several";
  unitOne: string;
  unitsSeveral: string;
  k: string;
  alphaMode: "dynamic" | "fixed";
  alpha: string;
  lr: string;
  steps: string;
  batch_size: string;
  seed: string;
  score_norm: "batch_mean" | "init_mean" | "none";
  decoyMode: "class" | "images";
  decoy_class: string;
  decoy_ids: number[];
  k_clip: string;
  eval_every: string;
  acc_budget_pp: string;
  embedder: string;
};

export type Field =
  | "name" | "model_id" | "layer" | "train_set_id" | "val_set_id" | "units" | "k" | "alpha" | "lr" | "steps"
  | "batch_size" | "seed" | "score_norm" | "decoy" | "k_clip" | "eval_every" | "acc_budget_pp" | "embedder" | "kind";

export type Errors = Partial<Record<Field, string>>;

export const DEFAULTS: LaunchForm = {
  kind: "push_down",
  name: "",
  model_id: "",
  layer: "",
  train_set_id: "",
  val_set_id: "",
  unitsMode: "all",
  unitOne: "0",
  unitsSeveral: "",
  k: "10",
  alphaMode: "dynamic",
  alpha: "0.5",
  lr: "0.0001",
  steps: "200",
  batch_size: "256",
  seed: "0",
  score_norm: "batch_mean",
  decoyMode: "class",
  decoy_class: "",
  decoy_ids: [],
  k_clip: "5",
  eval_every: "25",
  acc_budget_pp: "0.5",
  embedder: "auto",
};

export type LaunchContext = {
  layer?: LayerOut | null;
  train?: ImageSetOut | null;
  val?: ImageSetOut | null;
};

const INT = /^\s*\d+\s*$/;
const FLOAT = /^\s*[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;

export function parseIntStrict(s: string): number | null {
  return INT.test(s) ? Number.parseInt(s, 10) : null;
}

export function parseFloatStrict(s: string): number | null {
  return FLOAT.test(s) ? Number.parseFloat(s) : null;
}

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

function intIn(s: string, lo: number, hi: number, what: string): string | undefined {
  const v = parseIntStrict(s);
  if (v == null) return `${what} must be a whole number`;
  if (v < lo || v > hi) return `${what} must be between ${lo} and ${hi.toLocaleString("en")}`;
  return undefined;
}

export function validate(f: LaunchForm, ctx: LaunchContext = {}): Errors {
  const e: Errors = {};
  const attack = f.kind !== "scan";
  if (f.name.length > 200) e.name = "at most 200 characters";
  if (!f.model_id) e.model_id = "choose a model";
  if (!f.layer) e.layer = f.model_id ? "choose a layer" : "choose a model first";
  if (!f.train_set_id) e.train_set_id = "choose the training image set";
  if (!f.val_set_id) e.val_set_id = "choose the validation image set";
  else if (!attack && f.val_set_id === f.train_set_id) e.val_set_id = "scan two different image sets (or only one: pick it as training set)";

  const kMax = Math.min(1000, ctx.train?.size ?? 1000, !attack && ctx.val ? ctx.val.size : Infinity);
  e.k = intIn(f.k, 1, kMax, "k");
  if (!e.k && ctx.train && parseIntStrict(f.k)! > ctx.train.size) e.k = `k is larger than the training set (${ctx.train.size} images)`;

  if (!attack) return strip(e);

  const nUnits = ctx.layer?.units;
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

  if (f.kind === "finetune") {
    // the baseline's α is 0 by definition
  } else if (f.alphaMode === "fixed") {
    const a = parseFloatStrict(f.alpha);
    if (a == null) e.alpha = "α must be a number";
    else if (a < 0 || a > 1) e.alpha = "α must be between 0 and 1";
  }
  const lr = parseFloatStrict(f.lr);
  if (lr == null) e.lr = "the learning rate must be a number, e.g. 1e-4";
  else if (lr <= 0 || lr > 10) e.lr = "the learning rate must be > 0 and ≤ 10";
  e.steps = intIn(f.steps, 1, 10_000_000, "steps");
  e.batch_size = intIn(f.batch_size, 1, 8192, "batch size");
  e.seed = intIn(f.seed, 0, 2 ** 31 - 1, "seed");
  e.eval_every = intIn(f.eval_every, 1, 1_000_000, "evaluation interval");
  const budget = parseFloatStrict(f.acc_budget_pp);
  if (budget == null || budget < 0 || budget > 100) e.acc_budget_pp = "the accuracy budget is 0–100 percentage points";
  e.k_clip = intIn(f.k_clip, 1, Math.min(100, ctx.val?.size ?? 100), "k for CLIP");
  if (!e.k_clip && ctx.val && parseIntStrict(f.k_clip)! > ctx.val.size) e.k_clip = `larger than the validation set`;
  if (!f.embedder.trim()) e.embedder = "auto, none, efficientnet-lite0 or open_clip:<model>:<tag>";

  if (f.kind === "push_up") {
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
  if (f.unitsMode === "all") return null;
  if (f.unitsMode === "one") return [parseIntStrict(f.unitOne)!];
  return parseUnits(f.unitsSeveral);
}

/** The POST /jobs body for a valid form. */
export function buildRequest(f: LaunchForm): LaunchBody {
  const name = f.name.trim() || undefined;
  if (f.kind === "scan") {
    const ids = [Number(f.train_set_id)];
    if (f.val_set_id && f.val_set_id !== f.train_set_id) ids.push(Number(f.val_set_id));
    return {
      kind: "scan",
      spec: { model_id: Number(f.model_id), image_set_ids: ids, layers: [f.layer], k: parseIntStrict(f.k)! },
    };
  }
  const push_up = f.kind === "push_up";
  return {
    kind: "audit",
    spec: {
      name,
      model_id: Number(f.model_id),
      train_set_id: Number(f.train_set_id),
      val_set_id: Number(f.val_set_id),
      attack: {
        kind: f.kind,
        layer: f.layer,
        units: unitsOf(f),
        k: parseIntStrict(f.k)!,
        alpha: f.kind === "finetune" ? 0 : f.alphaMode === "dynamic" ? null : parseFloatStrict(f.alpha)!,
        lr: parseFloatStrict(f.lr)!,
        steps: parseIntStrict(f.steps)!,
        batch_size: parseIntStrict(f.batch_size)!,
        seed: parseIntStrict(f.seed)!,
        score_norm: f.score_norm,
        eval_every: parseIntStrict(f.eval_every)!,
        acc_budget_pp: parseFloatStrict(f.acc_budget_pp)!,
        decoy_class: push_up && f.decoyMode === "class" ? Number(f.decoy_class) : null,
        decoy_ids: push_up && f.decoyMode === "images" ? [...f.decoy_ids] : null,
      },
      k_clip: parseIntStrict(f.k_clip)!,
      embedder: f.embedder.trim(),
    },
  };
}

const ATTACK_FIELDS: Record<string, Field> = {
  kind: "kind", layer: "layer", units: "units", k: "k", alpha: "alpha", alpha_max: "alpha", lr: "lr", steps: "steps",
  batch_size: "batch_size", seed: "seed", score_norm: "score_norm", decoy_class: "decoy", decoy_ids: "decoy",
  n_decoys: "decoy", eval_every: "eval_every", acc_budget_pp: "acc_budget_pp",
};
const SPEC_FIELDS: Record<string, Field> = {
  name: "name", model_id: "model_id", train_set_id: "train_set_id", val_set_id: "val_set_id", k: "k",
  k_clip: "k_clip", embedder: "embedder", layers: "layer",
};

/** Map a 422's `detail` items onto form fields; what names no field is returned in `form`. */
export function mapServerErrors(items: ValidationItem[]): { fields: Errors; form: string[] } {
  const fields: Errors = {};
  const form: string[] = [];
  for (const it of items) {
    const loc = (it.loc ?? []).map(String);
    let i = loc[0] === "body" ? 1 : 0;
    let field: Field | undefined;
    if (loc[i] === "kind") field = "kind";
    else if (loc[i] === "spec") {
      i++;
      const key = loc[i];
      if (key === "attack") field = loc[i + 1] ? ATTACK_FIELDS[loc[i + 1]] : "kind";
      else if (key === "image_set_ids") field = loc[i + 1] === "1" ? "val_set_id" : "train_set_id";
      else if (key) field = SPEC_FIELDS[key];
    }
    const msg = it.msg.replace(/^Value error, /, "");
    if (field) fields[field] = fields[field] ? `${fields[field]}; ${msg}` : msg;
    else form.push(loc.length ? `${loc.filter((p) => p !== "body").join(".")}: ${msg}` : msg);
  }
  return { fields, form };
}
