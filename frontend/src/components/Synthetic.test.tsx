// A dead unit has no top-k, so no measure that compares with it (issue 19, item 4: it showed an agreement value).
import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { SyntheticNumbers, SyntheticPairs } from "./Synthetic";

const values = { natural_clip_delta: 0.2, synthetic_clip_delta: 0.05, synthetic_transfer: 0.91, ns_agreement: 1.42 };
const shown = () => Object.fromEntries([...document.querySelectorAll(".synth-numbers div")].map((d) => [d.querySelector("dt")!.textContent, d.querySelector("dd")!.textContent]));

describe("SyntheticNumbers", () => {
  it("a live unit shows every measure with 3 decimals", () => {
    render(<SyntheticNumbers values={values} />);
    expect(shown()).toEqual({ "CLIP-δ (natural)": "0.200", "synthetic CLIP-δ": "0.050", "synthetic transfer": "0.910", "natural–synthetic agreement": "1.420" });
  });

  it("a dead unit shows 'dead unit' for the agreement and the natural CLIP-δ, no value", () => {
    render(<SyntheticNumbers values={values} dead />);
    expect(shown()).toEqual({ "CLIP-δ (natural)": "dead unit", "synthetic CLIP-δ": "0.050", "synthetic transfer": "0.910", "natural–synthetic agreement": "dead unit" });
    expect(screen.queryByText("1.420")).toBeNull();
  });
});

describe("SyntheticPairs", () => {
  it("names the state of its 'after' column", () => {
    render(<SyntheticPairs before={[{ url: "/b.png", seed: 1 }]} after={[{ url: "/a.png", seed: 1 }]} unit={3} layer="relu3" afterState="selected state = θ_init" />);
    expect(within(screen.getByRole("table")).getByRole("columnheader", { name: "after (selected state = θ_init)" })).toBeInTheDocument();
  });
});
