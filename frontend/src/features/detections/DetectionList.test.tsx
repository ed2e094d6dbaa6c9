// The detections list and the "Check a model" form: each detection with its suspect, regime,
// live progress while it runs and its verdict; the form pre-filled from ?suspect=, the
// request it sends (suspect on an attack job's weights, a reference, a population of
// fine-tunes), its own checks, and the server's 422 landing next to the field it names.
import { act, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch, type Route as FetchRoute } from "../../test/fetchMock";
import list from "../../test/fixtures/detections.json";
import imageSets from "../../test/fixtures/image-sets.json";
import layers from "../../test/fixtures/layers.json";
import models from "../../test/fixtures/models.json";
import { renderRoutes } from "../../test/renderRoutes";
import { ModelPage } from "../models/ModelPage";
import { buildDetectRequest, EMPTY_FORM, mapDetectErrors, validateDetect } from "./DetectionForm";
import { DetectionList } from "./DetectionList";

const renderAt = (path: string) =>
  renderRoutes(path, {
    "/detections": <DetectionList />,
    "/detections/:detection": <p>detection page</p>,
    "/models/:model": <ModelPage />,
  });

const allModels = [
  ...models,
  { ...models[0], id: 2, name: "clean seed 2", source: "upload" },
  { ...models[0], id: 3, name: "pruned cnn", prune: { method: "norm", rate: 0.5 } },
  { ...models[0], id: 4, name: "resnet", registry_name: "resnet18", n_classes: 1000 },
  // never offered (issue 19): a pruned model whose prune step has not made weights, and a hidden model
  { ...models[0], id: 5, name: "pending prune", status: "pending", prune: { method: "norm", rate: 0.25 } },
  { ...models[0], id: 6, name: "hidden clean", status: "ready", hidden: true },
];
const job = (id: number, kind: string, model = 1) => ({
  id, kind: "attack", step_key: null, label: "attack", status: "succeeded", progress: {}, error: null,
  spec: { model_id: model, train_set_id: 1, val_set_id: 2, attack: { kind, layers: ["relu3"] } }, run_id: id, parent_id: null,
  children: [], depends_on_id: null, group_job_id: null, seq: 0, attempts: 1, worker: "w", cancel_requested: false,
  heartbeat_at: null, result: {}, created_at: "2026-11-25T07:00:00Z", started_at: null, finished_at: "2026-11-25T07:01:00Z",
});
const detectKind = {
  kind: "detect", title: "detect", description: "check a model", runnable: true, chain: false, steps: [], spec_schema: {},
  defaults: { name: null, k: 10, k_clip: 5, embedder: "auto", batch_size: 256, thresholds: { unit: 0.95, suspicious_p: 0.05, manipulated_p: 0.001 } },
};

function routes(post?: FetchRoute): FetchRoute[] {
  return [
    { path: /^\/api\/v1\/detections$/, body: list },
    { path: /^\/api\/v1\/models$/, body: allModels },
    { path: /^\/api\/v1\/models\/\d+\/layers$/, body: layers },
    { path: /^\/api\/v1\/models\/2$/, body: allModels[1] },
    { path: /^\/api\/v1\/models\/2\/synthetic$/, body: { model_id: 2, layers: [] } },
    { path: /^\/api\/v1\/image-sets$/, body: imageSets },
    { path: /^\/api\/v1\/job-kinds$/, body: [detectKind] },
    { path: /^\/api\/v1\/jobs$/, body: [job(32, "finetune"), job(31, "push_down"), job(30, "push_up", 4)] },
    ...(post ? [post] : []),
  ];
}

describe("detections list", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("lists each detection with its suspect, regime, live progress and verdict, linking to its page", async () => {
    mockFetch(routes());
    const user = userEvent.setup();
    renderAt("/detections");
    const table = await screen.findByRole("table");
    const rows = within(table).getAllByRole("row").slice(1);
    expect(rows.map((r) => within(r).getAllByRole("link")[0].getAttribute("href"))).toEqual([
      "/detections/43", "/detections/42", "/detections/41", "/detections/40"]);
    // running: its stage and count, no verdict yet
    expect(within(rows[0]).getByTestId("progress")).toHaveTextContent("scan suspect (1/3) 512/1,000");
    expect(within(rows[0]).queryByTestId("verdict")).toBeNull();
    // succeeded: the verdict badge with its p-value
    expect(within(rows[1]).getByTestId("verdict")).toHaveTextContent("suspicious · p = 0.012");
    expect(within(rows[1]).getByText("population only")).toBeInTheDocument();
    expect(within(rows[2]).getByTestId("verdict")).toHaveTextContent("manipulated · p = 4.6e−5");
    expect(within(rows[2]).getByText("with a reference")).toBeInTheDocument();
    expect(within(rows[2]).getAllByRole("link", { name: "fmnist-cnn (demo)" })).toHaveLength(2); // suspect and reference
    // failed: its status, no verdict
    expect(within(rows[3]).getByText("failed")).toBeInTheDocument();
    expect(within(rows[3]).queryByTestId("verdict")).toBeNull();
    await user.click(within(rows[2]).getByRole("link", { name: "check the push-down" }));
    expect(screen.getByTestId("where").textContent).toBe("/detections/41");
  });

  it("shows the 'out of calibration' verdict with its own badge, not the manipulated one (issue 24)", async () => {
    const outOfCal = { ...list[2], id: 44, name: "check a big fine-tune", verdict: "out of calibration", p_value: null };
    mockFetch([{ path: /^\/api\/v1\/detections$/, body: [outOfCal, ...list] }, ...routes()]);
    renderAt("/detections");
    const table = await screen.findByRole("table");
    const badge = within(within(table).getAllByRole("row")[1]).getByTestId("verdict");
    expect(badge).toHaveTextContent(/^out of calibration$/);
    expect(badge).toHaveClass("verdict", "verdict-out-of-calibration");
    expect(badge).not.toHaveClass("verdict-manipulated");
    expect(badge.getAttribute("title")).toMatch(/moved further \(relative weight distance\) than any clean model of the calibration/);
  });

  describe("created", () => {
    afterEach(() => vi.useRealTimers());

    it("keeps its relative time ticking: '2 min ago' becomes '3 min ago' without a reload (issue 19, item 11)", async () => {
      // the clock moves with real time too (the list's fetch and render need it); we also step it by hand
      vi.useFakeTimers({ shouldAdvanceTime: true });
      vi.setSystemTime(new Date("2026-11-25T09:02:00Z"));
      mockFetch(routes());
      renderAt("/detections");
      const table = await screen.findByRole("table");
      const created = (i: number) => within(table).getAllByRole("row")[i + 1].lastElementChild!;
      expect(created(0)).toHaveTextContent("1 h ago"); // detection 43, created 08:00
      expect(created(1)).toHaveTextContent("2 min ago"); // detection 42, created 09:00
      expect(created(1).querySelector("time")).toHaveAttribute("dateTime", "2026-11-25T09:00:00Z");
      act(() => vi.advanceTimersByTime(60_000));
      expect(created(1)).toHaveTextContent("3 min ago");
    });
  });
});

describe("check a model (the form)", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("pre-fills the suspect from ?suspect= and offers only models of its architecture as the population", async () => {
    mockFetch(routes());
    renderAt("/detections?suspect=2");
    const form = await screen.findByRole("form", { name: "Check a model" });
    await waitFor(() => expect(within(form).getByLabelText("Suspect model")).toHaveValue("2"));
    // the registry's defaults, the last labelled layer, the validation set
    expect(within(form).getByLabelText("k")).toHaveValue("10");
    expect(within(form).getByLabelText("k for CLIP-δ")).toHaveValue("5");
    expect(within(form).getByLabelText("Image set")).toHaveValue("2");
    await waitFor(() => expect(within(within(form).getByRole("group", { name: "Layers" })).getByRole("checkbox", { name: /relu3/ })).toBeChecked());
    const pop = within(form).getByRole("group", { name: /Population/ });
    const offered = within(pop).getAllByRole("checkbox").map((c) => c.closest("label")!.textContent!.trim());
    // not the suspect itself (model 2, its own weights), not the pruned model, not another architecture
    expect(offered).toEqual([
      expect.stringMatching(/^fmnist-cnn \(demo\)/),
      expect.stringMatching(/^job 32: fine-tune \(α = 0\) on relu3 · fmnist-cnn \(demo\) benign fine-tune$/),
      expect.stringMatching(/^job 31: push-down on relu3/),
    ]);
    expect(pop).toHaveTextContent("at least 2 clean models of the same family");
    // the suspect picker: ready, unhidden models only
    const suspects = [...(within(form).getByLabelText("Suspect model") as HTMLSelectElement).options].map((o) => o.value).filter(Boolean);
    expect(suspects).toEqual(["1", "2", "3", "4"]);
  });

  it("is reachable from a model's page: “Check this model” pre-fills the suspect", async () => {
    mockFetch(routes());
    const user = userEvent.setup();
    renderAt("/models/2");
    await user.click(await screen.findByRole("link", { name: "Check this model…" }));
    expect(screen.getByTestId("where").textContent).toBe("/detections?suspect=2");
    const form = await screen.findByRole("form", { name: "Check a model" });
    await waitFor(() => expect(within(form).getByLabelText("Suspect model")).toHaveValue("2"));
  });

  it("sends the suspect on an attack's weights, the reference and the population, then opens the detection", async () => {
    const { calls } = mockFetch(routes({ method: "POST", path: /^\/api\/v1\/jobs$/, status: 201, body: { ...job(77, "detect"), kind: "detect" } }));
    const user = userEvent.setup();
    renderAt("/detections");
    const form = await screen.findByRole("form", { name: "Check a model" });
    await waitFor(() => expect(within(form).getByLabelText("Suspect model")).toHaveValue("1"));
    await user.selectOptions(within(form).getByLabelText("Suspect weights"), "31:final");
    await user.click(within(form).getByRole("checkbox", { name: "Compare with a reference" }));
    expect(within(form).getByLabelText("Reference model")).toHaveValue("1");
    expect(within(form).getByLabelText("Reference weights")).toHaveValue("");
    const pop = within(form).getByRole("group", { name: /Population/ });
    expect(pop).toHaveTextContent("benign fine-tunes of the reference");
    // the suspect's own attack is not offered as a clean model
    expect(within(pop).queryByRole("checkbox", { name: /job 31/ })).toBeNull();
    await user.click(within(pop).getByRole("checkbox", { name: /job 32/ }));
    await user.type(within(form).getByLabelText("Name"), "check job 31");
    await waitFor(() => expect(within(within(form).getByRole("group", { name: "Layers" })).getByRole("checkbox", { name: /relu3/ })).toBeChecked());
    await user.click(within(form).getByRole("button", { name: "Check the model" }));
    await waitFor(() => expect(screen.getByTestId("where").textContent).toBe("/detections/77"));
    const post = calls.find((c) => c.method === "POST")!;
    expect(post.body).toEqual({
      kind: "detect",
      spec: {
        name: "check job 31",
        suspect: { model_id: 1, weights_from: { job_id: 31, state: "final" } },
        reference: { model_id: 1 },
        population: [{ model_id: 1, weights_from: { job_id: 32, state: "final" } }],
        image_set_id: 2, layers: ["relu3"], k: 10, k_clip: 5, batch_size: 256, embedder: "auto",
        thresholds: { unit: 0.95, suspicious_p: 0.05, manipulated_p: 0.001 },
      },
    });
  });

  it("shows the server's 422 next to the field it names, and stays on the form", async () => {
    const detail = [
      { loc: ["body", "spec", "population", 0, "model_id"], msg: "model 2 (resnet18) does not share the suspect's architecture", type: "value_error" },
      { loc: ["body", "spec", "k_clip"], msg: "k_clip = 5 is larger than k = 3", type: "value_error" },
    ];
    mockFetch(routes({ method: "POST", path: /^\/api\/v1\/jobs$/, status: 422, body: { detail } }));
    const user = userEvent.setup();
    renderAt("/detections");
    const form = await screen.findByRole("form", { name: "Check a model" });
    await waitFor(() => expect(within(form).getByLabelText("Suspect model")).toHaveValue("1"));
    const pop = within(form).getByRole("group", { name: /Population/ });
    await user.click(within(pop).getByRole("checkbox", { name: /job 32/ }));
    await user.click(within(pop).getByRole("checkbox", { name: /clean seed 2/ }));
    await user.click(within(form).getByRole("button", { name: "Check the model" }));
    expect(await within(pop).findByRole("alert")).toHaveTextContent(
      "Population model 1: model 2 (resnet18) does not share the suspect's architecture");
    expect(pop).toHaveAttribute("aria-invalid", "true");
    const kClip = within(form).getByLabelText("k for CLIP-δ");
    expect(kClip).toHaveAttribute("aria-invalid", "true");
    expect(document.getElementById(kClip.getAttribute("aria-describedby")!)).toHaveTextContent("k_clip = 5 is larger than k = 3");
    expect(screen.getByTestId("where").textContent).toBe("/detections");
    // editing the field clears the server's message on it
    await user.clear(kClip);
    expect(kClip).toHaveAttribute("aria-invalid", "false");
  });

  it("checks the population size for the regime before sending anything", async () => {
    const { calls } = mockFetch(routes());
    const user = userEvent.setup();
    renderAt("/detections");
    const form = await screen.findByRole("form", { name: "Check a model" });
    await waitFor(() => expect(within(form).getByLabelText("Suspect model")).toHaveValue("1"));
    const pop = within(form).getByRole("group", { name: /Population/ });
    await user.click(within(pop).getByRole("checkbox", { name: /clean seed 2/ }));
    await user.click(within(form).getByRole("button", { name: "Check the model" }));
    expect(within(pop).getByRole("alert")).toHaveTextContent("Without a reference, choose at least 2 clean models");
    expect(pop).toHaveFocus();
    expect(calls.some((c) => c.method === "POST")).toBe(false);
    // with a reference, one is enough
    await user.click(within(form).getByRole("checkbox", { name: "Compare with a reference" }));
    expect(within(pop).queryByRole("alert")).toBeNull();
  });
});

describe("the form's request and 422 mapping", () => {
  it("leaves empty optional fields to the server and maps nested thresholds to their field", () => {
    const f = { ...EMPTY_FORM, suspect: { model_id: "4", weights: "" }, population: ["m:2", "m:3"], image_set_id: "2", layers: ["relu3"] };
    expect(validateDetect(f)).toEqual({});
    expect(buildDetectRequest(f, () => undefined)).toEqual({
      kind: "detect",
      spec: { suspect: { model_id: 4 }, reference: null, population: [{ model_id: 2 }, { model_id: 3 }], image_set_id: 2, layers: ["relu3"] },
    });
    expect(validateDetect({ ...f, k: "5", k_clip: "6", manipulated_p: "0.2", suspicious_p: "0.05" })).toEqual({
      k_clip: "k for CLIP-δ (6) must not exceed k (5).", manipulated_p: "Must not exceed the 'suspicious' p-value." });
    const m = mapDetectErrors([
      { loc: ["body", "spec", "thresholds", "unit"], msg: "Input should be less than 1", type: "less_than" },
      { loc: ["body", "spec", "suspect", "weights_from", "job_id"], msg: "Value error, job 9 is not an attack job", type: "value_error" },
      { loc: ["body", "spec", "layers", 1], msg: "unknown layer conv9", type: "value_error" },
      { loc: ["body", "kind"], msg: "unknown kind", type: "value_error" },
    ]);
    expect(m.fields).toEqual({ unit: "Input should be less than 1", suspect: "job 9 is not an attack job", layers: "Layer 2: unknown layer conv9" });
    expect(m.form).toEqual(["kind: unknown kind"]);
  });
});
