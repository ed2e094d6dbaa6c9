import { describe, expect, it } from "vitest";
import layers from "../test/fixtures/layers.json";
import sets from "../test/fixtures/image-sets.json";
import type { ImageSetOut, LayerOut } from "../api/client";
import { buildRequest, DEFAULTS, mapServerErrors, parseUnits, validate, type LaunchForm } from "./launch";

const relu3 = (layers as LayerOut[]).find((l) => l.name === "relu3")!;
const train = (sets as ImageSetOut[])[0];
const val = (sets as ImageSetOut[])[1];
const ctx = { layer: relu3, train, val };
const valid: LaunchForm = { ...DEFAULTS, model_id: "1", layer: "relu3", train_set_id: String(train.id), val_set_id: String(val.id) };

describe("parseUnits", () => {
  it("reads lists and ranges", () => {
    expect(parseUnits("0, 3 10-12;5")).toEqual([0, 3, 10, 11, 12, 5]);
  });
  it("names what is wrong", () => {
    expect(() => parseUnits("")).toThrow(/at least one unit/);
    expect(() => parseUnits("3, x")).toThrow(/“x” is not a unit index/);
    expect(() => parseUnits("12-10")).toThrow(/runs backwards/);
    expect(() => parseUnits("1, 2, 1")).toThrow(/unit 1 is listed twice/);
    expect(() => parseUnits("0, 128", 128)).toThrow("unit 128 is out of range: the layer has 128 units (0–127)");
  });
});

describe("validate", () => {
  it("accepts the defaults on a real layer and image sets", () => {
    expect(validate(valid, ctx)).toEqual({});
  });
  it("asks for the model, layer and image sets", () => {
    const e = validate({ ...DEFAULTS }, {});
    expect(e.model_id).toBe("choose a model");
    expect(e.layer).toBe("choose a model first");
    expect(e.train_set_id).toMatch(/training/);
    expect(e.val_set_id).toMatch(/validation/);
  });
  it("checks numbers and ranges field by field", () => {
    const e = validate({ ...valid, k: "0", lr: "fast", steps: "1.5", batch_size: "9000", seed: "-1", alphaMode: "fixed", alpha: "1.5", k_clip: "0", acc_budget_pp: "200" }, ctx);
    expect(e.k).toBe("k must be between 1 and 1,000");
    expect(e.lr).toMatch(/must be a number/);
    expect(e.steps).toBe("steps must be a whole number");
    expect(e.batch_size).toBe("batch size must be between 1 and 8,192");
    expect(e.seed).toBe("seed must be a whole number");
    expect(e.alpha).toBe("α must be between 0 and 1");
    expect(e.k_clip).toMatch(/k for CLIP must be between 1 and 100/);
    expect(e.acc_budget_pp).toMatch(/0–100/);
  });
  it("accepts scientific notation for the learning rate and a fixed α in [0, 1]", () => {
    expect(validate({ ...valid, lr: "1e-5", alphaMode: "fixed", alpha: "0.25" }, ctx)).toEqual({});
  });
  it("bounds k by the training set and units by the layer", () => {
    const small = { ...train, size: 8 };
    expect(validate({ ...valid, k: "10" }, { ...ctx, train: small }).k).toBe("k must be between 1 and 8");
    expect(validate({ ...valid, unitsMode: "one", unitOne: "128" }, ctx).units).toMatch(/out of range: the layer has 128 units/);
    expect(validate({ ...valid, unitsMode: "several", unitsSeveral: "1-3, 2" }, ctx).units).toBe("unit 2 is listed twice");
  });
  it("needs a decoy for a push-up", () => {
    expect(validate({ ...valid, kind: "push_up" }, ctx).decoy).toBe("pick a decoy class");
    expect(validate({ ...valid, kind: "push_up", decoyMode: "images" }, ctx).decoy).toBe("pick at least one decoy image");
    expect(validate({ ...valid, kind: "push_up", decoy_class: "8" }, ctx)).toEqual({});
  });
  it("ignores the attack fields for a scan, but wants two different sets", () => {
    expect(validate({ ...valid, kind: "scan", lr: "x", steps: "" }, ctx)).toEqual({});
    expect(validate({ ...valid, kind: "scan", val_set_id: valid.train_set_id }, ctx).val_set_id).toMatch(/different/);
  });
});

describe("buildRequest", () => {
  it("sends an audit spec the API accepts", () => {
    const body = buildRequest({ ...valid, name: " conv3 ", unitsMode: "several", unitsSeveral: "0-2, 7", steps: "30" });
    expect(body).toEqual({
      kind: "audit",
      spec: {
        name: "conv3",
        model_id: 1,
        train_set_id: train.id,
        val_set_id: val.id,
        attack: {
          kind: "push_down", layer: "relu3", units: [0, 1, 2, 7], k: 10, alpha: null, lr: 0.0001, steps: 30, batch_size: 256,
          seed: 0, score_norm: "batch_mean", eval_every: 25, acc_budget_pp: 0.5, decoy_class: null, decoy_ids: null,
        },
        k_clip: 5,
        embedder: "auto",
      },
    });
  });
  it("push-up: a class or chosen images; finetune: α = 0; scan: both sets", () => {
    const up = buildRequest({ ...valid, kind: "push_up", decoy_class: "8" });
    expect(up.kind === "audit" && up.spec.attack.decoy_class).toBe(8);
    const ids = buildRequest({ ...valid, kind: "push_up", decoyMode: "images", decoy_ids: [4, 9] });
    expect(ids.kind === "audit" && [ids.spec.attack.decoy_ids, ids.spec.attack.decoy_class]).toEqual([[4, 9], null]);
    const ft = buildRequest({ ...valid, kind: "finetune", alphaMode: "fixed", alpha: "0.7" });
    expect(ft.kind === "audit" && ft.spec.attack.alpha).toBe(0);
    expect(buildRequest({ ...valid, kind: "scan", k: "20" })).toEqual({
      kind: "scan", spec: { model_id: 1, image_set_ids: [train.id, val.id], layers: ["relu3"], k: 20 },
    });
  });
});

describe("mapServerErrors", () => {
  it("puts each 422 item on the field its loc names", () => {
    const { fields, form } = mapServerErrors([
      { loc: ["body", "spec", "attack", "units", 0], msg: "unit index 500 out of range", type: "value_error" },
      { loc: ["body", "spec", "attack", "alpha"], msg: "Value error, a finetune baseline has alpha = 0 (or null)", type: "value_error" },
      { loc: ["body", "spec", "embedder"], msg: "unknown embedder 'x'", type: "value_error" },
      { loc: ["body", "spec", "attack", "decoy_class"], msg: "class index 12 out of range", type: "value_error" },
      { loc: ["body", "spec", "image_set_ids", 1], msg: "unknown image set id 9", type: "value_error" },
      { loc: ["body", "spec", "layers", 0], msg: "unknown layer", type: "value_error" },
      { loc: ["body", "spec", "wat"], msg: "Extra inputs are not permitted", type: "extra_forbidden" },
    ]);
    expect(fields).toEqual({
      units: "unit index 500 out of range",
      alpha: "a finetune baseline has alpha = 0 (or null)",
      embedder: "unknown embedder 'x'",
      decoy: "class index 12 out of range",
      val_set_id: "unknown image set id 9",
      layer: "unknown layer",
    });
    expect(form).toEqual(["spec.wat: Extra inputs are not permitted"]);
  });
});
