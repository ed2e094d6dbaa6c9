// /sweeps/new (issue 19, item 6): the sweep form from the registry's sweep kind: it sends the
// grid over the chosen methods and rates, refuses what it can judge itself, and puts the
// server's 422 (a grid value, a base field) on the field that made it.
import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch, type Route } from "../../test/fetchMock";
import sets from "../../test/fixtures/image-sets.json";
import sweepKind from "../../test/fixtures/job-kind-sweep.json";
import layers from "../../test/fixtures/layers.json";
import models from "../../test/fixtures/models.json";
import { renderRoutes } from "../../test/renderRoutes";
import { SweepLaunch } from "./SweepLaunch";

const pending = { ...models[0], id: 3, name: "pruned, pending", status: "pending", status_reason: "its prune step was cancelled" };
const base: Route[] = [
  { path: /^\/api\/v1\/job-kinds$/, body: [sweepKind] },
  { path: /^\/api\/v1\/models$/, body: [...models, pending] },
  { path: /^\/api\/v1\/models\/1\/layers$/, body: layers },
  { path: /^\/api\/v1\/image-sets$/, body: sets },
];
// text fields are set in one change event (typing each character is slow on 2 shared cores)
const renderAt = () => renderRoutes("/sweeps/new", { "/sweeps/new": <SweepLaunch />, "/sweeps/:sweep": <p>sweep page</p> });

async function ready() {
  const form = await screen.findByRole("form", { name: "Launch a sweep" });
  await waitFor(() => expect(within(form).getByRole("checkbox", { name: "conv3 (post-ReLU) — relu3 · 128 units" })).toBeChecked());
  await waitFor(() => expect(within(form).getByLabelText("attack steps")).toHaveValue("1500"));
  return form;
}

// typing into several fields takes longer than the default 5 s on 2 shared cores: 20 s per test
describe("sweep launch form", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("offers ready models only, fills the registry's defaults and sends the grid it shows", async () => {
    const { calls } = mockFetch([...base, { method: "POST", path: /^\/api\/v1\/jobs$/, status: 201, body: { id: 77 } }]);
    const user = userEvent.setup();
    renderAt();
    const form = await ready();
    expect([...(within(form).getByLabelText("Model") as HTMLSelectElement).options].map((o) => o.value)).toEqual(["1"]);
    expect(within(form).getByLabelText("fine-tune steps")).toHaveValue("200");
    expect(within(form).getByRole("checkbox", { name: /^norm/ })).toBeChecked();
    fireEvent.change(within(form).getByLabelText("Sweep name"), { target: { value: "norm vs vulnerability" } });
    await user.click(within(form).getByRole("checkbox", { name: /^vulnerability/ }));
    fireEvent.change(within(form).getByLabelText("rates"), { target: { value: "0.25, 0.5" } });
    await user.selectOptions(within(form).getByLabelText(/Decoy class/), "8");
    fireEvent.change(within(form).getByLabelText("attack steps"), { target: { value: "10" } });
    fireEvent.change(within(form).getByLabelText("fine-tune images"), { target: { value: "300" } });
    // 1 baseline + 2 methods × 2 rates, each audited by push-down and push-up
    expect(within(form).getByText("5 points").closest("p")).toHaveTextContent("5 points · 10 audits (the baseline included)");
    await user.click(within(form).getByRole("button", { name: "Launch the sweep (5 points)" }));
    expect(await screen.findByText("sweep page")).toBeInTheDocument();
    expect(screen.getByTestId("where")).toHaveTextContent("/sweeps/77");
    const post = calls.filter((c) => c.method === "POST");
    expect(post).toHaveLength(1);
    expect(post[0].body).toEqual({
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
  });

  it("refuses what it can judge itself and sends nothing", async () => {
    const { calls } = mockFetch(base);
    const user = userEvent.setup();
    renderAt();
    const form = await ready();
    fireEvent.change(within(form).getByLabelText("rates"), { target: { value: "0.5, 1.5" } });
    await user.click(within(form).getByRole("button", { name: /^Launch the sweep/ }));
    expect(await within(form).findByText("push-up needs a decoy class")).toBeInTheDocument();
    expect(within(form).getByText("rate 1.5 is not strictly between 0 and 1")).toBeInTheDocument();
    expect(within(form).getByText("Fix the 2 fields marked above.")).toBeInTheDocument();
    expect(document.activeElement).toBe(within(form).getByLabelText(/Decoy class/));
    expect(calls.filter((c) => c.method === "POST")).toHaveLength(0);
  });

  it("puts the server's 422 on the fields it names: a grid value on its axis, a base field on its own", async () => {
    const { calls } = mockFetch([
      ...base,
      {
        method: "POST", path: /^\/api\/v1\/jobs$/, status: 422,
        body: { detail: [
          { loc: ["body", "spec", "grid", 1, "values", 1], msg: "Input should be less than 1", type: "less_than" },
          { loc: ["body", "spec", "base", "attack", "eval_size"], msg: "eval_size 10000 exceeds the validation set (2,000 images)", type: "value_error" },
          { loc: ["body", "spec", "scan"], msg: "something the form does not show", type: "x" },
        ] },
      },
    ]);
    const user = userEvent.setup();
    renderAt();
    const form = await ready();
    await user.click(within(form).getByRole("checkbox", { name: "push-up (decoy)" }));
    fireEvent.change(within(form).getByLabelText("rates"), { target: { value: "0.5, 0.99" } });
    await user.click(within(form).getByRole("button", { name: "Launch the sweep (3 points)" }));
    const rates = within(form).getByLabelText("rates");
    await waitFor(() => expect(rates).toHaveAttribute("aria-invalid", "true"));
    expect(within(form).getByText("rate 0.99: Input should be less than 1")).toHaveAttribute("id", "e-rates");
    expect(within(form).getByText("eval_size 10000 exceeds the validation set (2,000 images)")).toHaveAttribute("id", "e-eval_size");
    expect(within(form).getByText("spec.scan: something the form does not show")).toBeInTheDocument();
    expect(document.activeElement).toBe(rates);
    expect(calls.filter((c) => c.method === "POST")[0].body).toMatchObject({ spec: { attacks: ["push_down"], decoy_class: null } });
    // editing the field clears the server's error there
    await user.type(rates, "0");
    expect(within(form).queryByText("rate 0.99: Input should be less than 1")).toBeNull();
    expect(screen.getByTestId("where")).toHaveTextContent("/sweeps/new");
  });
});
