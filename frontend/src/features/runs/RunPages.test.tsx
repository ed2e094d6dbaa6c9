// Run summary and unit page rendered from fixtures recorded from the real API.
import { cleanup, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch } from "../../test/fetchMock";
import run from "../../test/fixtures/run-detail.json";
import unit11 from "../../test/fixtures/run-unit-11.json";
import units from "../../test/fixtures/run-units.json";
import { renderRoutes } from "../../test/renderRoutes";
import { RunSummary } from "./RunSummary";
import { UnitPage } from "./UnitPage";

function renderAt(path: string) {
  return renderRoutes(path, {
    "/runs/:run": <RunSummary />,
    "/runs/:run/layers/:layer": <RunSummary />,
    "/runs/:run/layers/:layer/units/:unit": <UnitPage />,
  });
}

const routes = (readOnly: boolean) => [
  { path: /^\/api\/v1\/runs\/3$/, body: { ...run, read_only: readOnly } },
  { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units$/, body: units },
  { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units\/(\d+)$/, body: (_r: Request, m: RegExpMatchArray) => ({ ...unit11, unit: Number(m[1]), read_only: readOnly }) },
];

describe("run summary", () => {
  it("shows the Table 3.1 row, push-up success, charts and the unit table; the owner can share", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch(routes(false));
    renderAt("/runs/3");
    expect(await screen.findByRole("heading", { name: /conv3 push-up \(Bag\)/ })).toBeInTheDocument();
    const row = within(screen.getByRole("region", { name: "Summary (Table 3.1)" })).getAllByRole("row")[1];
    expect(within(row).getAllByRole("cell")[1]).toHaveTextContent(run.table[0].clip_delta!.toFixed(3));
    expect(screen.getByRole("heading", { name: /Push-up success · decoy class 8 \(Bag\)/ })).toBeInTheDocument();
    expect(screen.getByRole("img", { name: /CLIP-δ per unit \(top-5, selected state\): histogram of 112 values/ })).toBeInTheDocument();
    expect(screen.getByRole("img", { name: /CLIP similarity pre vs post \(Fig. 3.5\): scatter of 112 units/ })).toBeInTheDocument();
    expect(await screen.findByText(`units 1–25 of ${units.total}`)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Share…" })).toBeInTheDocument();
    expect(screen.getByText(/Embedder:/)).toBeInTheDocument();
  });

  it("read-only (a share link, no token): no share, compare or launch controls", async () => {
    mockFetch(routes(true));
    renderAt("/runs/3?share=abcdefghijklmnopqrstuvwxyz");
    expect(await screen.findByRole("heading", { name: /conv3 push-up \(Bag\)/ })).toBeInTheDocument();
    expect(screen.getAllByText("read-only").length).toBeGreaterThan(0);
    expect(screen.queryByRole("button", { name: "Share…" })).toBeNull();
    expect(screen.queryByRole("link", { name: "Compare…" })).toBeNull();
    // links into units keep the share token
    const link = await screen.findByRole("link", { name: `unit ${units.items[0].unit}` });
    expect(link.getAttribute("href")).toMatch(/\?share=abcdefghijklmnopqrstuvwxyz$/);
  });

  it("a revoked share link says so", async () => {
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, status: 404, body: { detail: "share link not found or revoked" } }]);
    renderAt("/runs/3?share=revokedrevokedrevoked");
    expect(await screen.findByText("This share link does not work")).toBeInTheDocument();
  });
});

describe("unit page", () => {
  it("shows metrics and both galleries; ←/→ move between units", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch(routes(false));
    const user = userEvent.setup();
    renderAt("/runs/3/layers/relu3/units/11");
    expect(await screen.findByRole("heading", { name: "Training set: top-k" })).toBeInTheDocument();
    expect(screen.getByRole("heading", { name: /Validation set: top-k/ })).toBeInTheDocument();
    expect(screen.getAllByTestId("tile")).toHaveLength(40);
    expect(screen.getByRole("heading", { name: "Nearest units (whack-a-mole)" })).toBeInTheDocument();
    await user.keyboard("{ArrowRight}");
    expect(screen.getByTestId("where")).toHaveTextContent("/runs/3/layers/relu3/units/12");
    await user.keyboard("{ArrowLeft}{ArrowLeft}");
    expect(screen.getByTestId("where")).toHaveTextContent("/runs/3/layers/relu3/units/10");
    await user.click(screen.getByRole("checkbox", { name: /attacked units only/ }));
    await user.keyboard("{ArrowRight}");
    const attacked = (run.layer_info.relu3 as { attacked: number[] }).attacked;
    expect(screen.getByTestId("where")).toHaveTextContent(`/units/${attacked.find((u) => u > 10)}?nav=attacked`);
  });
});

describe("the accuracy panel", () => {
  it("says the result is within the budget and the final state over it, not that nothing stayed within", async () => {
    setToken("fva_test_token_0123456789");
    const accuracy = { init: 91.85, final: 91.4, last: 91.25, delta: -0.45, selected_step: 360, steps: 400, over_budget: true, n_images: 2000 };
    const attack_outcome = { selected_step: 360, final_step: 400, selected_is_init: false, final_over_budget: true, budget_pp: 0.5, message: null };
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, accuracy, attack_outcome, read_only: false } }, routes(false)[1], routes(false)[2]]);
    renderAt("/runs/3");
    const panel = within(await screen.findByRole("region", { name: "Accuracy" }));
    expect(panel.getByText(/Change/)).toHaveTextContent(
      "The result is the last evaluated state within the budget (step 360 of 400). The final state (step 400) is over it.");
    expect(panel.queryByText(/No evaluated state stayed within/)).toBeNull();
  });
});

describe("unit labels (issue 22)", () => {
  it("the summary shows each row's share of attacked units whose label changed, when the run has it", async () => {
    setToken("fva_test_token_0123456789");
    const row = { layer: "relu3", state: "selected", step: 360, clip_delta: 0.409, kendall_tau: 0.371, clip_w: 0.989, kendall_tau_w: 1.004,
      topk_overlap: 0.089, acc: 91.4, delta_acc: -0.45, acc_n_images: 2000, over_budget: false, run_id: 3 };
    const rows = [{ ...row, label_flip_rate: 0.8596 }, { ...row, state: "control", label_flip_rate: 0.0526 }];
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, rows, read_only: false } }, routes(false)[1], routes(false)[2]]);
    renderAt("/runs/3");
    const table = within(await screen.findByRole("region", { name: "Summary (Table 3.1)" }));
    expect(table.getByRole("columnheader", { name: "relabelled" })).toBeInTheDocument();
    const last = (i: number) => [...table.getAllByRole("row")[i].querySelectorAll("td")].pop();
    expect(last(1)).toHaveTextContent("86 %");
    expect(last(2)).toHaveTextContent("5 %");
    cleanup();
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, rows: [row], read_only: false } }, routes(false)[1], routes(false)[2]]);
    renderAt("/runs/3");                          // a run measured before labels: no such column
    const plain = within(await screen.findByRole("region", { name: "Summary (Table 3.1)" }));
    expect(plain.getAllByRole("row")).toHaveLength(2);
    expect(plain.queryByRole("columnheader", { name: "relabelled" })).toBeNull();
  });

  it("shows the class-concept label before → after, marked when it changed; none for a server without labels", async () => {
    setToken("fva_test_token_0123456789");
    const labels = {
      before: { label: 0, name: "T-shirt/top", share: 0.6, p_value: 1.2e-4 },
      after: { label: 8, name: "Bag", share: 0.8, p_value: 3.4e-7 },
    };
    mockFetch([routes(false)[0], routes(false)[1], { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units\/11$/, body: { ...unit11, labels } }]);
    renderAt("/runs/3/layers/relu3/units/11");
    const shown = await screen.findByTestId("unit-labels");
    expect(shown).toHaveTextContent("T-shirt/top 60 % → Bag 80 % changed");
    expect(within(shown).getByText("Bag").closest("span")).toHaveAttribute("title", "80 % of the validation top-k; enrichment p = 3.4e-7");
    cleanup();
    mockFetch(routes(false));                     // a run measured before labels existed
    renderAt("/runs/3/layers/relu3/units/11");
    await screen.findByRole("heading", { name: "Training set: top-k" });
    expect(screen.queryByTestId("unit-labels")).toBeNull();
  });
});

describe("addresses the run does not have (issue 13, item 13)", () => {
  it("a layer the run did not measure is a not-found page, not another layer's results", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch(routes(false));
    renderAt("/runs/3/layers/relu2");
    expect(await screen.findByRole("heading", { name: "Run 3 has no layer relu2" })).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "relu3" })).toHaveAttribute("href", "/runs/3/layers/relu3");
    expect(screen.queryByRole("region", { name: "Units" })).toBeNull();
    expect(document.title).toBe("Layer relu2 not found · Run 3: conv3 push-up (Bag) · fvaudit");
  });

  it("a unit page on such a layer, or past the layer's last unit, says so", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch(routes(false));
    renderAt("/runs/3/layers/relu2/units/5");
    expect(await screen.findByRole("heading", { name: "Run 3 has no layer relu2" })).toBeInTheDocument();
    cleanup();
    renderAt("/runs/3/layers/relu3/units/128"); // relu3 has 128 units: 0–127
    expect(await screen.findByRole("heading", { name: "Layer relu3 of run 3 has no unit 128" })).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "the last one, unit 127" })).toHaveAttribute("href", "/runs/3/layers/relu3/units/127");
    expect(screen.queryAllByTestId("tile")).toHaveLength(0);
    expect(document.title).toBe("Unit 128 not found · relu3 · conv3 push-up (Bag) · fvaudit");
  });

  it("a unit the API does not know (404) is not found too", async () => {
    setToken("fva_test_token_0123456789");
    mockFetch([
      { path: /^\/api\/v1\/runs\/3$/, body: { ...run, layer_info: {} } },
      { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units\/(\d+)$/, status: 404, body: { detail: "unit relu3/90 not found in run 3" } },
    ]);
    renderAt("/runs/3/layers/relu3/units/90");
    expect(await screen.findByRole("heading", { name: "Layer relu3 of run 3 has no unit 90" })).toBeInTheDocument();
  });
});

describe("a dead unit (issue 13, item 11)", () => {
  it("shows a clear empty state, no gallery of score-0 images marked kept", async () => {
    setToken("fva_test_token_0123456789");
    const zero = (imgs: typeof unit11.topk.val.before) => imgs.map((im) => ({ ...im, score: 0 }));
    const dead = {
      ...unit11, unit: 3, dead: true, attacked: false, next_attacked: 4,
      topk: { val: { before: zero(unit11.topk.val.before), after: zero(unit11.topk.val.before) }, train: { before: zero(unit11.topk.train.before), after: zero(unit11.topk.train.before) } },
    };
    mockFetch([
      { path: /^\/api\/v1\/runs\/3$/, body: run },
      { path: /^\/api\/v1\/runs\/3\/layers\/relu3\/units\/3$/, body: dead },
    ]);
    renderAt("/runs/3/layers/relu3/units/3");
    expect(await screen.findByText("Unit 3 is dead: it has no top-k.")).toBeInTheDocument();
    expect(screen.getByText("dead", { selector: ".badge" })).toBeInTheDocument();
    expect(screen.queryAllByTestId("tile")).toHaveLength(0);
    expect(screen.queryByText("kept")).toBeNull();
    expect(screen.queryByText(/still in the top-k/)).toBeNull();
    expect(screen.getByRole("link", { name: "Next attacked unit (4)" })).toHaveAttribute("href", "/runs/3/layers/relu3/units/4?nav=attacked");
  });
});

describe("push-up success (issue 13, item 12)", () => {
  it("names the k it counts on and shows each share before → after the attack", async () => {
    setToken("fva_test_token_0123456789");
    const pushup = {
      decoy_class: 8, decoy_class_name: "Bag", k: 5,
      val: { relu3: { share_units_with_decoy_class: 0.8, mean_decoy_class_share: 0.45, share_units_with_decoy_images: null } },
      val_init: { relu3: { share_units_with_decoy_class: 0.125, mean_decoy_class_share: 0.2, share_units_with_decoy_images: null } },
      train: { relu3: { share_units_with_decoy_class: 0.75, mean_decoy_class_share: 0.5, share_units_with_decoy_images: 0.25 } },
      train_init: { relu3: { share_units_with_decoy_class: 0.0625, mean_decoy_class_share: 0.2, share_units_with_decoy_images: 0 } },
    };
    mockFetch([{ path: /^\/api\/v1\/runs\/3$/, body: { ...run, pushup } }, ...routes(false).slice(1)]);
    renderAt("/runs/3");
    const panel = await screen.findByRole("region", { name: "Push-up success" });
    expect(within(panel).getByRole("heading")).toHaveTextContent("Push-up success · decoy class 8 (Bag) on each attacked unit's top-5");
    const head = within(panel).getAllByRole("columnheader").map((c) => c.textContent);
    expect(head).toEqual(["layer", "set", "units with the decoy class in their top-5", "decoy-class share of their top-5", "units with a decoy image"]);
    const rows = within(panel).getAllByRole("row").slice(1).map((r) => within(r).getAllByRole("cell").map((c) => c.textContent));
    expect(rows).toEqual([
      ["relu3", "training", "6 % → 75 %", "20 % → 50 %", "0 % → 25 %"],
      ["relu3", "validation", "13 % → 80 %", "20 % → 45 %", "—"],
    ]);
    expect(within(panel).getByText(/Counted on the top-5 \(k_clip = 5, the k the CLIP metrics use\); the galleries on the unit pages show the top-10\./)).toBeInTheDocument();
  });
});
