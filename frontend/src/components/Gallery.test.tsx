/// <reference types="node" />
import { render, screen, within } from "@testing-library/react";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { UnitDetail } from "../api/client";
import unit from "../test/fixtures/unit-detail.json";
import { BeforeAfter, classSummary, Gallery, keptOnTopK } from "./Gallery";

const d = unit as unknown as UnitDetail;
const val = d.topk.val;

describe("Gallery", () => {
  it("shows every top-k image lazily, with rank, class label and score, linking to the full image", () => {
    render(<Gallery title="Before" images={val.before} variant="before" />);
    const tiles = screen.getAllByTestId("tile");
    expect(tiles).toHaveLength(val.before.length);
    val.before.forEach((im, i) => {
      const t = within(tiles[i]);
      const img = t.getByRole("img");
      expect(img).toHaveAttribute("src", im.thumb_url);
      expect(img).toHaveAttribute("loading", "lazy");
      expect(img).toHaveAccessibleName(`#${i + 1}: ${im.label_name} (image ${im.image_id})`);
      expect(t.getByText(`#${i + 1}`)).toBeInTheDocument();
      expect(t.getByText(im.label_name)).toBeInTheDocument();
      expect(t.getByRole("link")).toHaveAttribute("href", im.full_url);
    });
    // scores: 4 significant digits
    expect(within(tiles[0]).getByTitle("activation score a_j(x)").textContent).toBe(String(Number(val.before[0].score!.toPrecision(4))));
  });

  it("summarises the classes of the top-k", () => {
    const imgs = [{ label_name: "Bag" }, { label_name: "Coat" }, { label_name: "Bag" }] as never;
    expect(classSummary(imgs)).toBe("Bag ×2, Coat");
  });

  it("before/after side by side: marks images kept, new and dropped", () => {
    const before = val.before.slice(0, 4);
    const after = [val.before[1], ...val.after.filter((a) => !before.some((b) => b.image_id === a.image_id)).slice(0, 3)];
    render(<BeforeAfter title="Validation set" before={before} after={after} />);
    const [b, a] = screen.getAllByRole("region").filter((r) => r.classList.contains("gallery"));
    expect(within(b).getByRole("heading", { name: "Before (θ_init)" })).toBeInTheDocument();
    expect(within(a).getByRole("heading", { name: "After (selected state)" })).toBeInTheDocument(); // the state shown, named (issue 19, item 3)
    expect(within(b).getAllByText("dropped")).toHaveLength(3);
    expect(within(b).getAllByText("kept")).toHaveLength(1);
    expect(within(a).getAllByText("new")).toHaveLength(3);
    expect(within(a).getByText(/1\/4 kept from the top-4 before/)).toBeInTheDocument();
    expect(within(b).getByText(/1\/4 still in the top-4 after/)).toBeInTheDocument();
    // a dropped image says so to a screen reader too
    expect(within(b).getAllByRole("img")[0]).toHaveAccessibleName(`#1: ${before[0].label_name} (image ${before[0].image_id}), dropped from the top-k after the attack`);
  });

  it("marks dropped images without fading their pixels (issue 13, item 14)", () => {
    // the stylesheet frames a dropped tile; no rule for it may change opacity or filter the image
    // read from disk: Vitest runs with css: false, which empties stylesheet imports (?raw too)
    const css = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "../styles.css"), "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
    const rules = [...css.matchAll(/([^{}]+)\{([^}]*)\}/g)].filter(([, sel]) => /\.dropped/.test(sel));
    expect(rules.map(([, sel]) => sel.trim())).toContain(".tile.dropped img");
    for (const [, sel, body] of rules) expect(`${sel.trim()} { ${body.trim()} }`).not.toMatch(/opacity|filter/);
    expect(rules.find(([, sel]) => sel.trim() === ".tile.dropped img")![2]).toMatch(/border-style: dashed/);
  });

  it("highlights the decoy class of a push-up", () => {
    const imgs = val.after.slice(0, 3).map((im, i) => ({ ...im, label: i === 1 ? 8 : 0, label_name: i === 1 ? "Bag" : "T-shirt/top" }));
    render(<Gallery title="After" images={imgs} variant="after" highlightLabel={8} />);
    expect(screen.getAllByText("decoy class")).toHaveLength(1);
    expect(screen.getAllByTestId("tile")[1]).toHaveClass("decoy");
  });

  it("says why it is empty", () => {
    render(<Gallery title="Before" images={[]} variant="before" />);
    expect(screen.getByText(/No images \(the unit is dead/)).toBeInTheDocument();
  });
});

describe("the k of the kept count (issue 19, item 4)", () => {
  it("a top-10 gallery beside top-5 measures counts the kept images on both ks", () => {
    const ten = val.before.slice(0, 10);
    // after: the before's images 6–10 first (they were not in its top-5), then its 1–5: all 10 kept, none of the top-5
    const after = [...ten.slice(5), ...ten.slice(0, 5)];
    render(<BeforeAfter title="Validation set" before={ten} after={after} afterTitle="After (final state, step 300)" measureK={5} />);
    const [b, a] = screen.getAllByRole("region").filter((r) => r.classList.contains("gallery"));
    expect(within(a).getByRole("heading", { name: "After (final state, step 300)" })).toBeInTheDocument();
    expect(within(a).getByText(/10\/10 kept from the top-10 before · on the top-5 the measures use: 0\/5/)).toBeInTheDocument();
    expect(within(b).getByText(/10\/10 still in the top-10 after · on the top-5 the measures use: 0\/5/)).toBeInTheDocument();
  });

  it("keptOnTopK counts the first k of one side among the first k of the other", () => {
    const ims = val.before.slice(0, 6);
    expect(keptOnTopK(ims, [ims[1], ims[5], ims[0], ims[2]], 3)).toBe(2); // top-3 {0,1,2} vs {1,5,0}
    expect(keptOnTopK(ims, ims, 4)).toBe(4);
  });

  it("no second count when the gallery is no longer than the measures' k", () => {
    const five = val.before.slice(0, 5);
    render(<BeforeAfter title="Validation set" before={five} after={five} measureK={5} />);
    expect(screen.queryByText(/the measures use/)).toBeNull();
  });
});
