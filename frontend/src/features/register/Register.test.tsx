// The registration forms (issue 13, item 18): browser-side checks, the server's 422 on the
// field it names, upload progress, and a folder followed through its indexing job.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { act, render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch } from "../../test/fetchMock";
import models from "../../test/fixtures/models.json";
import { Register } from "./Register";

const registry = [
  { name: "fmnist-cnn", source: "builtin", offline: true, description: "Fashion-MNIST demo CNN" },
  { name: "alexnet", source: "torchvision", offline: false, description: "torchvision AlexNet" },
];
const model7 = { ...models[0], id: 7, name: "my cnn", registry_name: "fmnist-cnn", source: "upload", n_layers: 9, n_classes: 10 };

function renderRegister() {
  render(
    <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
      <MemoryRouter>
        <Register />
      </MemoryRouter>
    </QueryClientProvider>,
  );
}

/** XMLHttpRequest as the upload uses it: the test drives its progress and its answer. */
class FakeXHR {
  static last: FakeXHR | null = null;
  upload: { onprogress: ((e: { lengthComputable: boolean; loaded: number; total: number }) => void) | null } = { onprogress: null };
  status = 0;
  responseText = "";
  responseType = "";
  method = "";
  url = "";
  headers: Record<string, string> = {};
  body: FormData | null = null;
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  open(method: string, url: string) {
    this.method = method;
    this.url = url;
  }
  setRequestHeader(k: string, v: string) {
    this.headers[k] = v;
  }
  send(body: FormData) {
    this.body = body;
    FakeXHR.last = this;
  }
  progress(loaded: number, total: number) {
    this.upload.onprogress?.({ lengthComputable: true, loaded, total });
  }
  respond(status: number, body: unknown) {
    this.status = status;
    this.responseText = JSON.stringify(body);
    this.onload?.();
  }
}

describe("register forms", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));
  afterEach(() => vi.unstubAllGlobals());

  it("a registry model: checks in the browser, then shows the server's 422 on the field it names", async () => {
    let posts = 0;
    const { calls } = mockFetch([
      { path: /^\/api\/v1\/models\/registry$/, body: registry },
      {
        method: "POST",
        path: /^\/api\/v1\/models$/,
        respond: () =>
          ++posts === 1
            ? { status: 422, body: { detail: [{ loc: ["body", "checkpoint_path"], msg: "path '/etc/x.safetensors' is outside the allowed roots (/data)", type: "value_error" }] } }
            : { status: 201, body: model7 },
      },
    ]);
    const user = userEvent.setup();
    renderRegister();
    const form = screen.getByRole("form", { name: "Register a registry model" });
    await within(form).findByRole("option", { name: /fmnist-cnn · Fashion-MNIST demo CNN/ });
    expect(within(form).getByRole("option", { name: "alexnet · torchvision AlexNet (pretrained weights need a download)" })).toBeInTheDocument();
    await user.click(within(form).getByRole("button", { name: "Register model" }));
    expect(within(form).getByText("give it a name")).toBeInTheDocument();
    expect(within(form).getByText("pick an architecture from the registry")).toBeInTheDocument();
    expect(calls.filter((c) => c.method === "POST")).toHaveLength(0); // nothing sent
    await user.type(within(form).getByLabelText("Name"), "my cnn");
    await user.selectOptions(within(form).getByLabelText("Architecture"), "fmnist-cnn");
    await user.type(within(form).getByLabelText("Checkpoint on the server (optional)"), "/etc/x.safetensors");
    await user.click(within(form).getByRole("button", { name: "Register model" }));
    const path = within(form).getByLabelText("Checkpoint on the server (optional)");
    expect(await within(form).findByText("path '/etc/x.safetensors' is outside the allowed roots (/data)")).toBeInTheDocument();
    expect(path).toHaveAttribute("aria-invalid", "true");
    expect(path).toHaveAccessibleDescription("path '/etc/x.safetensors' is outside the allowed roots (/data)");
    expect(calls.find((c) => c.method === "POST")!.body).toEqual({ name: "my cnn", registry_name: "fmnist-cnn", pretrained: true, checkpoint_path: "/etc/x.safetensors" });
    await user.clear(path);
    await user.click(within(form).getByRole("button", { name: "Register model" }));
    expect(await within(form).findByRole("status")).toHaveTextContent("Registered model #7 my cnn (fmnist-cnn): 9 layers, 10 classes.");
    expect(calls.filter((c) => c.method === "POST")[1].body).toEqual({ name: "my cnn", registry_name: "fmnist-cnn", pretrained: true });
  });

  it("an uploaded checkpoint: refuses a non-checkpoint, shows upload progress, then the model", async () => {
    mockFetch([{ path: /^\/api\/v1\/models\/registry$/, body: registry }]);
    vi.stubGlobal("XMLHttpRequest", FakeXHR);
    const user = userEvent.setup({ applyAccept: false });
    renderRegister();
    const form = screen.getByRole("form", { name: "Upload a checkpoint" });
    await within(form).findByRole("option", { name: /fmnist-cnn/ });
    await user.type(within(form).getByLabelText("Name"), "my cnn");
    await user.selectOptions(within(form).getByLabelText("Architecture"), "fmnist-cnn");
    const file = within(form).getByLabelText("Checkpoint file");
    await user.upload(file, new File(["x"], "notes.txt"));
    await user.click(within(form).getByRole("button", { name: "Upload and register" }));
    expect(within(form).getByText("notes.txt is not a checkpoint: upload .safetensors (or a weights-only .pt / .pth)")).toBeInTheDocument();
    expect(FakeXHR.last).toBeNull();
    await user.upload(file, new File([new Uint8Array(2 * 2 ** 20)], "mine.safetensors"));
    await user.click(within(form).getByRole("button", { name: "Upload and register" }));
    const xhr = FakeXHR.last!;
    expect([xhr.method, xhr.url, xhr.headers.Authorization]).toEqual(["POST", "/api/v1/models/upload", "Bearer fva_test_token_0123456789"]);
    expect([xhr.body!.get("name"), xhr.body!.get("registry_name"), (xhr.body!.get("file") as File).name]).toEqual(["my cnn", "fmnist-cnn", "mine.safetensors"]);
    act(() => xhr.progress(2 ** 20, 2 * 2 ** 20));
    expect(within(form).getByRole("progressbar", { name: "Upload progress" })).toHaveAttribute("aria-valuenow", "50");
    expect(within(form).getByText("Uploading 1.0 / 2.0 MiB")).toBeInTheDocument();
    act(() => xhr.progress(2 * 2 ** 20, 2 * 2 ** 20));
    expect(within(form).getByText("Uploaded; the server is checking the weights against the architecture…")).toBeInTheDocument();
    await act(async () => xhr.respond(201, model7));
    expect(await within(form).findByRole("status")).toHaveTextContent("Registered model #7 my cnn");
    expect((within(form).getByLabelText("Checkpoint file") as HTMLInputElement).files).toHaveLength(0); // ready for the next one
  });

  it("an uploaded checkpoint the server refuses: the reason on the file field", async () => {
    mockFetch([{ path: /^\/api\/v1\/models\/registry$/, body: registry }]);
    vi.stubGlobal("XMLHttpRequest", FakeXHR);
    const user = userEvent.setup();
    renderRegister();
    const form = screen.getByRole("form", { name: "Upload a checkpoint" });
    await within(form).findByRole("option", { name: /fmnist-cnn/ });
    await user.type(within(form).getByLabelText("Name"), "bad fit");
    await user.selectOptions(within(form).getByLabelText("Architecture"), "fmnist-cnn");
    await user.upload(within(form).getByLabelText("Checkpoint file"), new File([new Uint8Array(10)], "mine.safetensors"));
    await user.click(within(form).getByRole("button", { name: "Upload and register" }));
    const msg = "checkpoint mine.safetensors does not fit the architecture fmnist-cnn: unexpected key not.a.layer";
    await act(async () => FakeXHR.last!.respond(422, { detail: [{ loc: ["body", "file"], msg, type: "value_error" }] }));
    expect(await within(form).findByText(msg)).toBeInTheDocument();
    expect(within(form).getByLabelText("Checkpoint file")).toHaveAttribute("aria-invalid", "true");
  });

  it("an image folder: the server's 422 on the path; then the indexing job's progress and the set it made", async () => {
    let post = 0;
    let polls = 0;
    const job = { id: 90, kind: "register_images", status: "queued", progress: {}, children: [], spec: {}, error: null };
    const { calls } = mockFetch([
      { path: /^\/api\/v1\/models\/registry$/, body: registry },
      {
        method: "POST",
        path: /^\/api\/v1\/image-sets$/,
        respond: () =>
          ++post === 1
            ? { status: 422, body: { detail: [{ loc: ["body", "source"], msg: "path '/tmp/pets' is outside the allowed roots (/data)", type: "value_error" }] } }
            : { status: 202, body: { id: 12, name: "pets", source: "/data/pets", kind: "folder", size: 0, limit: null, classes: [], status: "indexing", job_id: 90, error: null, skipped: [], created_at: "2026-12-03T08:00:00Z", job } },
      },
      {
        path: /^\/api\/v1\/jobs\/90$/,
        body: () => (++polls === 1 ? { ...job, status: "running", progress: { stage: "index", done: 40, total: 100 } } : { ...job, status: "succeeded", progress: { stage: "index", done: 100, total: 100 } }),
      },
      {
        path: /^\/api\/v1\/image-sets\/12$/,
        body: { id: 12, name: "pets", source: "/data/pets", kind: "folder", size: 6, limit: null, classes: ["cat", "dog"], status: "ready", job_id: 90, error: null, skipped: [{ path: "/data/pets/dog/broken.png", reason: "not an image" }], created_at: "2026-12-03T08:00:00Z" },
      },
    ]);
    const user = userEvent.setup();
    renderRegister();
    const form = screen.getByRole("form", { name: "Register an image folder" });
    // the limit is a seeded class-stratified sample, not the first N files (issue 19, item 11)
    expect(within(form).getByLabelText("Limit (optional)")).toHaveAccessibleDescription(/a seeded sample stratified by class .*not the first N/);
    await user.type(within(form).getByLabelText("Name"), "pets");
    await user.type(within(form).getByLabelText("Folder on the server"), "pets");
    await user.type(within(form).getByLabelText("Limit (optional)"), "0");
    await user.click(within(form).getByRole("button", { name: "Register folder" }));
    expect(within(form).getByText("an absolute path on the server, e.g. /data/pets")).toBeInTheDocument();
    expect(within(form).getByText("the limit must be ≥ 1")).toBeInTheDocument();
    await user.clear(within(form).getByLabelText("Folder on the server"));
    await user.type(within(form).getByLabelText("Folder on the server"), "/tmp/pets");
    await user.clear(within(form).getByLabelText("Limit (optional)"));
    await user.click(within(form).getByRole("button", { name: "Register folder" }));
    expect(await within(form).findByText("path '/tmp/pets' is outside the allowed roots (/data)")).toBeInTheDocument();
    expect(within(form).getByLabelText("Folder on the server")).toHaveAttribute("aria-invalid", "true");
    await user.clear(within(form).getByLabelText("Folder on the server"));
    await user.type(within(form).getByLabelText("Folder on the server"), "/data/pets");
    await user.click(within(form).getByRole("button", { name: "Register folder" }));
    expect(calls.filter((c) => c.method === "POST").map((c) => c.body)).toEqual([
      { name: "pets", source: "/tmp/pets" },
      { name: "pets", source: "/data/pets" },
    ]);
    expect(await within(form).findByText(/index · 40 \/ 100 files/)).toBeInTheDocument();
    expect(within(form).getByRole("progressbar", { name: "Indexing progress" })).toHaveAttribute("aria-valuenow", "40");
    expect(await within(form).findByRole("status")).toHaveTextContent(
      "Registered image set #12 pets: 6 images in 2 classes (cat, dog); 1 file skipped.",
    );
  });
});
