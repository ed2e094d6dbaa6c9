import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useParams } from "react-router";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch, type Route as FRoute } from "../../test/fetchMock";
import sets from "../../test/fixtures/image-sets.json";
import kinds from "../../test/fixtures/job-kinds.json";
import slingshotKinds from "../../test/fixtures/job-kinds-slingshot.json";
import layers from "../../test/fixtures/layers.json";
import models from "../../test/fixtures/models.json";
import { renderRoutes } from "../../test/renderRoutes";
import { LaunchPage } from "./Launch";

const base: FRoute[] = [
  { path: /^\/api\/v1\/job-kinds$/, body: kinds },
  { path: /^\/api\/v1\/models$/, body: models },
  { path: /^\/api\/v1\/models\/1\/layers$/, body: layers },
  { path: /^\/api\/v1\/image-sets$/, body: sets },
  { path: /^\/api\/v1\/image-sets\/\d+\/classes\/(\d+)\/samples$/, body: (_r: Request, m: RegExpMatchArray) => [0, 1, 2, 3].map((i) => ({ image_id: i * 10 + Number(m[1]), label: Number(m[1]), label_name: "x", thumb_url: "/t.png", full_url: "/f.png" })) },
];

function JobStub() {
  return <p>job page {useParams().job}</p>;
}

function renderLaunch(path = "/launch") {
  return renderRoutes(path, {
    "/launch": <LaunchPage />,
    "/jobs/:job": <JobStub />,
  });
}

describe("launch form", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("fills its pickers from the API: models, layers with unit counts, image sets; every default from the registry", async () => {
    mockFetch(base);
    renderLaunch();
    await waitFor(() => expect(screen.getByRole("checkbox", { name: "conv3 (post-ReLU) — relu3 · 128 units" })).toBeChecked());
    expect(screen.getByRole("checkbox", { name: "fc1 · 128 units" })).not.toBeChecked();
    expect(await screen.findByText("ReLU · output 128×7×7 · 128 units")).toBeInTheDocument();
    // the numbers are the registry's audit defaults (ATTACK_DEFAULTS), not the form's
    await waitFor(() => expect(screen.getByLabelText("learning rate")).toHaveValue("0.0003"));
    expect(screen.getByLabelText("steps")).toHaveValue("1500");
    expect(screen.getByLabelText("batch size")).toHaveValue("128");
    expect(screen.getByLabelText("evaluate every")).toHaveValue("100");
    expect(screen.getByLabelText("evaluation subset")).toHaveValue("10000");
    expect(screen.getByLabelText("accuracy budget (pp)")).toHaveValue("0.5");
    expect(screen.getByLabelText("α factor")).toHaveValue("2");
    expect(screen.getByLabelText("seeds per unit")).toHaveValue("4");
    expect(screen.getByRole("checkbox", { name: /synthetic visualization/ })).toBeChecked();
    expect(screen.getByRole("checkbox", { name: /the α = 0 control/ })).toBeChecked();
    // the chain the audit runs, in the registry's words
    expect(screen.getByText(/An audit: scan θ_init → attack → scan θ_selected → scan θ_final → metrics → synthetic visualization → α = 0 control/)).toBeInTheDocument();
    expect((screen.getByLabelText("Training set") as HTMLSelectElement).selectedOptions[0].textContent).toMatch(/train/);
    expect((screen.getByLabelText("Validation set") as HTMLSelectElement).selectedOptions[0].textContent).toMatch(/test/);
    expect(screen.getByRole("radio", { name: /^all \(128/ })).toBeChecked();
  });

  it("shows errors inline once a field is left, and clears them when fixed", async () => {
    mockFetch(base);
    const user = userEvent.setup();
    renderLaunch();
    const steps = await screen.findByLabelText("steps");
    await user.clear(steps);
    await user.type(steps, "12x");
    expect(screen.queryByText("steps must be a whole number")).toBeNull(); // not while typing
    await user.tab();
    expect(screen.getByText("steps must be a whole number")).toBeInTheDocument();
    expect(steps).toHaveAttribute("aria-invalid", "true");
    expect(steps).toHaveAccessibleDescription("steps must be a whole number");
    await user.clear(steps);
    await user.type(steps, "12");
    expect(screen.queryByText("steps must be a whole number")).toBeNull();
    expect(steps).toHaveAttribute("aria-invalid", "false");

    await user.click(screen.getByRole("radio", { name: "several" }));
    await user.type(screen.getByLabelText("Unit indices"), "3, 130");
    await user.tab();
    expect(screen.getByText("unit 130 is out of range: the layer has 128 units (0–127)")).toBeInTheDocument();
  });

  it("does not send an invalid form: it marks every bad field and focuses the first", async () => {
    const { calls } = mockFetch(base);
    const user = userEvent.setup();
    renderLaunch();
    await user.click(await screen.findByRole("radio", { name: /Push-up/ }));
    const lr = screen.getByLabelText("learning rate");
    await user.clear(lr);
    await user.type(lr, "0");
    await user.click(screen.getByRole("button", { name: "Launch push-up (decoy)" }));
    expect(await screen.findByText("pick a decoy class")).toBeInTheDocument();
    expect(screen.getByText("the learning rate must be > 0 and ≤ 10")).toBeInTheDocument();
    expect(screen.getByText("Fix the 2 fields marked above.")).toBeInTheDocument();
    expect(document.activeElement).toBe(screen.getByRole("radiogroup", { name: "Decoy class" }));
    expect(calls.some((c) => c.method === "POST")).toBe(false);
    // the decoy picker shows classes with thumbnails; picking one clears the error
    await user.click(screen.getByRole("radio", { name: /^8: Bag/ }));
    expect(screen.queryByText("pick a decoy class")).toBeNull();
  });

  it("maps the server's 422 onto the field it names, then launches and opens the job", async () => {
    let attempt = 0;
    const { calls } = mockFetch([
      ...base,
      {
        method: "POST",
        path: /^\/api\/v1\/jobs$/,
        respond: () =>
          ++attempt === 1
            ? { status: 422, body: { detail: [{ loc: ["body", "spec", "attack", "units", 1], msg: "unit index 99 is a dead unit", type: "value_error" }] } }
            : { status: 201, body: { id: 42, kind: "audit", status: "queued" } },
      },
    ]);

    const user = userEvent.setup();
    renderLaunch();
    await user.click(await screen.findByRole("radio", { name: "several" }));
    const units = screen.getByLabelText("Unit indices");
    await user.type(units, "4, 99");
    await user.type(screen.getByLabelText("Run name"), "my audit");
    await user.click(screen.getByRole("button", { name: "Launch push-down" }));
    const err = await screen.findByText("unit index 99 is a dead unit");
    expect(err).toHaveAttribute("id", "e-units");
    expect(units).toHaveAttribute("aria-invalid", "true");
    expect(document.activeElement).toBe(units);
    const post = calls.find((c) => c.method === "POST")!;
    expect(post.body).toMatchObject({
      kind: "audit",
      spec: { name: "my audit", model_id: 1, visualize: true, control: true, attack: { kind: "push_down", layers: ["relu3"], units: [4, 99], lr: 0.0003, steps: 1500 } },
    });

    await user.clear(units); // editing the field clears the server's message
    expect(screen.queryByText("unit index 99 is a dead unit")).toBeNull();
    await user.type(units, "4, 5");
    await user.click(screen.getByRole("button", { name: "Launch push-down" }));
    expect(await screen.findByText("job page 42")).toBeInTheDocument();
  });

  it("several layers: no unit choice, attack.layers in the request; the toggles send visualize / control", async () => {
    const { calls } = mockFetch([...base, { method: "POST", path: /^\/api\/v1\/jobs$/, status: 201, body: { id: 9, kind: "audit", status: "queued" } }]);
    const user = userEvent.setup();
    renderLaunch();
    await user.click(await screen.findByRole("checkbox", { name: "conv2 (post-ReLU) — relu2 · 64 units" }));
    expect(screen.getByText("2 chosen · 192 units")).toBeInTheDocument();
    expect(screen.queryByRole("radio", { name: "several" })).toBeNull();
    expect(screen.getByText(/All units of each of the 2 layers/)).toBeInTheDocument();
    await user.click(screen.getByRole("checkbox", { name: /synthetic visualization/ }));
    expect(screen.queryByLabelText("seeds per unit")).toBeNull();
    await user.click(screen.getByRole("checkbox", { name: /the α = 0 control/ }));
    expect(screen.getByText(/An audit: scan θ_init → attack → scan θ_selected → scan θ_final → metrics\./)).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Launch push-down" }));
    expect(await screen.findByText("job page 9")).toBeInTheDocument();
    const post = calls.find((c) => c.method === "POST")!;
    const spec = (post.body as { spec: Record<string, unknown> }).spec;
    expect(spec).toMatchObject({ visualize: false, control: false, attack: { layers: ["relu2", "relu3"], units: null } });
    expect("n_synth" in spec).toBe(false);
  });

  it("no layer chosen: the layer list is marked and focused; a 422 on attack.layers lands there too", async () => {
    let attempt = 0;
    const { calls } = mockFetch([
      ...base,
      {
        method: "POST",
        path: /^\/api\/v1\/jobs$/,
        respond: () => (++attempt, { status: 422, body: { detail: [{ loc: ["body", "audit", "spec", "attack", "layers", 0], msg: "Value error, unknown layer 'relu9'", type: "value_error" }] } }),
      },
    ]);
    const user = userEvent.setup();
    renderLaunch();
    const relu3 = await screen.findByRole("checkbox", { name: "conv3 (post-ReLU) — relu3 · 128 units" });
    await waitFor(() => expect(relu3).toBeChecked());
    await user.click(relu3);
    await user.click(screen.getByRole("button", { name: "Launch push-down" }));
    expect(screen.getByText("choose at least one layer")).toBeInTheDocument();
    expect(document.activeElement).toBe(screen.getByRole("group", { name: "Layers" }));
    expect(calls.some((c) => c.method === "POST")).toBe(false);
    await user.click(relu3);
    await user.click(screen.getByRole("button", { name: "Launch push-down" }));
    const err = await screen.findByText("unknown layer 'relu9'");
    expect(err).toHaveAttribute("id", "e-layers");
    expect(attempt).toBe(1);
  });

  it("takes its layers from the address (?layer=…&layer=…, names or labels)", async () => {
    mockFetch(base);
    renderLaunch("/launch?model=1&layer=relu2&layer=conv3%20(post-ReLU)");
    await waitFor(() => expect(screen.getByRole("checkbox", { name: "conv2 (post-ReLU) — relu2 · 64 units" })).toBeChecked());
    expect(screen.getByRole("checkbox", { name: "conv3 (post-ReLU) — relu3 · 128 units" })).toBeChecked();
    expect(screen.getByText("2 chosen · 192 units")).toBeInTheDocument();
  });

  it("push-up with chosen decoy images sends their ids", async () => {
    const { calls } = mockFetch([...base, { method: "POST", path: /^\/api\/v1\/jobs$/, status: 201, body: { id: 7, kind: "audit", status: "queued" } }]);
    const user = userEvent.setup();
    renderLaunch();
    await user.click(await screen.findByRole("radio", { name: /Push-up/ }));
    await user.click(screen.getByRole("radio", { name: "chosen images" }));
    await user.selectOptions(screen.getByLabelText("Browse class"), "8");
    const picks = await screen.findAllByRole("button", { pressed: false, name: /^image \d+, x$/ });
    await user.click(picks[0]);
    await user.click(picks[2]);
    expect(screen.getByText(/2 chosen/)).toBeInTheDocument();
    expect(screen.getAllByRole("button", { pressed: true })).toHaveLength(2);
    await user.click(screen.getByRole("button", { name: "Launch push-up (decoy)" }));
    expect(await screen.findByText("job page 7")).toBeInTheDocument();
    const post = calls.find((c) => c.method === "POST")!;
    expect(post.body).toMatchObject({ spec: { attack: { kind: "push_up", decoy_ids: [8, 28], decoy_class: null } } });
  });

  it("says what to do when nothing is registered", async () => {
    mockFetch([{ path: /^\/api\/v1\/job-kinds$/, body: kinds }, { path: /^\/api\/v1\/models$/, body: [] }, { path: /^\/api\/v1\/image-sets$/, body: sets }]);
    renderLaunch();
    expect(await screen.findByText(/No ready model is registered yet/)).toBeInTheDocument();
    expect(screen.getByText("fvaudit setup-demo")).toBeInTheDocument();
  });

  it("offers only usable models and image sets (issue 19): asks the API for usable=true and leaves out pending, failed and hidden ones", async () => {
    // a server that does not filter yet still answers everything: the form filters too
    const modelList = [
      ...models,
      { ...models[0], id: 7, name: "pruned, pending", status: "pending", status_reason: "its prune step (job 12) was cancelled" },
      { ...models[0], id: 8, name: "hidden cnn", status: "ready", hidden: true },
    ];
    const setList = [
      ...sets,
      { ...sets[0], id: 5, name: "broken folder", size: 0, status: "failed", error: "no class subfolders" },
      { ...sets[0], id: 6, name: "still indexing", status: "indexing" },
    ];
    const { calls } = mockFetch([
      ...base.filter((r) => !/models|image-sets\$/.test(String(r.path))),
      { path: /^\/api\/v1\/models$/, body: modelList },
      { path: /^\/api\/v1\/models\/1\/layers$/, body: layers },
      { path: /^\/api\/v1\/image-sets$/, body: setList },
    ]);
    renderLaunch();
    const model = await screen.findByLabelText("Model");
    await waitFor(() => expect(model).toHaveValue("1"));
    expect([...(model as HTMLSelectElement).options].map((o) => o.textContent)).toEqual(["fmnist-cnn (demo) (fmnist-cnn)"]);
    const train = screen.getByLabelText("Training set") as HTMLSelectElement;
    expect([...train.options].filter((o) => !o.disabled).map((o) => o.value)).toEqual(sets.map((s) => String(s.id)));
    expect(screen.queryByTestId("model-not-usable")).toBeNull();
    const gets = calls.filter((c) => c.method === "GET");
    expect(gets.some((c) => c.url.startsWith("/api/v1/models?") && new URLSearchParams(c.url.split("?")[1]).get("usable") === "true")).toBe(true);
    expect(gets.some((c) => c.url.startsWith("/api/v1/image-sets?") && new URLSearchParams(c.url.split("?")[1]).get("usable") === "true")).toBe(true);
  });

  it("says so when ?model= names a model it cannot offer (pending or hidden), and starts on a usable one", async () => {
    mockFetch([
      ...base.filter((r) => !String(r.path).includes("models$")),
      { path: /^\/api\/v1\/models$/, body: [...models, { ...models[0], id: 7, name: "pruned, pending", status: "pending" }] },
    ]);
    renderLaunch("/launch?model=7");
    const note = await screen.findByTestId("model-not-usable");
    expect(note).toHaveTextContent("Model 7 cannot be audited (it is not ready, or it is hidden): the form starts on another model.");
    expect(within(note).getByRole("link", { name: "Open model 7" })).toHaveAttribute("href", "/models/7");
    await waitFor(() => expect(screen.getByLabelText("Model")).toHaveValue("1"));
  });
});

describe("launch form: Gradient Slingshots", () => {
  beforeEach(() => {
    setToken("fva_test_token_0123456789");
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: vi.fn(() => "blob:target"), revokeObjectURL: vi.fn() }));
  });
  const slingBase = [{ path: /^\/api\/v1\/job-kinds$/, body: slingshotKinds }, ...base.slice(1)];
  const png = { path: /^\/api\/v1\/(image-sets\/\d+\/images\/\d+\/thumb|target-images\/\d+)$/, body: {} };

  it("explains the two kinds; picks a target of an image set by class, with its preview, and sends it", async () => {
    const { calls } = mockFetch([...slingBase, png, { method: "POST", path: /^\/api\/v1\/jobs$/, status: 201, body: { id: 12, kind: "audit", status: "queued" } }]);
    const user = userEvent.setup();
    renderLaunch();
    await user.click(await screen.findByRole("radio", { name: /Gradient Slingshots/ }));
    expect(screen.getByText(/converges to a target image; its natural top-k stays/)).toBeInTheDocument();
    expect(screen.getByRole("radio", { name: /Push-up \+ Slingshots/ })).toBeInTheDocument();
    // the settings a Slingshots attack does not read are not offered; its own are, with the registry's defaults
    expect(screen.queryByLabelText("score normalisation")).toBeNull();
    expect(screen.getByLabelText("γ")).toHaveValue("1000");
    expect(screen.getByLabelText("loss normalisation")).toHaveValue("cosine");
    const target = screen.getByRole("group", { name: "Target image" });
    // sent without a target: the form says so at the target
    await user.click(screen.getByRole("button", { name: "Launch gradient slingshots" }));
    expect(await within(target).findByText("pick a target image")).toBeInTheDocument();
    await user.selectOptions(within(target).getByLabelText("Browse class"), "9");
    const picks = await within(target).findAllByRole("button", { name: /^image \d+, x$/ });
    await user.click(picks[1]);
    expect(within(target).getByLabelText("Image id")).toHaveValue("19");
    expect(within(target).getByTestId("target-preview")).toHaveTextContent(/image 19 of .* · x/);
    expect(await within(target).findByRole("img", { name: /target: image 19 of/ })).toBeInTheDocument();
    expect(within(target).queryByText("pick a target image")).toBeNull();
    await user.click(screen.getByRole("button", { name: "Launch gradient slingshots" }));
    expect(await screen.findByText("job page 12")).toBeInTheDocument();
    const post = calls.find((c) => c.method === "POST" && c.url === "/api/v1/jobs")!;
    const attack = (post.body as { spec: { attack: Record<string, unknown> } }).spec.attack;
    expect(attack).toMatchObject({ kind: "slingshot", layers: ["relu3"], target_images: [{ image_set_id: 1, image_id: 19 }], gamma: 1000, slingshot_norm: "cosine", fv_transforms: true });
    expect(attack).not.toHaveProperty("score_norm");
  });

  it("uploads a file at once: a 422 shows next to the file field, a good one its preview; a 422 on the target lands at the target", async () => {
    let uploads = 0;
    const { calls } = mockFetch([
      ...slingBase,
      png,
      {
        method: "POST",
        path: /^\/api\/v1\/target-images$/,
        respond: () =>
          ++uploads === 1
            ? { status: 422, body: { detail: [{ loc: ["body", "file"], msg: "not an image: upload a PNG or JPEG", type: "value_error" }] } }
            : { status: 201, body: { artifact_id: 42, width: 28, height: 28, mode: "L", format: "PNG", size_bytes: 900, url: "/api/v1/target-images/42" } },
      },
      {
        method: "POST",
        path: /^\/api\/v1\/jobs$/,
        respond: () => ({ status: 422, body: { detail: [{ loc: ["body", "spec", "attack", "target_images", 0, "artifact_id"], msg: "Value error, no uploaded target image 42", type: "value_error" }] } }),
      },
    ]);
    const user = userEvent.setup();
    renderLaunch("/launch?kind=push_up_slingshot");
    const target = await screen.findByRole("group", { name: "Target image" });
    expect(within(target).getByText(/pick an image of that class/)).toBeInTheDocument();
    await user.click(within(target).getByRole("radio", { name: "upload a PNG or JPEG" }));
    const file = within(target).getByLabelText("Target image file");
    await user.upload(file, new File(["hello"], "notes.png", { type: "image/png" }));
    expect(await within(target).findByText("not an image: upload a PNG or JPEG")).toHaveAttribute("id", "e-target_file");
    expect(file).toHaveAttribute("aria-invalid", "true");
    expect(file).toHaveAccessibleDescription("not an image: upload a PNG or JPEG");
    await user.upload(file, new File(["\x89PNG"], "boot.png", { type: "image/png" }));
    expect(await within(target).findByTestId("target-preview")).toHaveTextContent("boot.png · 28×28 PNG (grey) · 1 KB");
    expect(within(target).queryByText("not an image: upload a PNG or JPEG")).toBeNull();
    expect(calls.filter((c) => c.url === "/api/v1/target-images")).toHaveLength(2);
    // the combined attack's decoy class, then the server refuses the target: its message at the target
    await user.click(await screen.findByRole("radio", { name: /^9: / }));
    await user.click(screen.getByRole("button", { name: "Launch push-up + slingshots" }));
    expect(await within(target).findByText("no uploaded target image 42")).toBeInTheDocument();
    const post = calls.find((c) => c.method === "POST" && c.url === "/api/v1/jobs")!;
    expect((post.body as { spec: { attack: Record<string, unknown> } }).spec.attack).toMatchObject({ kind: "push_up_slingshot", decoy_class: 9, target_images: [{ artifact_id: 42 }] });
  });
});
