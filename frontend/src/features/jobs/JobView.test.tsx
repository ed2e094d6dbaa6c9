// The job page reads a chain's steps from its children and the job-kind registry:
// a 9-step audit (scan θ_init … control metrics) renders all nine, in seq order.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { cleanup, render, screen, within } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import type { Job } from "../../api/client";
import type { JobKind, StepJob } from "../../api/contract";
import { chainSteps } from "../../lib/chain";
import { absTime, progressText } from "../../lib/format";
import { mockFetch } from "../../test/fetchMock";
import chain from "../../test/fixtures/job-chain.json";
import kinds from "../../test/fixtures/job-kinds.json";
import run from "../../test/fixtures/run-detail.json";
import { JobView } from "./JobView";

const audit = (kinds as JobKind[]).find((k) => k.kind === "audit")!;
const job = chain.job as unknown as Job;
const children = chain.children as unknown as StepJob[];

function renderJob() {
  const qc = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  return render(
    <QueryClientProvider client={qc}>
      <MemoryRouter initialEntries={["/jobs/40"]}>
        <Routes>
          <Route path="/jobs/:job" element={<JobView />} />
        </Routes>
      </MemoryRouter>
    </QueryClientProvider>,
  );
}

describe("chain steps", () => {
  it("come from the children in seq order, labelled by the API; the live step shows as running", () => {
    const shuffled = [...children].reverse();
    const steps = chainSteps(job, shuffled, audit, 3);
    expect(steps.map((s) => s.label)).toEqual([
      "scan θ_init", "attack", "scan θ_selected", "scan θ_final", "metrics", "synthetic visualization",
      "α = 0 control", "scan control", "control metrics",
    ]);
    expect(steps.map((s) => s.status)).toEqual(["succeeded", "succeeded", "running", "queued", "queued", "queued", "queued", "queued", "queued"]);
    expect(steps[2].current).toBe(true);
  });

  it("before the children load, the registry's steps stand in; a child without a label takes its key's label", () => {
    expect(chainSteps(job, undefined, audit, 2).map((s) => `${s.seq} ${s.label} ${s.status}`).slice(0, 3)).toEqual([
      "1 scan θ_init succeeded", "2 attack running", "3 scan θ_selected queued",
    ]);
    const unlabelled = children.map((c) => ({ ...c, label: undefined as unknown as string }));  // an older server
    expect(chainSteps(job, unlabelled, audit, null)[6].label).toBe("α = 0 control");
  });

  it("progress text names the step from the labels it is given, and its own count", () => {
    expect(progressText({ chain_step: 7, chain_steps: 9, stage: "push_down", done: 12, total: 40 }, (n) => audit.steps[n - 1].label)).toBe(
      "step 7/9 α = 0 control · push_down 12/40",
    );
    expect(progressText({ chain_step: 2, step_label: "attack relu2", stage: "x" })).toBe("step 2 attack relu2 · x");
  });
});

describe("job page", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("renders a 9-step audit chain with the API's labels and the live step", async () => {
    mockFetch([
      { path: /^\/api\/v1\/jobs\/40$/, body: chain.job },
      { path: /^\/api\/v1\/jobs$/, body: children },
      { path: /^\/api\/v1\/job-kinds$/, body: kinds },
    ]);
    renderJob();
    expect(await screen.findByRole("heading", { name: /relu2\+relu3 push-down/ })).toBeInTheDocument();
    const list = await screen.findByRole("list", { name: "9 steps" });
    const items = await within(list).findAllByRole("listitem");
    expect(items).toHaveLength(9);
    expect(items.map((li) => li.textContent)).toEqual([
      "1 scan θ_init succeeded", "2 attack succeeded", "3 scan θ_selected running", "4 scan θ_final queued", "5 metrics queued",
      "6 synthetic visualization queued", "7 α = 0 control queued", "8 scan control queued", "9 control metrics queued",
    ]);
    expect(items[2]).toHaveAttribute("aria-current", "step");
    // each step opens its own job
    expect(within(items[6]).getByRole("link", { name: "α = 0 control" })).toHaveAttribute("href", "/jobs/47");
    expect(screen.getByText(/step 3 of 9 \(scan θ_selected\)/)).toBeInTheDocument();
    expect(document.title).toBe("Job 40: relu2+relu3 push-down · fvaudit");
  });

  it("a detect job links to its verdict page", async () => {
    const detect = { ...chain.job, id: 40, kind: "detect", status: "succeeded", run_id: null, children: [], spec: { name: "check" } };
    mockFetch([
      { path: /^\/api\/v1\/jobs\/40$/, body: detect },
      { path: /^\/api\/v1\/jobs$/, body: [] },
      { path: /^\/api\/v1\/job-kinds$/, body: kinds },
    ]);
    renderJob();
    expect(await screen.findByRole("link", { name: "Open the verdict →" })).toHaveAttribute("href", "/detections/40");
  });

  // issue 19, item 11: a visualize job shares the audit's run but trained nothing
  const history = [1, 2, 3, 4, 5, 6].map((step) => ({ step, loss: 2 / step, l_attack: 1 / step, l_maintain: 1, alpha: 0.5 }));
  const finished = { created_at: "2026-11-25T06:14:11Z", started_at: "2026-11-25T06:14:20Z", finished_at: "2026-11-25T06:24:20Z" };

  it("a visualize job does not show the attack's training curves; an attack job does", async () => {
    // selected_is_init: its note shows when the run has loaded (the history with it)
    const runWithHistory = { ...run, id: 3, history, attack_outcome: { selected_step: 0, final_step: 6, selected_is_init: true, final_over_budget: true, budget_pp: 0.5, message: "no state within budget" } };
    const visualize = { ...chain.job, ...finished, id: 40, kind: "visualize", step_key: "visualize", status: "succeeded", run_id: 3, children: [], spec: { model_id: 1, layers: ["relu3"] } };
    mockFetch([
      { path: /^\/api\/v1\/jobs\/40$/, body: visualize },
      { path: /^\/api\/v1\/jobs$/, body: [] },
      { path: /^\/api\/v1\/job-kinds$/, body: kinds },
      { path: /^\/api\/v1\/runs\/3$/, body: runWithHistory },
    ]);
    renderJob();
    expect(await screen.findByText(/Done\./)).toBeInTheDocument();
    await screen.findByTestId("selected-is-init"); // the run, with its history, has loaded
    expect(screen.queryByRole("region", { name: "Training curves" })).toBeNull();
    cleanup();

    const attack = { ...visualize, kind: "attack", step_key: "attack" };
    mockFetch([
      { path: /^\/api\/v1\/jobs\/40$/, body: attack },
      { path: /^\/api\/v1\/jobs$/, body: [] },
      { path: /^\/api\/v1\/job-kinds$/, body: kinds },
      { path: /^\/api\/v1\/runs\/3$/, body: runWithHistory },
    ]);
    renderJob();
    const curves = await screen.findByRole("region", { name: "Training curves" });
    expect(within(curves).getByRole("img", { name: /^Loss: L \(total\), L_maintain/ })).toBeInTheDocument();
  });

  it("a finished job shows absolute times; a run whose selected state is θ_init says so", async () => {
    const message = "No evaluated state stayed within the 0.5 pp accuracy budget: the selected state is θ_init, so the 'selected' results show no attack.";
    const done = { ...chain.job, ...finished, id: 40, status: "succeeded", run_id: 3 };
    mockFetch([
      { path: /^\/api\/v1\/jobs\/40$/, body: done },
      { path: /^\/api\/v1\/jobs$/, body: children.map((c) => ({ ...c, status: "succeeded" })) },
      { path: /^\/api\/v1\/job-kinds$/, body: kinds },
      { path: /^\/api\/v1\/runs\/3$/, body: { ...run, attack_outcome: { selected_step: 0, final_step: 200, selected_is_init: true, final_over_budget: true, budget_pp: 0.5, message } } },
    ]);
    renderJob();
    const note = await screen.findByTestId("selected-is-init");
    expect(note).toHaveTextContent(message);
    expect(note).toHaveTextContent("the synthetic visualizations were rendered on the selected state, θ_init here");
    expect(within(note).getByRole("link", { name: "run summary" })).toHaveAttribute("href", "/runs/3");
    const created = screen.getByText(absTime(finished.created_at));
    expect(created.tagName).toBe("TIME");
    expect(screen.getByText(/ran 10 min 0 s · ended/)).toBeInTheDocument();
    expect(screen.queryByText(/ago/)).toBeNull();
  });
});
