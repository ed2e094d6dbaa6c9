// A detection's unit page: suspicion, rank and each measure's value with its calibrated
// suspicion beside the reference's and the suspect's top-k; previous / next by rank (and
// the ← / → keys) and by index; the population regime's single gallery with the
// over-represented class marked; the API's 404 for a layer or unit the detection lacks.
import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch } from "../../test/fetchMock";
import detail from "../../test/fixtures/detection-reference.json";
import unit from "../../test/fixtures/detection-unit.json";
import { renderRoutes } from "../../test/renderRoutes";
import { DetectionUnitPage } from "./DetectionUnit";

const renderAt = (path: string) =>
  renderRoutes(path, {
    "/detections/:detection/layers/:layer/units/:unit": <DetectionUnitPage />,
    "/detections/:detection": <p>detection page</p>,
  });

const units = detail.units.relu3;
/** the unit detail the API gives for any unit of relu3, its neighbours by rank and index as the API computes them */
function unitAt(u: number) {
  const row = units.find((x) => x.unit === u)!;
  const order = units.filter((x) => x.rank != null).map((x) => x.unit);
  const pos = order.indexOf(u);
  return {
    ...unit, ...row, prev_unit: u > 0 ? u - 1 : null, next_unit: u + 1 < 12 ? u + 1 : null,
    prev_ranked: pos > 0 ? order[pos - 1] : null, next_ranked: pos >= 0 && pos + 1 < order.length ? order[pos + 1] : null,
  };
}

const routes = [
  { path: /^\/api\/v1\/detections\/41$/, body: detail },
  {
    path: /^\/api\/v1\/detections\/41\/layers\/([^/]+)\/units\/(\d+)$/,
    respond: (_: Request, m: RegExpMatchArray) =>
      m[1] !== "relu3"
        ? { status: 404, body: { detail: `detection 41 did not check layer '${m[1]}'; it checked relu3, relu2` } }
        : Number(m[2]) >= 12
          ? { status: 404, body: { detail: `layer relu3 has 12 units (0..11); there is no unit ${m[2]}` } }
          : { status: 200, body: unitAt(Number(m[2])) },
  },
];

describe("detection unit page", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("shows the unit's suspicion and evidence beside the reference's and the suspect's top-k", async () => {
    mockFetch(routes);
    renderAt("/detections/41/layers/relu3/units/9");
    const h1 = await screen.findByRole("heading", { level: 1 });
    expect(h1).toHaveTextContent("Unit 9 relu3");
    await waitFor(() => expect(screen.getByTestId("rank")).toHaveTextContent("rank 1 of 11"));
    expect(h1).toHaveTextContent("flagged");
    expect(document.title).toBe("Unit 9 · relu3 · check the push-down · fvaudit");

    const ev = screen.getByRole("region", { name: "Evidence" });
    expect(ev).toHaveTextContent(`suspicion${unit.suspicion!.toFixed(3)}`);
    const rows = within(within(ev).getByRole("table", { name: "Measures" })).getAllByRole("row").slice(1);
    expect(rows.map((r) => r.textContent)).toEqual(["clip_delta", "tau_drop", "overlap_loss", "weight_distance"].map((k) => {
      const m = unit.measures[k as "clip_delta"];
      const label = { clip_delta: "CLIP-δ", tau_drop: "1 − Kendall-τ", overlap_loss: "1 − top-k overlap", weight_distance: "weight distance" }[k];
      return `${label}${m.value!.toFixed(3)}${m.suspicion!.toFixed(3)}`;
    }));
    // the measure that drove the suspicion is the highlighted row
    expect(rows.filter((r) => r.classList.contains("selected")).map((r) => r.querySelector("th")!.textContent)).toHaveLength(1);
    expect(ev).toHaveTextContent("Layer relu3: manipulated · p = 2.3e−5 3 of 11 units flagged, 0.6 expected by chance");

    const reference = screen.getByRole("region", { name: "Reference top-k · fmnist-cnn (demo)" });
    const suspect = screen.getByRole("region", { name: "Suspect top-k · fmnist-cnn (demo) · attack 31 (final)" });
    expect(within(reference).getAllByTestId("tile")).toHaveLength(10);
    expect(within(suspect).getAllByTestId("tile")).toHaveLength(10);
    // 4 images of the reference's top-k kept by the suspect, 6 new ones
    expect(within(suspect).getAllByText("new")).toHaveLength(6);
    expect(within(suspect).getAllByText("kept")).toHaveLength(4);
    expect(within(suspect).getAllByRole("img")[0].getAttribute("src")).toBe(unit.suspect_topk[0].thumb_url);
  });

  it("steps through the units by rank (buttons and ← / → keys) and by index", async () => {
    mockFetch(routes);
    const user = userEvent.setup();
    renderAt("/detections/41/layers/relu3/units/9");
    const byRank = await screen.findByRole("navigation", { name: "By rank" });
    expect(within(byRank).getByRole("button", { name: /more suspicious/ })).toBeDisabled();
    await user.click(within(byRank).getByRole("button", { name: "less suspicious (unit 5) →" }));
    expect(screen.getByTestId("where").textContent).toBe("/detections/41/layers/relu3/units/5");
    await waitFor(() => expect(screen.getByTestId("rank")).toHaveTextContent("rank 2 of 11"));
    fireEvent.keyDown(window, { key: "ArrowRight" });
    expect(screen.getByTestId("where").textContent).toBe("/detections/41/layers/relu3/units/2");
    await waitFor(() => expect(screen.getByTestId("rank")).toHaveTextContent("rank 3 of 11"));
    fireEvent.keyDown(window, { key: "ArrowLeft" });
    expect(screen.getByTestId("where").textContent).toBe("/detections/41/layers/relu3/units/5");
    const byIndex = await screen.findByRole("navigation", { name: "By index" });
    await waitFor(() => expect(within(byIndex).getByRole("button", { name: "unit 6 →" })).toBeEnabled());
    await user.click(within(byIndex).getByRole("button", { name: "← unit 4" }));
    expect(screen.getByTestId("where").textContent).toBe("/detections/41/layers/relu3/units/4");
  });

  it("population regime: the suspect's top-k alone, the over-represented class marked", async () => {
    const pop = {
      ...unit, regime: "population", reference_topk: null, driver: "class_share",
      measures: { class_share: { value: 0.8, suspicion: 0.99 } },
      layer_verdict: { ...unit.layer_verdict, flagged_class: 8 }, models: { suspect: unit.models.suspect },
    };
    mockFetch([{ path: /^\/api\/v1\/detections\/41$/, body: detail }, { path: /\/units\/9$/, body: pop }]);
    renderAt("/detections/41/layers/relu3/units/9");
    const gallery = await screen.findByRole("region", { name: /^Suspect top-k/ });
    expect(screen.queryByRole("region", { name: /^Reference top-k/ })).toBeNull();
    expect(within(gallery).getAllByText("decoy class")).toHaveLength(unit.suspect_topk.filter((i) => i.label === 8).length);
    expect(screen.getByText(/judged by its classes against the clean population; Bag, over-represented in this layer, is marked/)).toBeInTheDocument();
    expect(within(screen.getByRole("table", { name: "Measures" })).getByRole("rowheader")).toHaveTextContent("class share");
  });

  it("a layer the detection did not check, or a unit past the last, is a not-found page with the API's message", async () => {
    mockFetch(routes);
    const { unmount } = renderAt("/detections/41/layers/relu2x/units/0");
    const nf = await screen.findByTestId("not-found");
    expect(nf).toHaveTextContent("Detection 41 has no unit 0 of relu2x");
    expect(nf).toHaveTextContent("it checked relu3, relu2");
    expect(within(nf).getByRole("link", { name: /Back to/ }).getAttribute("href")).toBe("/detections/41");
    expect(document.title).toBe("Unit 0 not found · relu2x · check the push-down · fvaudit");
    unmount();
    renderAt("/detections/41/layers/relu3/units/12");
    expect(await screen.findByTestId("not-found")).toHaveTextContent("layer relu3 has 12 units (0..11); there is no unit 12");
    expect(screen.queryByTestId("tile")).toBeNull();
  });
});
