import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { UnitDetail } from "../api/client";
import unit from "../test/fixtures/unit-detail.json";
import { BeforeAfter, classSummary, Gallery } from "./Gallery";

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
    expect(within(a).getByRole("heading", { name: "After (θ_final)" })).toBeInTheDocument();
    expect(within(b).getAllByText("dropped")).toHaveLength(3);
    expect(within(b).getAllByText("kept")).toHaveLength(1);
    expect(within(a).getAllByText("new")).toHaveLength(3);
    expect(within(a).getByText(/1\/4 kept from before/)).toBeInTheDocument();
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
