// Training curves keep an early spike visible without flattening the rest (issue 13, item 10).
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { axisDomain, clipTop, Histogram, isDegenerate, LineChart, Scatter, ticks } from "./Charts";

// an attack loss with a spike at step 3 (1000) and a smaller one at step 2 (40), then a slow decrease
const L_A = [5, 40, 1000, 4, 3.8, 3.6, 3.4, 3.2, 3, 2.8, 2.6, 2.4, 2.2, 2, 1.8, 1.6, 1.4, 1.2, 1, 0.8];
const series = [{ name: "L_A", points: L_A.map((y, i) => ({ x: i + 1, y })) }];
const yTickLabels = (svg: HTMLElement) => [...svg.querySelectorAll("text[text-anchor=end]")].map((t) => t.textContent);

describe("LineChart y scale", () => {
  it("finds the far outliers: Q1 1.75, Q3 3.65, fence 3.65 + 3 × 1.9 = 9.35, so 40 and 1000 are above; 5 is the top", () => {
    expect(clipTop(L_A)).toBe(5);
    expect(clipTop([2.3, 2, 1.7, 1.4, 1.1, 0.8, 0.5])).toBeNull(); // a plain decreasing curve: nothing to clip
    expect(clipTop([1000, 1, 1, 1])).toBeNull(); // too few points to call anything an outlier
  });

  it("by default clips the axis above the spike and marks each point above it", () => {
    render(<LineChart scales title="Attack loss L_A" xLabel="step" yLabel="L_A" series={series} />);
    // axis from 0.8 − 5 % to 5 + 5 % of the kept range 0.8–5 (0.59 to 5.21)
    const svg = screen.getByRole("img", { name: "Attack loss L_A: L_A (y axis clipped at 5.21: 2 points above it (highest 1000 at step 3))" });
    expect(yTickLabels(svg)).toEqual(["2", "4"]);
    expect(within(svg).getAllByTestId("clip-mark").map((m) => m.textContent)).toEqual(["L_A 40 at step 2 (above the axis)", "L_A 1000 at step 3 (above the axis)"]);
    expect(screen.getByRole("button", { name: "clipped" })).toHaveAttribute("aria-pressed", "true");
  });

  it("switches to the full linear range and to a log axis", async () => {
    const user = userEvent.setup();
    render(<LineChart scales title="Attack loss L_A" xLabel="step" yLabel="L_A" series={series} />);
    await user.click(screen.getByRole("button", { name: "linear" }));
    let svg = screen.getByRole("img", { name: "Attack loss L_A: L_A" });
    expect(yTickLabels(svg)).toEqual(["0", "500", "1000"]); // −49.2 … 1050: the rest of the curve is flat near 0
    expect(within(svg).queryAllByTestId("clip-mark")).toHaveLength(0);
    await user.click(screen.getByRole("button", { name: "log" }));
    svg = screen.getByRole("img", { name: "Attack loss L_A: L_A (log scale)" });
    expect(yTickLabels(svg)).toEqual(["1", "10", "100", "1000"]);
  });

  it("a log axis leaves out values ≤ 0 and says how many; without the toggle the axis is linear", async () => {
    const user = userEvent.setup();
    const withZero = [{ name: "L_A", points: [...series[0].points, { x: 21, y: 0 }] }];
    render(<LineChart scales title="push-up L_A" xLabel="step" yLabel="L_A" series={withZero} />);
    await user.click(screen.getByRole("button", { name: "log" }));
    expect(screen.getByRole("img", { name: "push-up L_A: L_A (log scale; 1 value ≤ 0 left out)" })).toBeInTheDocument();
    render(<LineChart title="α trajectory" xLabel="step" yLabel="α" series={series} />);
    expect(screen.getByRole("img", { name: "α trajectory: L_A" })).toBeInTheDocument();
    expect(screen.queryByRole("group", { name: "α trajectory: y scale" })).toBeNull();
  });

  it("a curve without a spike starts linear, with nothing to clip", () => {
    render(<LineChart scales title="Loss" xLabel="step" yLabel="loss" series={[{ name: "L", points: [2.3, 2, 1.7, 1.4, 1.1, 0.8].map((y, i) => ({ x: i, y })) }]} />);
    expect(screen.getByRole("button", { name: "linear" })).toHaveAttribute("aria-pressed", "true");
    expect(screen.getByRole("button", { name: "clipped" })).toBeDisabled();
  });
});

// Issue 19, item 1: the hand-written tick loop never ended on 0.9999999999999998…1.0 (the step
// was below the spacing of doubles at 1.0) and the run page died with `Invalid array length`.
describe("ticks and domains on degenerate ranges", () => {
  it("a span of one double spacing gives one tick at the value, at once", () => {
    expect(ticks(0.9999999999999998, 1)).toEqual([1]);
    expect(ticks(1, 1)).toEqual([1]);
    expect(ticks(0, 0)).toEqual([0]);
    expect(ticks(1, 0.9999999999999998)).toEqual([1]); // reversed ends
  });

  it("NaN, infinite or empty input gives no ticks instead of a loop", () => {
    expect(ticks(NaN, 1)).toEqual([]);
    expect(ticks(0, Infinity)).toEqual([]);
    expect(ticks(-Infinity, Infinity)).toEqual([]);
  });

  it("ordinary ranges: round d3 steps, each tick once", () => {
    expect(ticks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(ticks(0.59, 5.21, 3)).toEqual([2, 4]);
    expect(ticks(-0.013, 0.021, 5)).toEqual([-0.01, -0.005, 0, 0.005, 0.01, 0.015, 0.02]);
    expect(ticks(0.1, 0.3, 2)).toEqual([0.1, 0.2, 0.3]); // no 0.30000000000000004
  });

  it("integer ticks for counts: 5 units never give 2.5", () => {
    expect(ticks(0, 5, 3, true)).toEqual([0, 2, 4]);
    expect(ticks(0, 2, 3, true)).toEqual([0, 1, 2]); // d3 would step 0.5
    expect(ticks(0, 1, 3, true)).toEqual([0, 1]);
    expect(ticks(0.2, 0.8, 3, true)).toEqual([]); // no whole number in range
    expect(ticks(3, 3, 3, true)).toEqual([3]);
  });

  it("a degenerate domain is widened around its value; nice() rounds the ends", () => {
    expect(axisDomain(0.9999999999999998, 1)).toEqual([0.95, 1.05]);
    expect(axisDomain(0, 0)).toEqual([-0.5, 0.5]);
    expect(axisDomain(-2, -2)).toEqual([-2.1, -1.9]);
    expect(axisDomain(0.013, 0.987, { nice: true, n: 5 })).toEqual([0, 1]);
    expect(axisDomain(0, 7, { nice: true, n: 3 })).toEqual([0, 8]);
    expect(axisDomain(NaN, 1)).toEqual([0, 1]);
    expect(isDegenerate(0.9999999999999998, 1)).toBe(true);
    expect(isDegenerate(0.999, 1)).toBe(false);
  });
});

const xTickLabels = (svg: HTMLElement) => [...svg.querySelectorAll("text[text-anchor=middle]:not(.axis-label)")].map((t) => t.textContent);
const barCounts = (svg: HTMLElement) => [...svg.querySelectorAll("rect.bar title")].map((t) => Number(/: (\d+) units$/.exec(t.textContent ?? "")![1]));

describe("Histogram", () => {
  it("renders values that span one double spacing (the demo's Kendall-τ) with sane axes", () => {
    const values = [0.9999999999999998, 1, 1, 0.9999999999999998, 1];
    render(<Histogram title="Kendall-τ per unit" label="Kendall-τ" values={values} />);
    const svg = screen.getByRole("img", { name: "Kendall-τ per unit: histogram of 5 values" });
    expect(xTickLabels(svg)).toEqual(["0.94", "0.96", "0.98", "1", "1.02", "1.04", "1.06"]); // 0.95…1.05, nice: 0.94…1.06
    // all five units in one bin; integer counts on the y axis (0, 2, 4, 6 up to the nice top 6)
    expect(barCounts(svg).reduce((a, b) => a + b, 0)).toBe(5);
    expect(Math.max(...barCounts(svg))).toBe(5);
    expect(yTickLabels(svg)).toEqual(["0", "2", "4", "6"]);
  });

  it("5 units over a range: whole-number count ticks, bins over round edges", () => {
    render(<Histogram title="CLIP-δ per unit" label="CLIP-δ" bins={5} values={[0.01, 0.05, 0.21, 0.44, 0.98, null, NaN]} />);
    const svg = screen.getByRole("img", { name: "CLIP-δ per unit: histogram of 5 values" });
    expect(barCounts(svg)).toEqual([2, 1, 1, 0, 1]); // bins of 0.2 from 0 to 1
    expect(yTickLabels(svg)).toEqual(["0", "1", "2"]);
    expect(screen.getByText(/5 units · mean 0\.338 · 2 undefined skipped/)).toBeInTheDocument();
  });

  it("no values: says so instead of drawing", () => {
    render(<Histogram title="CLIP-δ per unit" label="CLIP-δ" values={[null, null]} />);
    expect(screen.getByText("No values.")).toBeInTheDocument();
    expect(screen.queryByRole("img")).toBeNull();
  });

  it("a scatter with every point equal still draws one tick per axis", () => {
    render(<Scatter title="pre vs post" xLabel="pre" yLabel="post" points={[{ x: 1, y: 1, id: 0 }, { x: 0.9999999999999998, y: 1, id: 1 }]} />);
    const svg = screen.getByRole("img", { name: "pre vs post: scatter of 2 units" });
    expect(yTickLabels(svg)).toEqual(["0.95", "1", "1.05"]);
  });
});
