// The sweep form's rules: the registry's defaults, the point count the server will plan, the
// spec it sends, and a 422's loc (grid values included) mapped back onto the form's fields.
import { describe, expect, it } from "vitest";
import type { JobKind } from "../../api/contract";
import sweepKind from "../../test/fixtures/job-kind-sweep.json";
import { buildSweepRequest, mapSweepErrors, parseRates, pointCount, pruneMethods, SWEEP_BLANK, sweepDefaults, validateSweep, type SweepForm } from "./sweep";

const kind = sweepKind as unknown as JobKind;
const form = (o: Partial<SweepForm> = {}): SweepForm => ({
  ...SWEEP_BLANK, ...sweepDefaults(kind), model_id: "1", train_set_id: "1", val_set_id: "2", layers: ["relu3"], decoy_class: "8",
  methods: ["norm", "vulnerability"], rates: "0.25, 0.5", ...o,
});

describe("sweep form", () => {
  it("reads its defaults and methods from the registry (defaults and spec_schema)", () => {
    expect(pruneMethods(kind)).toEqual(["norm", "oto_filter", "oto_weight", "vulnerability"]);
    expect(sweepDefaults(kind)).toMatchObject({
      k: "10", steps: "1500", lr: "0.0003", batch_size: "128", eval_every: "100", eval_size: "10000", acc_budget_pp: "0.5",
      k_clip: "5", embedder: "auto", scan_batch_size: "256", control: false, visualize: false, baseline: true,
      attacks: ["push_down", "push_up"], ft_steps: "200", ft_lr: "0.0001", ft_batch_size: "64", methods: ["norm"],
    });
    expect(sweepDefaults(kind).ft_train_limit).toBeUndefined(); // null in the schema: all images
  });

  it("counts points as the server plans them: baseline + methods × rates (× layers)", () => {
    expect(pointCount(form())).toBe(5);
    expect(pointCount(form({ baseline: false }))).toBe(4);
    expect(pointCount(form({ layers: ["relu2", "relu3"], perLayer: true }))).toBe(9);
    // no pruning: the base model once (it is the unpruned model: no separate baseline), or once per layer
    expect(pointCount(form({ prune: false }))).toBe(1);
    expect(pointCount(form({ prune: false, layers: ["relu1", "relu2", "relu3"], perLayer: true }))).toBe(3);
  });

  it("checks rates, methods, the decoy and the grid size before sending", () => {
    expect(parseRates(" 0.1,0.2 ;0.3")).toEqual([0.1, 0.2, 0.3]);
    expect(() => parseRates("0.5, 1")).toThrow("rate 1 is not strictly between 0 and 1");
    expect(() => parseRates("50%")).toThrow("“50%” is not a number");
    expect(validateSweep(form())).toEqual({});
    expect(validateSweep(form({ methods: [], rates: "", decoy_class: "", steps: "1.5", attacks: ["push_up"] }))).toEqual({
      methods: "choose at least one pruning method (or untick pruning)",
      rates: "give at least one rate, e.g. 0.25, 0.5",
      decoy_class: "push-up needs a decoy class",
      steps: "steps must be a whole number",
    });
    const rates = Array.from({ length: 33 }, (_, i) => ((i + 1) / 100).toFixed(2)).join(",");
    expect(validateSweep(form({ rates })).points).toBe("the grid has 67 points; at most 64");
  });

  it("sends the grid over methods and rates, base holding the first of each", () => {
    const body = buildSweepRequest(form({ name: " norm vs vulnerability ", ft_train_limit: "300", steps: "10" }));
    expect(body).toEqual({
      kind: "sweep",
      spec: {
        name: "norm vs vulnerability", train_set_id: 1, val_set_id: 2,
        base: {
          model_id: 1,
          prune: { method: "norm", rate: 0.25, finetune: { steps: 200, lr: 0.0001, batch_size: 64, train_limit: 300 } },
          attack: { layers: ["relu3"], k: 10, steps: 10, lr: 0.0003, batch_size: 128, eval_every: 100, eval_size: 10000, acc_budget_pp: 0.5 },
        },
        grid: [{ field: "prune.method", values: ["norm", "vulnerability"] }, { field: "prune.rate", values: [0.25, 0.5] }],
        baseline: true, attacks: ["push_down", "push_up"], decoy_class: 8, k_clip: 5, embedder: "auto", scan_batch_size: 256,
        control: false, visualize: false,
      },
    });
    const plain = buildSweepRequest(form({ prune: false, attacks: ["push_down"], layers: ["relu2", "relu3"], perLayer: true }));
    expect(plain.spec).toMatchObject({
      base: { prune: null, attack: { layers: ["relu2"] } }, grid: [{ field: "attack.layers", values: [["relu2"], ["relu3"]] }],
      baseline: false, attacks: ["push_down"], decoy_class: null,
    });
  });

  it("maps a 422's loc onto the field, a grid value onto its axis with the value named", () => {
    const grid = buildSweepRequest(form()).spec.grid as { field: string; values: unknown[] }[];
    const m = mapSweepErrors([
      { loc: ["body", "spec", "grid", 1, "values", 1], msg: "Input should be less than 1", type: "less_than" },
      { loc: ["body", "spec", "grid", 0, "values", 1], msg: "Value error, vulnerability pruning needs the baseline push-down", type: "value_error" },
      { loc: ["body", "spec", "base", "attack", "steps"], msg: "Input should be greater than 0", type: "greater_than" },
      { loc: ["body", "spec", "base", "prune", "finetune", "train_limit"], msg: "too large", type: "x" },
      { loc: ["body", "spec", "base", "model_id"], msg: "model 7 is pending: its prune step has not run", type: "x" },
      { loc: ["body", "spec", "decoy_class"], msg: "no class 'Bags' in the training set", type: "x" },
      { loc: ["body", "spec", "grid"], msg: "Value error, the grid has 80 points; at most 64", type: "value_error" },
      { loc: ["body", "spec", "sweep", "embedder"], msg: "unknown embedder 'x'", type: "x" },
      { loc: ["body", "kind"], msg: "unknown job kind", type: "x" },
    ], grid);
    expect(m.fields).toEqual({
      rates: "rate 0.5: Input should be less than 1",
      methods: "method vulnerability: vulnerability pruning needs the baseline push-down",
      steps: "Input should be greater than 0",
      ft_train_limit: "too large",
      model_id: "model 7 is pending: its prune step has not run",
      decoy_class: "no class 'Bags' in the training set",
      points: "the grid has 80 points; at most 64",
      embedder: "unknown embedder 'x'",
    });
    expect(m.form).toEqual(["kind: unknown job kind"]);
  });
});
