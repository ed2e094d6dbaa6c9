// Training curves keep an early spike visible without flattening the rest (issue 13, item 10).
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { clipTop, LineChart } from "./Charts";

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
