// The model page (Microscope-like): layers with one synthetic image per unit, each unit
// a link to all its seeds; the empty state launches a visualize job for a chosen layer.
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useParams } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch, type Route as FRoute } from "../../test/fetchMock";
import kinds from "../../test/fixtures/job-kinds.json";
import layers from "../../test/fixtures/layers.json";
import unit7 from "../../test/fixtures/model-synthetic-unit.json";
import synthetic from "../../test/fixtures/model-synthetic.json";
import models from "../../test/fixtures/models.json";
import { renderRoutes } from "../../test/renderRoutes";
import { groupImages, ModelPage, ModelUnitPage } from "./ModelPage";

function JobStub() {
  return <p>job page {useParams().job}</p>;
}

function renderAt(path: string) {
  return renderRoutes(path, {
    "/models/:model": <ModelPage />,
    "/models/:model/layers/:layer/units/:unit": <ModelUnitPage />,
    "/jobs/:job": <JobStub />,
  });
}

const base = (synth: unknown): FRoute[] => [
  { path: /^\/api\/v1\/job-kinds$/, body: kinds },
  { path: /^\/api\/v1\/models\/1$/, body: models[0] },
  { path: /^\/api\/v1\/models\/1\/layers$/, body: layers },
  { path: /^\/api\/v1\/models\/1\/synthetic$/, body: synth },
  { path: /^\/api\/v1\/models\/1\/synthetic\/relu3\/7$/, body: unit7 },
  { path: /^\/api\/v1\/models\/1\/synthetic\/relu3\/8$/, status: 404, body: { detail: "no synthetic visualization of relu3 unit 8" } },
  { path: /^\/api\/v1\/models\/1\/synthetic\/relu\d\/\d+\/image\//, body: "png" },
];

describe("model page", () => {
  beforeEach(() => {
    setToken("fva_test_token_0123456789");
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: vi.fn(() => "blob:synthetic"), revokeObjectURL: vi.fn() }));
  });

  it("lists the layers, each a grid of one synthetic image per unit linking to the unit", async () => {
    mockFetch(base(synthetic));
    const user = userEvent.setup();
    renderAt("/models/1");
    expect(await screen.findByRole("heading", { name: "fmnist-cnn (demo)", level: 1 })).toBeInTheDocument();
    await waitFor(() => expect(document.title).toBe("Model fmnist-cnn (demo): synthetic visualizations · fvaudit"));
    const relu3 = await screen.findByRole("region", { name: "Layer relu3" });
    const relu1 = screen.getByRole("region", { name: "Layer relu1" });
    expect(within(relu1).getAllByRole("link")).toHaveLength(32);
    // 128 units: the first 96, then all on request
    expect(within(relu3).getAllByRole("link")).toHaveLength(96);
    await user.click(within(relu3).getByRole("button", { name: "show all 128 units" }));
    expect(within(relu3).getAllByRole("link")).toHaveLength(128);
    const link = within(relu3).getByRole("link", { name: /unit 7$/ });
    expect(link).toHaveAttribute("href", "/models/1/layers/relu3/units/7");
    expect(await within(link).findByRole("img", { name: "synthetic visualization of unit 7 (relu3), seed 0" })).toBeInTheDocument();
    // the layer list says which layers have none yet, and offers to render them
    const nav = screen.getByRole("navigation", { name: "Layers" });
    expect(within(nav).getByRole("link", { name: "relu3" })).toHaveAttribute("href", "#layer-relu3");
    expect(within(nav).getAllByText("not rendered")).toHaveLength(layers.length - 2);
    expect(screen.getByRole("region", { name: "Render another layer" })).toBeInTheDocument();
  });

  it("with no visualizations: says how to get some, and launches a visualize job for the chosen layer", async () => {
    const { calls } = mockFetch([
      ...base({ model_id: 1, layers: [] }),
      { method: "POST", path: /^\/api\/v1\/jobs$/, status: 201, body: { id: 77, kind: "visualize", status: "queued" } },
    ]);
    const user = userEvent.setup();
    renderAt("/models/1");
    expect(await screen.findByText("No synthetic visualizations of this model yet.")).toBeInTheDocument();
    await user.selectOptions(screen.getByLabelText("Layer"), "relu2");
    await user.selectOptions(screen.getByLabelText("objective"), "channel_mean");
    await user.click(screen.getByRole("button", { name: "Render synthetic visualizations" }));
    expect(await screen.findByText("job page 77")).toBeInTheDocument();
    expect(calls.find((c) => c.method === "POST")!.body).toEqual({
      kind: "visualize", spec: { model_id: 1, layers: ["relu2"], units: null, objective: "channel_mean" },
    });
  });

  it("a unit: all its seeds, grouped by visualize job, newest first; ←/→ move; a unit without images says so", async () => {
    mockFetch(base(synthetic));
    const user = userEvent.setup();
    renderAt("/models/1/layers/relu3/units/7");
    expect(await screen.findByRole("heading", { name: /Unit 7/, level: 1 })).toBeInTheDocument();
    await waitFor(() => expect(document.title).toBe("Unit 7 · relu3 · fmnist-cnn (demo) · fvaudit"));
    const groups = await screen.findAllByRole("region");
    expect(groups.map((g) => g.getAttribute("aria-label"))).toEqual(["Job 22 · θ_init", "Job 9 · θ_init"]);
    expect(await within(groups[0]).findAllByRole("img", { name: /^synthetic visualization of unit 7 \(relu3\), seed \d, θ_init$/ })).toHaveLength(4);
    expect(within(groups[0]).getByText(/objective score · 256 steps · 64×64 px · 4 seeds/)).toBeInTheDocument();
    await user.keyboard("{ArrowRight}");
    expect(screen.getByTestId("where")).toHaveTextContent("/models/1/layers/relu3/units/8");
    expect(await screen.findByText(/No synthetic visualization of unit 8 of relu3 yet/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Render this layer" })).toBeInTheDocument();
  });

  it("groups images by job and state, seeds in order", () => {
    const g = groupImages([...unit7.images].reverse());
    expect(g.map((x) => [x.key, x.images.map((i) => i.seed)])).toEqual([
      ["22:init", [0, 1, 2, 3]],
      ["9:init", [0]],
    ]);
  });

  it("a pending pruned model offers no audit and says why; a ready one offers both (issue 19)", async () => {
    const pending = { ...models[0], status: "pending", status_reason: "its prune step (job 12) was cancelled before it ran", prune_job_id: 12, hidden: false };
    mockFetch([...base({ model_id: 1, layers: [] }).filter((r) => !String(r.path).includes("models\\/1$")), { path: /^\/api\/v1\/models\/1$/, body: pending }]);
    renderAt("/models/1");
    const note = await screen.findByTestId("model-status");
    expect(note).toHaveTextContent("pending This pruned model has no weights yet: its prune step has not produced them, so it cannot be audited or checked. its prune step (job 12) was cancelled before it ran");
    expect(within(note).getByRole("link", { name: "Open its prune job 12" })).toHaveAttribute("href", "/jobs/12");
    expect(screen.queryByRole("link", { name: "Audit this model…" })).toBeNull();
    expect(screen.queryByRole("link", { name: "Check this model…" })).toBeNull();
    expect(screen.getByRole("button", { name: "Delete model 1 (fmnist-cnn (demo))" })).toBeInTheDocument();
  });

  it("a ready model: “Audit this model…” opens the launch form on it", async () => {
    mockFetch([...base({ model_id: 1, layers: [] }).filter((r) => !String(r.path).includes("models\\/1$")), { path: /^\/api\/v1\/models\/1$/, body: { ...models[0], status: "ready", hidden: false } }]);
    renderAt("/models/1");
    expect(await screen.findByRole("link", { name: "Audit this model…" })).toHaveAttribute("href", "/launch?model=1");
    expect(screen.queryByTestId("model-status")).toBeNull();
  });
});
