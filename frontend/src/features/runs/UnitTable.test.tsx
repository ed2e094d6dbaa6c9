import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { describe, expect, it, vi } from "vitest";
import type { UnitRow } from "../../api/client";
import page from "../../test/fixtures/units-page.json";
import { UnitListNotice, unitListNotice, UnitTable, type UnitTableProps } from "./UnitTable";

const rows = page.items as UnitRow[];

function setup(over: Partial<UnitTableProps> = {}) {
  const props: UnitTableProps = {
    rows, total: 112, page: 1, pageSize: 8, sort: "clip_delta", order: "desc", attackedOnly: true,
    onSort: vi.fn(), onPage: vi.fn(), onAttackedOnly: vi.fn(), onOpen: vi.fn(),
    hrefFor: (u) => `/runs/1/layers/relu3/units/${u}`,
    ...over,
  };
  render(
    <MemoryRouter>
      <UnitTable {...props} />
    </MemoryRouter>,
  );
  return props;
}

describe("UnitTable", () => {
  it("lists the units with their metrics, formatted", () => {
    setup();
    const body = screen.getAllByRole("rowgroup")[1];
    const trs = within(body).getAllByRole("row");
    expect(trs).toHaveLength(rows.length);
    const cells = within(trs[0]).getAllByRole("cell").map((c) => c.textContent);
    const r = rows[0];
    expect(cells).toEqual([
      `unit ${r.unit}`, "attacked", r.clip_delta!.toFixed(3), r.kendall_tau!.toFixed(3), r.clip_w!.toFixed(3),
      r.kendall_tau_w!.toFixed(3), `${Math.round(r.topk_overlap! * 100)} %`,
    ]);
    expect(within(trs[0]).getByRole("link", { name: `unit ${r.unit}` })).toHaveAttribute("href", `/runs/1/layers/relu3/units/${r.unit}`);
    expect(screen.getByText("units 1–8 of 112")).toBeInTheDocument();
  });

  it("shows dead units and undefined values plainly", () => {
    setup({ rows: [{ unit: 3, attacked: false, dead: true, clip_delta: null, kendall_tau: null, clip_w: null, kendall_tau_w: null, topk_overlap: null }], total: 1 });
    const row = within(screen.getAllByRole("rowgroup")[1]).getByRole("row");
    expect(within(row).getByText("dead")).toBeInTheDocument();
    expect(within(row).getAllByText("—")).toHaveLength(5);
  });

  it("sorts by a column: the active one flips, a new one starts with the most changed units", async () => {
    const user = userEvent.setup();
    const p = setup();
    const delta = screen.getByRole("columnheader", { name: /CLIP-δ/ });
    expect(delta).toHaveAttribute("aria-sort", "descending");
    expect(screen.getByRole("columnheader", { name: /Kendall-τ-W/ })).toHaveAttribute("aria-sort", "none");
    await user.click(within(delta).getByRole("button"));
    expect(p.onSort).toHaveBeenLastCalledWith("clip_delta", "asc");
    await user.click(screen.getByRole("button", { name: "Kendall-τ" }));
    expect(p.onSort).toHaveBeenLastCalledWith("kendall_tau", "asc"); // low τ = ranking changed
    await user.click(screen.getByRole("button", { name: /^top-k overlap/ }));
    expect(p.onSort).toHaveBeenLastCalledWith("topk_overlap", "asc");
    await user.click(screen.getByRole("button", { name: /^unit/ }));
    expect(p.onSort).toHaveBeenLastCalledWith("unit", "asc");
  });

  it("pages, with the ends disabled", async () => {
    const user = userEvent.setup();
    const p = setup({ page: 1 });
    expect(screen.getByRole("button", { name: "‹ previous" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "« first" })).toBeDisabled();
    expect(screen.getByText("page 1 of 14")).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "next ›" }));
    expect(p.onPage).toHaveBeenLastCalledWith(2);
    await user.click(screen.getByRole("button", { name: "last »" }));
    expect(p.onPage).toHaveBeenLastCalledWith(14);
  });

  it("on the last page, next is disabled", () => {
    setup({ page: 14 });
    expect(screen.getByRole("button", { name: "next ›" })).toBeDisabled();
    expect(screen.getByText("units 105–112 of 112")).toBeInTheDocument();
  });

  it("opens a unit from its row, and filters attacked units", async () => {
    const user = userEvent.setup();
    const p = setup();
    const tr = within(screen.getAllByRole("rowgroup")[1]).getAllByRole("row")[2];
    await user.click(within(tr).getAllByRole("cell")[3]);
    expect(p.onOpen).toHaveBeenCalledWith(rows[2].unit);
    await user.click(screen.getByRole("checkbox", { name: /attacked units only/ }));
    expect(p.onAttackedOnly).toHaveBeenCalledWith(false);
  });

  it("explains an empty filtered table", () => {
    setup({ rows: [], total: 0 });
    expect(screen.getByText(/No attacked units on this layer/)).toBeInTheDocument();
    expect(screen.getByText("no units")).toBeInTheDocument();
  });
});

// issue 19, item 5: a run without unit rows said "Loading units…" forever
describe("unitListNotice", () => {
  it("names the run status that explains a missing list, and leaves a list with rows alone", () => {
    expect(unitListNotice("queued", undefined, false)).toBe("queued");
    expect(unitListNotice("running", undefined, false)).toBe("running");
    expect(unitListNotice("running", { total: 0 }, true)).toBe("running");
    expect(unitListNotice("failed", undefined, false)).toBe("failed"); // not asked: nothing to wait for
    expect(unitListNotice("cancelled", { total: 0 }, true)).toBe("cancelled"); // asked, answered empty
    expect(unitListNotice("failed", undefined, true)).toBeNull(); // asked, the answer still coming: loading
    expect(unitListNotice("cancelled", { total: 12 }, true)).toBeNull(); // partial results: list them
    expect(unitListNotice("succeeded", { total: 0 }, true)).toBeNull(); // an empty list is the table's own "No units."
  });

  it("each notice says what happened; a failed one gives the reason, a cancelled one promises nothing", () => {
    const { rerender } = render(
      <MemoryRouter>
        <UnitListNotice status="failed" reason="CUDA out of memory" jobHref="/jobs/7" />
      </MemoryRouter>,
    );
    expect(screen.getByTestId("unit-list-notice")).toHaveTextContent("No units: the run failed before it measured them.CUDA out of memory");
    expect(screen.getByRole("link", { name: "Open the job" })).toHaveAttribute("href", "/jobs/7");
    rerender(
      <MemoryRouter>
        <UnitListNotice status="failed" />
      </MemoryRouter>,
    );
    expect(screen.getByTestId("unit-list-notice")).toHaveTextContent("no reason was recorded");
    expect(screen.queryByRole("link")).toBeNull();
    rerender(
      <MemoryRouter>
        <UnitListNotice status="cancelled" />
      </MemoryRouter>,
    );
    expect(screen.getByTestId("unit-list-notice")).toHaveTextContent("No units: the run was cancelled before it measured them. Nothing of it can be listed; launch it again to measure the units.");
    expect(screen.getByTestId("unit-list-notice")).not.toHaveTextContent(/shown below|Loading/);
    rerender(
      <MemoryRouter>
        <UnitListNotice status="queued" jobHref="/jobs/7" />
      </MemoryRouter>,
    );
    expect(screen.getByTestId("unit-list-notice")).toHaveTextContent("No units yet: the run is queued.");
    expect(screen.getByRole("link", { name: "Follow the job's progress" })).toBeInTheDocument();
  });
});

describe("the α = 0 control's units (issue 19, item 4)", () => {
  it("are targets, not attacked; measures name the k they use", () => {
    setup({ attackKind: "finetune", kClip: 5 });
    expect(screen.getByRole("checkbox", { name: "target units only" })).toBeInTheDocument();
    const body = screen.getAllByRole("rowgroup")[1];
    expect(within(body).getAllByText("target (control)").length).toBeGreaterThan(0);
    expect(within(body).queryByText("attacked")).toBeNull();
    expect(screen.getByRole("button", { name: /^top-5 overlap/ })).toBeInTheDocument();
    expect(screen.getByRole("button", { name: /^CLIP-δ \(top-5\)/ })).toBeInTheDocument();
  });
});
