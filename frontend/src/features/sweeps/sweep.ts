// The sweep launch form (kind `sweep`, backend/fvaudit/jobs/kinds/sweep.py): its state,
// its defaults (the registry's `defaults` and `spec_schema`, never numbers written here),
// client-side checks, the spec it sends, and the server's 422 `loc` mapped back onto the
// field that made it, grid values included (`spec.grid.1.values.2` is the third rate).
//
// What a sweep is: every point starts from `base` (a model, prune parameters, an attack);
// the grid sets dotted fields of it to each combination of its axes' values (here: the
// pruning methods × the rates, and optionally one point per layer); with `baseline` the
// unpruned model is point 0. Each point is audited by every attack in `attacks`.
import type { ValidationItem } from "../../api/client";
import type { JobKind } from "../../api/contract";
import type { LaunchBody } from "../../api/queries";
import { choicesOf, floatError, intError, maxLengthOf, parseFloatStrict, rangeOf, type Range } from "../../lib/specSchema";

/** An attack every point of a sweep runs: a choice of the sweep spec's `attacks` (`sweepAttacks`). */
export type SweepAttack = string;

export type SweepForm = {
  name: string;
  model_id: string;
  train_set_id: string;
  val_set_id: string;
  layers: string[];
  /** one point per layer (a grid axis over attack.layers) instead of all layers in each attack */
  perLayer: boolean;
  attacks: SweepAttack[];
  /** push-up decoy: a class index of the training set */
  decoy_class: string;
  baseline: boolean;
  prune: boolean;
  methods: string[];
  /** "0.25, 0.5": fractions in (0, 1) */
  rates: string;
  ft_steps: string;
  ft_lr: string;
  ft_batch_size: string;
  ft_train_limit: string;
  k: string;
  steps: string;
  lr: string;
  batch_size: string;
  eval_every: string;
  eval_size: string;
  acc_budget_pp: string;
  k_clip: string;
  embedder: string;
  scan_batch_size: string;
  control: boolean;
  visualize: boolean;
};

export type SweepField =
  | "name" | "model_id" | "train_set_id" | "val_set_id" | "layers" | "attacks" | "decoy_class" | "baseline" | "methods"
  | "rates" | "points" | "ft_steps" | "ft_lr" | "ft_batch_size" | "ft_train_limit" | "k" | "steps" | "lr" | "batch_size"
  | "eval_every" | "eval_size" | "acc_budget_pp" | "k_clip" | "embedder" | "scan_batch_size" | "control" | "visualize";

export type SweepErrors = Partial<Record<SweepField, string>>;

/** The fields in the order the form shows them (the first with an error takes focus). */
export const SWEEP_FIELD_ORDER: SweepField[] = [
  "name", "model_id", "train_set_id", "val_set_id", "layers", "attacks", "decoy_class", "baseline", "methods", "rates",
  "points", "ft_steps", "ft_lr", "ft_batch_size", "ft_train_limit", "k", "steps", "lr", "batch_size", "eval_every",
  "eval_size", "acc_budget_pp", "k_clip", "embedder", "scan_batch_size", "control", "visualize",
];

export const SWEEP_BLANK: SweepForm = {
  name: "", model_id: "", train_set_id: "", val_set_id: "", layers: [], perLayer: false, attacks: ["push_down", "push_up"],
  decoy_class: "", baseline: true, prune: true, methods: [], rates: "", ft_steps: "", ft_lr: "", ft_batch_size: "",
  ft_train_limit: "", k: "", steps: "", lr: "", batch_size: "", eval_every: "", eval_size: "", acc_budget_pp: "",
  k_clip: "", embedder: "", scan_batch_size: "", control: false, visualize: false,
};

/** At most this many points (the server's MAX_POINTS; its 422 says so too). */
export const MAX_POINTS = 64;

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});
const str = (v: unknown): string | undefined => (typeof v === "number" ? String(v) : typeof v === "string" ? v : undefined);

/** A `$defs` entry of the sweep's JSON schema (PruneParams, FinetuneParams, …). */
function def(kind: JobKind | undefined, name: string): Json {
  return obj(obj(obj(kind?.spec_schema).$defs)[name]);
}

/** The pruning methods the schema allows (PruneParams.method's enum), in its order. */
export function pruneMethods(kind: JobKind | undefined): string[] {
  const method = obj(obj(def(kind, "PruneParams").properties).method);
  const e = method.enum ?? obj(method).anyOf;
  return Array.isArray(e) && e.every((x) => typeof x === "string") ? (e as string[]) : [];
}

export const METHOD_TEXT: Record<string, string> = {
  norm: "norm (smallest weights zeroed)",
  oto_filter: "OTO filter (whole filters)",
  oto_weight: "OTO weight",
  vulnerability: "vulnerability (the channels the baseline push-down moved most)",
};

/** The sweep kind's defaults as form strings: `defaults` for base.attack and the top level, the schema for the fine-tune. */
export function sweepDefaults(kind: JobKind | undefined): Partial<SweepForm> {
  const d = obj(kind?.defaults);
  const attack = obj(obj(d.base).attack);
  const ft = obj(def(kind, "FinetuneParams").properties);
  const ftDefault = (k: string) => str(obj(ft[k]).default);
  const methods = pruneMethods(kind);
  const methodDefault = str(obj(obj(def(kind, "PruneParams").properties).method).default);
  const out: Partial<SweepForm> = {};
  const set = <K extends keyof SweepForm>(k: K, v: SweepForm[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  for (const k of ["k", "steps", "lr", "batch_size", "eval_every", "eval_size", "acc_budget_pp"] as const) set(k, str(attack[k]));
  set("k_clip", str(d.k_clip));
  set("embedder", str(d.embedder));
  set("scan_batch_size", str(d.scan_batch_size));
  if (typeof d.control === "boolean") out.control = d.control;
  if (typeof d.visualize === "boolean") out.visualize = d.visualize;
  if (typeof d.baseline === "boolean") out.baseline = d.baseline;
  if (Array.isArray(d.attacks)) out.attacks = d.attacks.filter((a): a is SweepAttack => typeof a === "string");
  set("ft_steps", ftDefault("steps"));
  set("ft_lr", ftDefault("lr"));
  set("ft_batch_size", ftDefault("batch_size"));
  set("ft_train_limit", ftDefault("train_limit"));
  if (methodDefault && methods.includes(methodDefault)) out.methods = [methodDefault];
  return out;
}

/** "0.25, 0.5" → [0.25, 0.5]; throws with the reason. */
export function parseRates(text: string): number[] {
  const parts = text.split(/[\s,;]+/).filter(Boolean);
  if (!parts.length) throw new Error("give at least one rate, e.g. 0.25, 0.5");
  const out = parts.map((p) => {
    const v = parseFloatStrict(p);
    if (v == null) throw new Error(`“${p}” is not a number (rates are fractions, e.g. 0.5 for 50 %)`);
    if (!(v > 0 && v < 1)) throw new Error(`rate ${p} is not strictly between 0 and 1`);
    return v;
  });
  if (new Set(out).size !== out.length) throw new Error("a rate is listed twice");
  return out;
}

/** The grid's axes as the request sends them (field, values), in order. */
export function gridOf(f: SweepForm): { field: string; values: unknown[] }[] {
  const grid: { field: string; values: unknown[] }[] = [];
  if (f.prune) {
    grid.push({ field: "prune.method", values: [...f.methods] });
    let rates: number[] = [];
    try {
      rates = parseRates(f.rates);
    } catch {
      /* validate() reports it */
    }
    grid.push({ field: "prune.rate", values: rates });
  }
  if (f.perLayer && f.layers.length > 1) grid.push({ field: "attack.layers", values: f.layers.map((l) => [l]) });
  return grid;
}

/**
 * Points of the sweep, as the server plans them: the baseline (when pruning, the unpruned
 * model first) plus every combination of the axes' values (no axis: the base once).
 */
export function pointCount(f: SweepForm): number {
  const combos = gridOf(f).reduce((n, a) => n * a.values.length, 1);
  return combos + (baselineOf(f) ? 1 : 0);
}

/** Without pruning the base point is the unpruned model already: no separate baseline. */
export const baselineOf = (f: SweepForm) => f.prune && f.baseline;

/** The attacks a sweep can run (its spec's `attacks` choices); without a registry, the form's own. */
export function sweepAttacks(kind: JobKind | undefined): SweepAttack[] {
  const offered = choicesOf(kind?.spec_schema, ["attacks"]);
  return offered.length ? offered : SWEEP_BLANK.attacks;
}

/** A number too large for the sweep form: "at most N". */
const atMost = (what: string) => (_lo: number, hi: number) => `${what} must be at most ${hi.toLocaleString("en")}`;

/** The form's own checks; the bounds of its numbers are the sweep spec's (`kind.spec_schema`). */
export function validateSweep(f: SweepForm, kind?: JobKind): SweepErrors {
  const e: SweepErrors = {};
  const schema = kind?.spec_schema;
  const int = (s: string, what: string, ...at: string[]) => intError(s, rangeOf(schema, at), what, { over: atMost(what) });
  const ft = (field: string) => rangeOf(schema, ["base", "prune", "finetune", field]);
  const ofAttack = (field: string) => rangeOf(schema, ["base", "attack", field]);
  const lrText = (what: string) => (r: Range) => `${what} must be > ${r.lo} and ≤ ${r.hi}`;
  const maxName = maxLengthOf(schema, ["name"]);
  if (f.name.length > maxName) e.name = `at most ${maxName} characters`;
  if (!f.model_id) e.model_id = "choose a model";
  if (!f.train_set_id) e.train_set_id = "choose the training image set";
  if (!f.val_set_id) e.val_set_id = "choose the validation image set";
  if (!f.layers.length) e.layers = f.model_id ? "choose at least one layer to attack" : "choose a model first";
  if (!f.attacks.length) e.attacks = "choose at least one attack";
  if (f.attacks.includes("push_up") && f.decoy_class === "") e.decoy_class = "push-up needs a decoy class";
  if (f.prune) {
    if (!f.methods.length) e.methods = "choose at least one pruning method (or untick pruning)";
    try {
      parseRates(f.rates);
    } catch (err) {
      e.rates = (err as Error).message;
    }
    e.ft_steps = int(f.ft_steps, "fine-tune steps", "base", "prune", "finetune", "steps");
    e.ft_lr = floatError(f.ft_lr, ft("lr"), lrText("the fine-tune learning rate"));
    e.ft_batch_size = int(f.ft_batch_size, "fine-tune batch size", "base", "prune", "finetune", "batch_size");
    e.ft_train_limit = int(f.ft_train_limit, "the fine-tune image limit", "base", "prune", "finetune", "train_limit");
  }
  const n = pointCount(f);
  if (!e.methods && !e.rates && n > MAX_POINTS) e.points = `the grid has ${n} points; at most ${MAX_POINTS}`;
  e.k = int(f.k, "k", "base", "attack", "k");
  e.steps = int(f.steps, "steps", "base", "attack", "steps");
  e.lr = floatError(f.lr, ofAttack("lr"), lrText("the learning rate"));
  e.batch_size = int(f.batch_size, "batch size", "base", "attack", "batch_size");
  e.eval_every = int(f.eval_every, "evaluation interval", "base", "attack", "eval_every");
  e.eval_size = int(f.eval_size, "evaluation subset size", "base", "attack", "eval_size");
  e.acc_budget_pp = floatError(f.acc_budget_pp, ofAttack("acc_budget_pp"), (r) => `the accuracy budget is ${r.lo}–${r.hi} percentage points`);
  e.k_clip = int(f.k_clip, "k for CLIP", "k_clip");
  e.scan_batch_size = int(f.scan_batch_size, "scan batch size", "scan_batch_size");
  for (const k of Object.keys(e) as SweepField[]) if (!e[k]) delete e[k];
  return e;
}

function present(o: Json): Json {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
const optNum = (s: string) => (s.trim() ? Number(s) : undefined);
const optStr = (s: string) => (s.trim() ? s.trim() : undefined);

/** The POST /jobs body of a valid form. Empty optional fields are left out: the server applies its defaults. */
export function buildSweepRequest(f: SweepForm): LaunchBody {
  const grid = gridOf(f);
  const rates = f.prune ? parseRates(f.rates) : [];
  const pushUp = f.attacks.includes("push_up");
  return {
    kind: "sweep",
    spec: present({
      name: optStr(f.name),
      train_set_id: Number(f.train_set_id),
      val_set_id: Number(f.val_set_id),
      base: {
        model_id: Number(f.model_id),
        // the grid sets method and rate per point; base holds the first of each (the server needs a prune object to sweep its fields)
        prune: f.prune
          ? present({
              method: f.methods[0],
              rate: rates[0],
              finetune: present({
                steps: optNum(f.ft_steps),
                lr: optNum(f.ft_lr),
                batch_size: optNum(f.ft_batch_size),
                train_limit: optNum(f.ft_train_limit),
              }),
            })
          : null,
        attack: present({
          layers: f.perLayer && f.layers.length > 1 ? [f.layers[0]] : [...f.layers],
          k: optNum(f.k),
          steps: optNum(f.steps),
          lr: optNum(f.lr),
          batch_size: optNum(f.batch_size),
          eval_every: optNum(f.eval_every),
          eval_size: optNum(f.eval_size),
          acc_budget_pp: optNum(f.acc_budget_pp),
        }),
      },
      grid,
      baseline: baselineOf(f),
      attacks: [...f.attacks],
      decoy_class: pushUp ? Number(f.decoy_class) : null,
      k_clip: optNum(f.k_clip),
      embedder: optStr(f.embedder),
      scan_batch_size: optNum(f.scan_batch_size),
      control: f.control,
      visualize: f.visualize,
    }),
  };
}

const TOP: Record<string, SweepField> = {
  name: "name", train_set_id: "train_set_id", val_set_id: "val_set_id", baseline: "baseline", attacks: "attacks",
  decoy_class: "decoy_class", k_clip: "k_clip", embedder: "embedder", scan_batch_size: "scan_batch_size",
  control: "control", visualize: "visualize", grid: "points",
};
const ATTACK: Record<string, SweepField> = {
  layers: "layers", k: "k", steps: "steps", lr: "lr", batch_size: "batch_size", eval_every: "eval_every",
  eval_size: "eval_size", acc_budget_pp: "acc_budget_pp", decoy_class: "decoy_class", decoy_ids: "decoy_class",
};
const FINETUNE: Record<string, SweepField> = { steps: "ft_steps", lr: "ft_lr", batch_size: "ft_batch_size", train_limit: "ft_train_limit" };
const AXIS: Record<string, SweepField> = { "prune.method": "methods", "prune.rate": "rates", "attack.layers": "layers" };

/** A field of base (`["prune", "rate"]`, `["attack", "steps"]`, `["model_id"]`) → the form's field. */
function baseField(rest: string[]): SweepField | undefined {
  const [a, b, c] = rest;
  if (a === "model_id") return "model_id";
  if (a === "attack") return b ? ATTACK[b] : "layers";
  if (a === "prune") {
    if (b === "method") return "methods";
    if (b === "rate") return "rates";
    if (b === "finetune") return c ? FINETUNE[c] : "ft_steps";
    return "methods";
  }
  return undefined;
}

/**
 * The server's 422 items onto the form's fields. A grid value names its axis and index
 * (`["body", "spec", "grid", 1, "values", 2]` with the grid sent): it lands on that axis'
 * field (rates, methods, layers) with the value it refused in words.
 */
export function mapSweepErrors(items: ValidationItem[], grid: { field: string; values: unknown[] }[] = []): { fields: SweepErrors; form: string[] } {
  const fields: SweepErrors = {};
  const form: string[] = [];
  for (const it of items) {
    const loc = (it.loc ?? []).map(String);
    const at = loc.indexOf("spec");
    let rest = at < 0 ? [] : loc.slice(at + 1);
    // a union of job bodies may name the member it tried ("sweep") before the field
    if (rest.length > 1 && !(rest[0] in TOP) && rest[0] !== "base") rest = rest.slice(1);
    let msg = it.msg.replace(/^Value error, /, "");
    let field: SweepField | undefined;
    if (rest[0] === "base") field = baseField(rest.slice(1));
    else if (rest[0] === "grid" && /^\d+$/.test(rest[1] ?? "")) {
      const axis = grid[Number(rest[1])];
      field = axis ? (AXIS[axis.field] ?? "points") : "points";
      if (axis && rest[2] === "values" && /^\d+$/.test(rest[3] ?? "")) {
        const v = axis.values[Number(rest[3])];
        const what = axis.field === "prune.rate" ? "rate" : axis.field === "prune.method" ? "method" : "layer";
        if (v !== undefined) msg = `${what} ${Array.isArray(v) ? v.join("+") : String(v)}: ${msg}`;
        // a value's own field (a fine-tune setting under a swept "prune") lands where base's would
        const deeper = baseField([...axis.field.split("."), ...rest.slice(4)]);
        if (rest.length > 4 && deeper) field = deeper;
      }
    } else if (rest[0]) field = TOP[rest[0]];
    if (field) fields[field] = fields[field] ? `${fields[field]}; ${msg}` : msg;
    else form.push(loc.length ? `${loc.filter((p) => p !== "body").join(".")}: ${msg}` : msg);
  }
  return { fields, form };
}
