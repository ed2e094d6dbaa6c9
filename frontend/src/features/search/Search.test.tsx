// The label search (issue 22): /search?q= finds units by the start of their label across the
// caller's runs; the text, filters and page stay in the address; a hit opens its unit page.
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useLocation, useParams } from "react-router";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import hits from "../../test/fixtures/label-hits.json";
import { getsTo, mockPagedFetch } from "../../test/pagedFetch";
import { renderRoutes } from "../../test/renderRoutes";
import { SearchPage } from "./Search";
import { firstPerUnit, hitHref, type LabelHit } from "./labelQueries";

function UnitStub() {
  const p = useParams();
  return <p>unit page {`${p.run}/${p.layer}/${p.unit}${useLocation().search}`}</p>;
}

function renderAt(path: string) {
  return renderRoutes(path, { "/search": <SearchPage />, "/runs/:run/layers/:layer/units/:unit": <UnitStub /> });
}

/** The API's label search over `rows`: prefix of the label, state and changed filters, limit/offset, X-Total-Count. */
function serve(rows: LabelHit[]) {
  const match = (u: URL) => {
    const q = (u.searchParams.get("q") ?? "").toLowerCase();
    const state = u.searchParams.get("state");
    const changed = u.searchParams.get("changed");
    return rows.filter(
      (h) => h.label.toLowerCase().startsWith(q) && (!state || h.state === state) && (changed == null || String(h.changed) === changed),
    );
  };
  return mockPagedFetch([
    {
      path: /^\/api\/v1\/units$/,
      body: (req: Request) => {
        const u = new URL(req.url);
        const offset = Number(u.searchParams.get("offset") ?? 0);
        return match(u).slice(offset, offset + Number(u.searchParams.get("limit") ?? 50));
      },
      total: (u) => match(u).length,
    },
  ]);
}

describe("label search", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("lists the hits with their top image, label, model, run and state; each unit opens its page (the final state when the hit is)", async () => {
    const { calls } = serve(hits as LabelHit[]);
    const user = userEvent.setup();
    renderAt("/search?q=bag");
    const table = await screen.findByRole("table", { name: "Units found" });
    await waitFor(() => expect(screen.getByTestId("search-results")).toHaveAttribute("aria-busy", "false"));
    const rows = within(table).getAllByTestId("label-hit");
    expect(rows).toHaveLength(4);
    expect(getsTo(calls, "/api/v1/units")[0].toString()).toBe("q=bag&limit=25");
    expect(screen.getByRole("searchbox", { name: "Unit label starts with" })).toHaveValue("bag");
    expect(screen.getByText(/4 unit labels starting with “bag”/)).toBeInTheDocument();
    expect(document.title).toBe("Units labelled “bag…” · fvaudit");

    const first = within(rows[0]);
    expect(first.getByRole("img", { name: "top image of unit 11 (relu3), final state" })).toHaveAttribute("src", hits[0].thumb_url);
    expect(first.getByText("Bag").closest("span")).toHaveAttribute("title", "90 % of the validation top-k; enrichment p = 2.1e-9");
    expect(first.getByText("90 %")).toBeInTheDocument();
    expect(first.getByRole("link", { name: "fmnist-cnn (demo)" })).toHaveAttribute("href", "/models/1");
    expect(first.getByRole("link", { name: "#3 conv3 push-up (Bag)" })).toHaveAttribute("href", "/runs/3");
    expect(first.getByTestId("hit-changed")).toHaveTextContent("changed");
    expect(first.getByRole("link", { name: "unit 11" })).toHaveAttribute("href", "/runs/3/layers/relu3/units/11?state=final");
    // the selected state is the unit page's default: no ?state=
    expect(within(rows[1]).getByRole("link", { name: "unit 12" })).toHaveAttribute("href", "/runs/3/layers/relu3/units/12");
    expect(within(rows[2]).getByText("before (θ_init)")).toBeInTheDocument();
    expect(within(rows[2]).queryByTestId("hit-changed")).toBeNull();
    // a hit without a top image: a placeholder that says so
    expect(within(rows[3]).getByRole("img", { name: "no image of unit 40 (relu3)" })).toBeInTheDocument();

    await user.click(first.getByRole("link", { name: "unit 11" }));
    expect(await screen.findByText("unit page 3/relu3/11?state=final")).toBeInTheDocument();
  });

  it("the box searches when the typing stops and keeps ?q= in the address", async () => {
    const { calls } = serve(hits as LabelHit[]);
    const user = userEvent.setup();
    renderAt("/search");
    expect(screen.getByText(/Type a label above/)).toBeInTheDocument();
    expect(getsTo(calls, "/api/v1/units")).toHaveLength(0); // nothing to search for: no request (the API would answer 422)
    await user.type(screen.getByRole("searchbox", { name: "Unit label starts with" }), "Ba");
    await waitFor(() => expect(screen.getByTestId("where")).toHaveTextContent("/search?q=Ba"));
    expect(await screen.findAllByTestId("label-hit")).toHaveLength(4);
    // debounced: one request for the text typed, none for each keystroke
    expect(getsTo(calls, "/api/v1/units").map((p) => p.get("q"))).toEqual(["Ba"]);
  });

  it("the state filter, “label changed only” and the sort go into the request and the address, from the first page", async () => {
    const { calls } = serve(hits as LabelHit[]);
    const user = userEvent.setup();
    renderAt("/search?q=bag&offset=25");
    await screen.findByTestId("search-results");
    await user.selectOptions(await screen.findByRole("combobox", { name: "State" }), "final");
    await waitFor(() => expect(screen.getAllByTestId("label-hit")).toHaveLength(1));
    let last = getsTo(calls, "/api/v1/units").at(-1)!;
    expect(last.get("state")).toBe("final");
    expect(last.get("offset")).toBeNull();
    await user.selectOptions(screen.getByRole("combobox", { name: "State" }), "");
    await user.click(screen.getByRole("checkbox", { name: "label changed only" }));
    await waitFor(() => expect(screen.getAllByTestId("label-hit")).toHaveLength(2));
    last = getsTo(calls, "/api/v1/units").at(-1)!;
    expect(last.get("changed")).toBe("true");
    expect(last.get("state")).toBeNull();
    await user.selectOptions(screen.getByRole("combobox", { name: "Sort by" }), "label");
    await waitFor(() => expect(getsTo(calls, "/api/v1/units").at(-1)!.get("sort")).toBe("label"));
    expect(screen.getByTestId("where")).toHaveTextContent("/search?q=bag&changed=1&sort=label");
  });

  it("pages through the hits with limit/offset and X-Total-Count", async () => {
    const many = Array.from({ length: 60 }, (_, i) => ({ ...(hits[1] as LabelHit), unit: i, unit_path: `/runs/3/layers/relu3/units/${i}` }));
    const { calls } = serve(many);
    const user = userEvent.setup();
    renderAt("/search?q=bag");
    await screen.findByRole("link", { name: "unit 0" });
    expect(screen.getAllByTestId("label-hit")).toHaveLength(25);
    const pager = screen.getByRole("navigation", { name: "Pages of units" });
    expect(pager).toHaveTextContent("1–25 of 60");
    await user.click(within(pager).getByRole("button", { name: "next ›" }));
    await screen.findByRole("link", { name: "unit 25" });
    expect(getsTo(calls, "/api/v1/units").at(-1)!.get("offset")).toBe("25");
    expect(screen.getByTestId("where")).toHaveTextContent("/search?q=bag&offset=25");
    await user.click(within(pager).getByRole("button", { name: "last »" }));
    await screen.findByRole("link", { name: "unit 59" });
    expect(screen.getAllByTestId("label-hit")).toHaveLength(10);
  });

  it("says when no unit has such a label", async () => {
    serve(hits as LabelHit[]);
    renderAt("/search?q=sneak");
    expect(await screen.findByTestId("search-empty")).toHaveTextContent("No unit labelled “sneak…” in the runs you can see.");
    expect(screen.queryByRole("table", { name: "Units found" })).toBeNull();
  });

  it("a query the API refuses (422) is said next to the box", async () => {
    mockPagedFetch([
      {
        path: /^\/api\/v1\/units$/,
        status: 422,
        body: { detail: [{ loc: ["query", "q"], type: "string_pattern_mismatch", msg: "String should match pattern '^[^\\x00]*\\S[^\\x00]*$'" }] },
      },
    ]);
    renderAt("/search?q=ba%00g");
    const alert = await screen.findByTestId("search-error");
    expect(alert).toHaveAttribute("role", "alert");
    expect(alert).toHaveTextContent("String should match pattern");
    expect(alert.closest("[role=search]")).toContainElement(screen.getByRole("searchbox", { name: "Unit label starts with" }));
    expect(screen.getByRole("searchbox", { name: "Unit label starts with" })).toHaveAttribute("aria-invalid", "true");
    expect(screen.queryByTestId("search-empty")).toBeNull();
  });
});

describe("label helpers", () => {
  it("the unit page of a hit keeps its state when it is the final one; the first hit of a unit is its newest run's", () => {
    expect((hits as LabelHit[]).map(hitHref)).toEqual([
      "/runs/3/layers/relu3/units/11?state=final",
      "/runs/3/layers/relu3/units/12",
      "/runs/2/layers/relu3/units/4",
      "/runs/3/layers/relu3/units/40",
    ]);
    const newer = { ...(hits[2] as LabelHit), run_id: 5, label: "Sandal" };
    expect(firstPerUnit([newer, hits[2] as LabelHit]).get("relu3\u00004")!.label).toBe("Sandal");
  });
});
