// /models (issue 19, item 6): each model with its status and reason, lineage and usage; the
// filters and the page in the request (limit/offset, X-Total-Count); delete asks first, and
// a refusal (409) shows the server's reason with "hide instead".
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import models from "../../test/fixtures/models.json";
import { getsTo, mockPagedFetch } from "../../test/pagedFetch";
import { renderRoutes } from "../../test/renderRoutes";
import { Models, pruneText } from "./Models";

const demo = { ...models[0], status: "ready", status_reason: null, hidden: false, usage: { runs: 2, models: 1, jobs: 5 } };
const pending = {
  ...models[0], id: 3, name: "fmnist-cnn · norm 50%", source: "pruned", parent_model_id: 1, prune_job_id: 12,
  prune: { method: "norm", rate: 0.5 }, status: "pending", status_reason: "its prune step (job 12) was cancelled before it ran",
  hidden: false, usage: { runs: 0, models: 0, jobs: 1 },
};
const list = [demo, pending];

const renderAt = (path = "/models") => renderRoutes(path, { "/models": <Models />, "/models/:model": <p>model page</p> });

// tests with many interactions get 15 s (the default 5 s is tight on 2 shared cores)
describe("models index", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("shows status with its reason, lineage and usage; only a ready model offers an audit", async () => {
    mockPagedFetch([{ path: /^\/api\/v1\/models$/, body: list, total: 2 }]);
    renderAt();
    const row = (await screen.findByRole("link", { name: "fmnist-cnn · norm 50%" })).closest("tr")!;
    expect(within(row).getByText("pending")).toBeInTheDocument();
    expect(within(row).getByText("its prune step (job 12) was cancelled before it ran")).toBeInTheDocument();
    const lineage = within(row).getByRole("link", { name: "fmnist-cnn (demo)" });
    expect(lineage).toHaveAttribute("href", "/models/1");
    expect(lineage.closest("td")).toHaveTextContent("from fmnist-cnn (demo), norm 50 % by job 12");
    expect(within(row).getByRole("link", { name: "job 12" })).toHaveAttribute("href", "/jobs/12");
    expect(within(row).queryByRole("link", { name: "audit…" })).toBeNull();
    const ready = document.querySelector<HTMLElement>('tr[data-model="1"]')!;
    expect(within(ready).getByText("2 runs · 1 derived model · 5 jobs")).toBeInTheDocument();
    expect(within(ready).getByRole("link", { name: "audit…" })).toHaveAttribute("href", "/launch?model=1");
    expect(document.title).toBe("Models · fvaudit");
  });

  it("puts the filters and the page in the request", async () => {
    const { calls } = mockPagedFetch([{ path: /^\/api\/v1\/models$/, body: list, total: 60 }]);
    const user = userEvent.setup();
    renderAt();
    await screen.findByRole("link", { name: "fmnist-cnn · norm 50%" });
    const first = getsTo(calls, "/api/v1/models")[0];
    expect([first.get("limit"), first.get("offset"), first.get("include_hidden"), first.get("q")]).toEqual(["25", "0", null, null]);
    expect(screen.getByRole("navigation", { name: "Pages of models" })).toHaveTextContent("1–25 of 60");
    await user.click(screen.getByRole("button", { name: "next ›" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/models").at(-1)!.get("offset")).toBe("25"));
    expect(screen.getByTestId("where")).toHaveTextContent("/models?offset=25");
    await waitFor(() => expect(screen.getByRole("navigation", { name: "Pages of models" })).toHaveTextContent("26–50 of 60"));
    await user.click(screen.getByRole("button", { name: "last »" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/models").at(-1)!.get("offset")).toBe("50"));
    // a filter goes back to the first page
    await user.click(screen.getByRole("checkbox", { name: "show hidden" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/models").at(-1)!.get("include_hidden")).toBe("true"));
    expect(getsTo(calls, "/api/v1/models").at(-1)!.get("offset")).toBe("0");
    await user.type(screen.getByRole("searchbox", { name: "Model name contains" }), "norm{Enter}");
    await waitFor(() => expect(getsTo(calls, "/api/v1/models").at(-1)!.get("q")).toBe("norm"));
    await user.click(screen.getByRole("checkbox", { name: "only ready" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/models").at(-1)!.get("usable")).toBe("true"));
    expect(screen.getByTestId("where")).toHaveTextContent("/models?hidden=1&q=norm&usable=1");
  });

  it("deletes only after the confirmation, then lists again", async () => {
    let rows = list;
    const { calls } = mockPagedFetch([
      { path: /^\/api\/v1\/models$/, body: () => rows, total: 2 },
      { method: "DELETE", path: /^\/api\/v1\/models\/3$/, respond: () => ((rows = [demo]), { status: 204 }) },
    ]);
    const user = userEvent.setup();
    renderAt();
    await user.click(await screen.findByRole("button", { name: "Delete model 3 (fmnist-cnn · norm 50%)" }));
    let dialog = screen.getByRole("dialog", { name: "Delete model 3 (fmnist-cnn · norm 50%)?" });
    expect(dialog).toHaveTextContent("This deletes model 3 “fmnist-cnn · norm 50%” and its weights file, when nothing else uses it. It cannot be undone.");
    await user.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(calls.filter((c) => c.method === "DELETE")).toHaveLength(0);
    await user.click(screen.getByRole("button", { name: "Delete model 3 (fmnist-cnn · norm 50%)" }));
    dialog = screen.getByRole("dialog");
    await user.click(within(dialog).getByRole("button", { name: "Delete model 3" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(calls.filter((c) => c.method === "DELETE").map((c) => c.url)).toEqual(["/api/v1/models/3"]);
    await waitFor(() => expect(screen.queryByRole("link", { name: "fmnist-cnn · norm 50%" })).toBeNull());
  });

  it("a refused delete (409) shows the server's reason and offers to hide instead", async () => {
    const reason = "model 1 has 2 runs and 1 derived model: it can be hidden, not deleted";
    const { calls } = mockPagedFetch([
      { path: /^\/api\/v1\/models$/, body: list, total: 2 },
      { method: "DELETE", path: /^\/api\/v1\/models\/1$/, status: 409, body: { detail: reason } },
      { method: "PATCH", path: /^\/api\/v1\/models\/1$/, body: { ...demo, hidden: true } },
    ]);
    const user = userEvent.setup();
    renderAt();
    await user.click(await screen.findByRole("button", { name: "Delete model 1 (fmnist-cnn (demo))" }));
    const dialog = screen.getByRole("dialog");
    await user.click(within(dialog).getByRole("button", { name: "Delete model 1" }));
    const alert = await within(dialog).findByRole("alert");
    expect(alert).toHaveTextContent("It cannot be done now");
    expect(alert).toHaveTextContent(reason);
    // the dialog stays open on the reason; no second delete button to press
    expect(within(dialog).queryByRole("button", { name: "Delete model 1" })).toBeNull();
    await user.click(within(alert).getByRole("button", { name: "Hide model 1 instead" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(calls.filter((c) => c.method === "PATCH")).toEqual([{ method: "PATCH", url: "/api/v1/models/1", body: { hidden: true } }]);
  });

  it("hides and unhides from the row", async () => {
    const { calls } = mockPagedFetch([
      { path: /^\/api\/v1\/models$/, body: [demo, { ...pending, hidden: true }], total: 2 },
      { method: "PATCH", path: /^\/api\/v1\/models\/\d+$/, body: demo },
    ]);
    const user = userEvent.setup();
    renderAt("/models?hidden=1");
    await user.click(await screen.findByRole("button", { name: "Unhide model 3 (fmnist-cnn · norm 50%)" }));
    await user.click(screen.getByRole("button", { name: "Hide model 1 (fmnist-cnn (demo))" }));
    await waitFor(() => expect(calls.filter((c) => c.method === "PATCH")).toHaveLength(2));
    expect(calls.filter((c) => c.method === "PATCH").map((c) => [c.url, c.body])).toEqual([
      ["/api/v1/models/3", { hidden: false }],
      ["/api/v1/models/1", { hidden: true }],
    ]);
  });

  it("says a prune record in words", () => {
    expect(pruneText({ method: "norm", rate: 0.25 })).toBe("norm 25 %");
    expect(pruneText({ method: "vulnerability", channels: [1, 2, 3], layer: "relu3" })).toBe("vulnerability 3 channels of relu3");
    expect(pruneText({ method: "oto_filter", rate: 0.125 })).toBe("oto filter 12.5 %");
    expect(pruneText(null)).toBeNull();
  });
});
