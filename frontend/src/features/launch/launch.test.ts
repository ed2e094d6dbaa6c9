import { describe, expect, it } from "vitest";
import type { ImageSetOut, LayerOut } from "../../api/client";
import type { JobKind } from "../../api/contract";
import sets from "../../test/fixtures/image-sets.json";
import kinds from "../../test/fixtures/job-kinds.json";
import layers from "../../test/fixtures/layers.json";
import slingshotKinds from "../../test/fixtures/job-kinds-slingshot.json";
import { BLANK, buildRequest, formDefaults, launchKinds, mapServerErrors, parseUnits, validate, type LaunchForm } from "./launch";

const relu3 = (layers as LayerOut[]).find((l) => l.name === "relu3")!;
const train = (sets as ImageSetOut[])[0];
const val = (sets as ImageSetOut[])[1];
const relu2 = (layers as LayerOut[]).find((l) => l.name === "relu2")!;
const ctx = { kinds: kinds as JobKind[], layers: [relu3], train, val };
const DEFAULTS: LaunchForm = { ...BLANK, ...formDefaults(kinds as JobKind[]) };
const valid: LaunchForm = { ...DEFAULTS, model_id: "1", layers: ["relu3"], train_set_id: String(train.id), val_set_id: String(val.id) };

describe("formDefaults", () => {
  it("reads every number and choice from the registry's audit defaults (ATTACK_DEFAULTS inside)", () => {
    expect(formDefaults(kinds as JobKind[])).toEqual({
      k: "10", lr: "0.0003", lr_schedule: "cosine", steps: "1500", batch_size: "128", seed: "0", score_norm: "batch_mean",
      eval_every: "100", eval_size: "10000", acc_budget_pp: "0.5", alpha_factor: "2", alpha: "0.1", k_clip: "5",
      embedder: "auto", n_synth: "4", synth_steps: "256", synth_objective: "score", visualize: true, control: true,
    });
  });
  it("a scan takes the scan kind's k; a flat defaults object reads the same; no registry: nothing", () => {
    const flat: JobKind[] = [{ kind: "audit", title: "", description: "", runnable: false, chain: true, steps: [], spec_schema: {}, defaults: { lr: 0.002, steps: 7, visualize: false } }];
    expect(formDefaults(flat)).toMatchObject({ lr: "0.002", steps: "7", visualize: false });
    expect(formDefaults(undefined)).toEqual({});
    const scanK = (kinds as JobKind[]).find((k) => k.kind === "scan")!.defaults.k;
    expect(formDefaults(kinds as JobKind[], "scan").k).toBe(String(scanK));
  });
});

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
    expect(e.layers).toBe("choose a model first");
    expect(e.train_set_id).toMatch(/training/);
    expect(e.val_set_id).toMatch(/validation/);
  });
  it("checks numbers and ranges field by field", () => {
    const e = validate({ ...valid, k: "1001", lr: "fast", steps: "1.5", batch_size: "9000", seed: "-1", alphaMode: "fixed", alpha: "1.5", k_clip: "101", acc_budget_pp: "200" }, ctx);
    expect(e.k).toBe("k must be between 1 and 1,000");
    expect(e.lr).toMatch(/must be a number/);
    expect(e.steps).toBe("steps must be a whole number");
    expect(e.batch_size).toBe("batch size must be between 1 and 8,192");
    expect(e.seed).toBe("seed must be ≥ 0");
    expect(e.alpha).toBe("α must be between 0 and 1");
    expect(e.k_clip).toMatch(/k for CLIP must be between 1 and 100/);
    expect(e.acc_budget_pp).toMatch(/0–100/);
  });
  it("accepts scientific notation for the learning rate and a fixed α in [0, 1]", () => {
    expect(validate({ ...valid, lr: "1e-5", alphaMode: "fixed", alpha: "0.25" }, ctx)).toEqual({});
  });
  it("empty optional fields are valid: the server applies its default", () => {
    expect(validate({ ...valid, lr: "", steps: " ", eval_size: "", n_synth: "" }, ctx)).toEqual({});
  });
  it("several layers: units are not asked for (all units of each layer)", () => {
    const two = { ...valid, layers: ["relu2", "relu3"], unitsMode: "one" as const, unitOne: "999" };
    expect(validate(two, { ...ctx, layers: [relu2, relu3] })).toEqual({});
    expect(validate({ ...two, layers: ["relu3"] }, ctx).units).toMatch(/unit 999 is out of range/);
  });
  it("checks the synthetic visualization settings only when it is on", () => {
    expect(validate({ ...valid, n_synth: "65" }, ctx).n_synth).toBe("seeds per unit must be between 1 and 64");
    expect(validate({ ...valid, n_synth: "0", visualize: false }, ctx)).toEqual({});
    expect(validate({ ...valid, eval_size: "-3" }, ctx).eval_size).toBe("evaluation subset size must be ≥ 0");
    expect(validate({ ...valid, alpha_factor: "1" }, ctx).alpha_factor).toMatch(/> 1/);
  });
  it("a negative k is out of range, not malformed (issue 13, item 17)", () => {
    expect(validate({ ...valid, k: "-3" }, ctx).k).toBe("k must be ≥ 1");
    expect(validate({ ...valid, k: "−3" }, ctx).k).toBe("k must be ≥ 1"); // typographic minus
    expect(validate({ ...valid, k: "0" }, ctx).k).toBe("k must be ≥ 1");
    expect(validate({ ...valid, k: "2.5" }, ctx).k).toBe("k must be a whole number");
    expect(validate({ ...valid, k: "1001" }, ctx).k).toBe("k must be between 1 and 1,000");
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
  it("sends the optimizer and the loss that keeps the model (issue 24: an honest fine-tune for a clean family)", () => {
    const body = buildRequest({ ...valid, kind: "finetune", optimizer: "sgd", maintain: "labels", lr: "0.03" }) as unknown as { spec: { attack: Record<string, unknown> } };
    expect(body.spec.attack).toMatchObject({ kind: "finetune", optimizer: "sgd", maintain: "labels", lr: 0.03, alpha: 0 });
    const plain = buildRequest(valid) as unknown as { spec: { attack: Record<string, unknown> } };
    expect(plain.spec.attack).not.toHaveProperty("optimizer");      // blank: the server's default (adam, distill)
    expect(plain.spec.attack).not.toHaveProperty("maintain");
  });
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
          kind: "push_down", layers: ["relu3"], units: [0, 1, 2, 7], k: 10, alpha: null, alpha_factor: 2, lr: 0.0003,
          lr_schedule: "cosine", steps: 30, batch_size: 128, seed: 0, score_norm: "batch_mean", eval_every: 100,
          eval_size: 10000, acc_budget_pp: 0.5, decoy_class: null, decoy_ids: null,
        },
        k_clip: 5,
        embedder: "auto",
        visualize: true,
        n_synth: 4,
        synth_steps: 256,
        synth_objective: "score",
        control: true,
      },
    });
  });
  it("several layers send attack.layers and no units; toggles off leave out their settings; empty fields are left out", () => {
    const body = buildRequest({ ...valid, layers: ["relu2", "relu3"], unitsMode: "one", unitOne: "3", visualize: false, control: false, lr: "", steps: "" });
    const attack = body.spec.attack as Record<string, unknown>;
    expect(attack.layers).toEqual(["relu2", "relu3"]);
    expect(attack.units).toBeNull();
    expect("lr" in attack || "steps" in attack).toBe(false);
    expect(body.spec).toMatchObject({ visualize: false, control: false });
    expect("n_synth" in body.spec || "synth_steps" in body.spec).toBe(false);
  });
  it("push-up: a class or chosen images; finetune: α = 0; scan: both sets", () => {
    const attackOf = (b: ReturnType<typeof buildRequest>) => b.spec.attack as Record<string, unknown>;
    const up = buildRequest({ ...valid, kind: "push_up", decoy_class: "8" });
    expect(attackOf(up).decoy_class).toBe(8);
    const ids = buildRequest({ ...valid, kind: "push_up", decoyMode: "images", decoy_ids: [4, 9] });
    expect([attackOf(ids).decoy_ids, attackOf(ids).decoy_class]).toEqual([[4, 9], null]);
    const ft = buildRequest({ ...valid, kind: "finetune", alphaMode: "fixed", alpha: "0.7" });
    expect(attackOf(ft).alpha).toBe(0);
    expect(ft.spec.control).toBe(false); // the baseline is its own control
    expect(buildRequest({ ...valid, kind: "scan", k: "20", layers: ["relu2", "relu3"] })).toEqual({
      kind: "scan", spec: { model_id: 1, image_set_ids: [train.id, val.id], layers: ["relu2", "relu3"], k: 20 },
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
      { loc: ["body", "spec", "attack", "layers", 0], msg: "unknown layer", type: "value_error" },
      { loc: ["body", "audit", "spec", "n_synth"], msg: "Input should be less than or equal to 64", type: "less_than_equal" },
      { loc: ["body", "audit", "spec", "attack", "eval_size"], msg: "Input should be greater than or equal to 0", type: "greater_than_equal" },
      { loc: ["body", "spec", "wat"], msg: "Extra inputs are not permitted", type: "extra_forbidden" },
    ]);
    expect(fields).toEqual({
      units: "unit index 500 out of range",
      alpha: "a finetune baseline has alpha = 0 (or null)",
      embedder: "unknown embedder 'x'",
      decoy: "class index 12 out of range",
      val_set_id: "unknown image set id 9",
      layers: "unknown layer",
      n_synth: "Input should be less than or equal to 64",
      eval_size: "Input should be greater than or equal to 0",
    });
    expect(form).toEqual(["spec.wat: Extra inputs are not permitted"]);
  });
});

describe("Gradient Slingshots (SPEC §8.1–8.2)", () => {
  const slingKinds = slingshotKinds as JobKind[];
  const sctx = { ...ctx, kinds: slingKinds, target: train };
  const SD: LaunchForm = { ...BLANK, ...formDefaults(slingKinds) };
  const sling: LaunchForm = {
    ...SD, kind: "slingshot", model_id: "1", layers: ["relu3"], train_set_id: String(train.id), val_set_id: String(val.id),
    target_set_id: String(train.id), target_image_id: "5",
  };
  const attackOf = (b: ReturnType<typeof buildRequest>) => b.spec.attack as Record<string, unknown>;

  it("offers the registry's two Slingshots kinds and reads their defaults", () => {
    expect(launchKinds(slingKinds)).toEqual(["push_down", "push_up", "finetune", "slingshot", "push_up_slingshot", "scan"]);
    expect(formDefaults(slingKinds)).toMatchObject({
      gamma: "1000", tunnel_sd: "0.1", tunnel_batch: "8", tunnel_path: "clipped", slingshot_form: "gradient", slingshot_norm: "cosine",
      slingshot_weight: "1", unit_weight: "0.1", fv_objective: "score", softplus: false, fv_transforms: true,
    });
  });
  it("needs a target image and exactly one layer", () => {
    expect(validate(sling, sctx)).toEqual({});
    expect(validate({ ...sling, target_image_id: "" }, sctx).target).toBe("pick a target image");
    expect(validate({ ...sling, target_image_id: String(train.size) }, sctx).target).toBe(`the image id must be between 0 and ${(train.size - 1).toLocaleString("en")}`);
    expect(validate({ ...sling, targetMode: "upload" }, sctx).target).toBe("upload a PNG or JPEG target image");
    expect(validate({ ...sling, layers: ["relu2", "relu3"] }, { ...sctx, layers: [relu2, relu3] }).layers).toMatch(/exactly one layer/);
    expect(validate({ ...sling, gamma: "0", unit_weight: "2", tunnel_batch: "x" }, sctx)).toMatchObject({
      gamma: "γ must be a number > 0 and ≤ 1,000,000,000", unit_weight: "w must be a number ≥ 0 and ≤ 1", tunnel_batch: "tunnel samples must be a whole number",
    });
    // the combined attack needs its decoy too
    expect(validate({ ...sling, kind: "push_up_slingshot" }, sctx).decoy).toBe("pick a decoy class");
  });
  it("sends the target and the Slingshots settings, and no setting its kind does not read", () => {
    const a = attackOf(buildRequest(sling));
    expect(a).toMatchObject({
      kind: "slingshot", layers: ["relu3"], target_images: [{ image_set_id: train.id, image_id: 5 }], gamma: 1000, tunnel_sd: 0.1,
      tunnel_batch: 8, tunnel_path: "clipped", slingshot_form: "gradient", slingshot_norm: "cosine", slingshot_weight: 1, unit_weight: 0.1,
      softplus: false, fv_objective: "score", fv_transforms: true, decoy_class: null, decoy_ids: null,
    });
    expect(a).not.toHaveProperty("score_norm"); // read by the push-down and push-up losses only
    const up = { artifact_id: 42, url: "/api/v1/target-images/42", width: 28, height: 28, format: "PNG", mode: "L", size_bytes: 300, file: "boot.png" };
    expect(attackOf(buildRequest({ ...sling, targetMode: "upload", target_upload: up })).target_images).toEqual([{ artifact_id: 42 }]);
    const both = attackOf(buildRequest({ ...sling, kind: "push_up_slingshot", decoy_class: "9" }));
    expect(both).toMatchObject({ kind: "push_up_slingshot", decoy_class: 9, score_norm: "batch_mean", target_images: [{ image_set_id: train.id, image_id: 5 }] });
    // a push-down leaves every Slingshots field at the server's default
    const down = attackOf(buildRequest({ ...sling, kind: "push_down" }));
    for (const k of ["target_images", "gamma", "tunnel_sd", "softplus", "fv_transforms", "slingshot_norm"]) expect(down).not.toHaveProperty(k);
  });
  it("maps the server's 422 on the target and the Slingshots settings to their fields", () => {
    const { fields, form } = mapServerErrors([
      { loc: ["body", "spec", "attack", "target_images", 0, "image_id"], msg: "image id 900 out of range", type: "value_error" },
      { loc: ["body", "spec", "attack", "gamma"], msg: "Input should be greater than 0", type: "greater_than" },
      { loc: ["body", "spec", "attack", "softplus"], msg: "Value error, only Slingshots kinds differentiate the input gradient", type: "value_error" },
    ]);
    expect(fields).toEqual({ target: "image id 900 out of range", gamma: "Input should be greater than 0", softplus: "only Slingshots kinds differentiate the input gradient" });
    expect(form).toEqual([]);
  });
});
