// One format per measure on every page, the k each measure uses, and relative times that
// are computed against a given now (issue 19, items 4 and 11).
import { describe, expect, it } from "vitest";
import { clip, metric, metricLabel, overlap, tau, unitRole, when } from "./format";

describe("measure formats", () => {
  it("overlap is always a percentage; τ and CLIP measures have 3 decimals", () => {
    expect(overlap(0.4)).toBe("40 %");
    expect(overlap(1)).toBe("100 %");
    expect(overlap(null)).toBe("—");
    expect(tau(0.96912)).toBe("0.969");
    expect(tau(-0.5)).toBe("−0.500");
    expect(clip(0.0012)).toBe("0.001");
    expect(metric("topk_overlap", 0.2)).toBe("20 %");
    expect(metric("kendall_tau_w", 1)).toBe("1.000");
    expect(metric("clip_w", 0.9994)).toBe("0.999");
  });

  it("CLIP-δ, CLIP-W and the overlap name the top-k they are computed on; Kendall-τ needs none", () => {
    expect(metricLabel("topk_overlap", 5)).toBe("top-5 overlap");
    expect(metricLabel("clip_delta", 5)).toBe("CLIP-δ (top-5)");
    expect(metricLabel("clip_w", 10)).toBe("CLIP-W (top-10)");
    expect(metricLabel("kendall_tau", 5)).toBe("Kendall-τ");
    expect(metricLabel("topk_overlap")).toBe("top-k overlap");
  });

  it("the α = 0 control's units are targets, an attack's are attacked", () => {
    expect(unitRole("finetune").many).toBe("target units (not attacked: α = 0 control)");
    expect(unitRole("push_down").badge).toBe("attacked");
    expect(unitRole(undefined).badge).toBe("attacked");
  });
});

describe("when", () => {
  it("is relative to the now it is given, so a re-render moves it on", () => {
    const t = "2026-11-25T06:00:00Z";
    const at = Date.parse(t);
    expect(when(t, at + 10_000)).toBe("just now");
    expect(when(t, at + 2 * 60_000)).toBe("2 min ago");
    expect(when(t, at + 7 * 60_000)).toBe("7 min ago");
    expect(when(t, at + 3 * 3600_000)).toBe("3 h ago");
  });
});
