// /jobs (issue 19, item 6): every top-level job, filtered by kind and status, a page at a
// time, each linking to its job page and to what it made.
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import chain from "../../test/fixtures/job-chain.json";
import sweepKind from "../../test/fixtures/job-kind-sweep.json";
import kinds from "../../test/fixtures/job-kinds.json";
import { getsTo, mockPagedFetch } from "../../test/pagedFetch";
import { renderRoutes } from "../../test/renderRoutes";
import { Jobs } from "./Jobs";

const base = { ...chain.job, children: [], progress: {}, error: null };
const jobs = [
  { ...base, id: 50, kind: "sweep", status: "running", run_id: null, spec: { name: "norm vs vulnerability" }, progress: { stage: "attack", done: 3, total: 10 } },
  { ...base, id: 49, kind: "audit", status: "succeeded", run_id: 7, spec: { name: "relu3 push-down" }, finished_at: "2026-12-01T10:00:00Z" },
  { ...base, id: 48, kind: "audit", status: "failed", run_id: 6, spec: { name: "broken" }, error: "the model's weights are missing" },
];

const renderAt = (path = "/jobs") => renderRoutes(path, { "/jobs": <Jobs /> });

// tests with many interactions get 15 s (the default 5 s is tight on 2 shared cores)
describe("jobs index", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("lists top-level jobs, each linking to its page and its result; a failed one says why", async () => {
    const { calls } = mockPagedFetch([
      { path: /^\/api\/v1\/jobs$/, body: jobs, total: 3 },
      { path: /^\/api\/v1\/job-kinds$/, body: [...kinds, sweepKind] },
    ]);
    renderAt();
    expect(await screen.findByRole("link", { name: "job 50: norm vs vulnerability" })).toHaveAttribute("href", "/jobs/50");
    const rows = screen.getAllByRole("row").slice(1);
    expect(within(rows[0]).getByRole("link", { name: "sweep" })).toHaveAttribute("href", "/sweeps/50");
    expect(within(rows[1]).getByRole("link", { name: "run 7" })).toHaveAttribute("href", "/runs/7");
    expect(within(rows[2]).getByText("the model's weights are missing")).toBeInTheDocument();
    expect(getsTo(calls, "/api/v1/jobs")[0].get("top_level")).toBe("true");
    expect(document.title).toBe("Jobs · fvaudit");
  });

  it("kind and status filters and the page go into the request", async () => {
    const { calls } = mockPagedFetch([
      { path: /^\/api\/v1\/jobs$/, body: jobs, total: 80 },
      { path: /^\/api\/v1\/job-kinds$/, body: [...kinds, sweepKind] },
    ]);
    const user = userEvent.setup();
    renderAt();
    await screen.findByRole("link", { name: "job 50: norm vs vulnerability" });
    expect(screen.getByRole("navigation", { name: "Pages of jobs" })).toHaveTextContent("1–25 of 80");
    await user.click(screen.getByRole("button", { name: "next ›" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/jobs").at(-1)!.get("offset")).toBe("25"));
    await user.selectOptions(screen.getByRole("combobox", { name: "Kind" }), "sweep");
    await waitFor(() => expect(getsTo(calls, "/api/v1/jobs").at(-1)!.get("kind")).toBe("sweep"));
    expect(getsTo(calls, "/api/v1/jobs").at(-1)!.get("offset")).toBe("0");
    await user.selectOptions(screen.getByRole("combobox", { name: "Status" }), "failed");
    await waitFor(() => expect(getsTo(calls, "/api/v1/jobs").at(-1)!.get("status")).toBe("failed"));
    expect(getsTo(calls, "/api/v1/jobs").at(-1)!.get("kind")).toBe("sweep");
    expect(screen.getByTestId("where")).toHaveTextContent("/jobs?kind=sweep&status=failed");
    await user.click(screen.getByRole("button", { name: "clear filters" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/jobs").at(-1)!.get("kind")).toBeNull());
  });
});
