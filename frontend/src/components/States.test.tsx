// Relative times keep ticking (issue 19, item 11: "2 min ago" froze on finished jobs).
import { act, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { absTime } from "../lib/format";
import { When } from "./States";

describe("When", () => {
  afterEach(() => vi.useRealTimers());

  it("re-renders every half minute, so '2 min ago' becomes '3 min ago'", () => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date("2026-11-25T06:02:00Z"));
    render(<When iso="2026-11-25T06:00:00Z" />);
    const t = screen.getByText("2 min ago");
    expect(t.tagName).toBe("TIME");
    expect(t).toHaveAttribute("dateTime", "2026-11-25T06:00:00Z");
    expect(t).toHaveAttribute("title", absTime("2026-11-25T06:00:00Z"));
    act(() => vi.advanceTimersByTime(60_000));
    expect(screen.getByText("3 min ago")).toBeInTheDocument();
  });

  it("absolute: the date itself", () => {
    render(<When iso="2026-11-25T06:00:00Z" absolute />);
    expect(screen.getByText(absTime("2026-11-25T06:00:00Z"))).toBeInTheDocument();
  });
});
