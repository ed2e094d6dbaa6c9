// /image-sets (issue 19, item 6): status and size of each set, a failed one with its reason
// instead of "0 images"; the filters in the request; delete asks first and shows a 409's reason.
import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it } from "vitest";
import { setToken } from "../../api/auth";
import sets from "../../test/fixtures/image-sets.json";
import { getsTo, mockPagedFetch } from "../../test/pagedFetch";
import { renderRoutes } from "../../test/renderRoutes";
import { ImageSets } from "./ImageSets";

const ready = { ...sets[0], status: "ready", job_id: null, error: null, hidden: false };
const failed = {
  ...sets[0], id: 9, name: "my photos", source: "/data/images/photos", kind: "folder", size: 0, limit: null, classes: [],
  status: "failed", job_id: 44, error: "no class subfolders with images under /data/images/photos", hidden: false,
};
const indexing = { ...failed, id: 10, name: "big folder", status: "indexing", error: null, job_id: 45 };

const renderAt = (path = "/image-sets") => renderRoutes(path, { "/image-sets": <ImageSets /> });

// tests with many interactions get 15 s (the default 5 s is tight on 2 shared cores)
describe("image sets index", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("shows each set's status and size; a failed set its reason, not 0 images", async () => {
    mockPagedFetch([{ path: /^\/api\/v1\/image-sets$/, body: [ready, failed, indexing], total: 3 }]);
    renderAt();
    const row = (await screen.findByText("my photos")).closest("tr")!;
    const cells = within(row).getAllByRole("cell");
    expect(cells[1]).toHaveTextContent("failed");
    expect(cells[1]).toHaveTextContent("no class subfolders with images under /data/images/photos");
    expect(within(cells[1]).getByRole("link", { name: "job 44" })).toHaveAttribute("href", "/jobs/44");
    expect(cells[3]).toHaveTextContent(/^—$/);
    expect(within(screen.getByText("big folder").closest("tr")!).getAllByRole("cell")[1]).toHaveTextContent("indexing");
    const ok = within(screen.getByText("Fashion-MNIST train (3000)").closest("tr")!).getAllByRole("cell");
    expect(ok[1]).toHaveTextContent(/^ready$/);
    expect(ok[3]).toHaveTextContent("3,000");
    expect(ok[4]).toHaveTextContent("10");
    expect(screen.getByText("3 image sets")).toBeInTheDocument();
  });

  it("puts the name filter, hidden and the page in the request", async () => {
    const { calls } = mockPagedFetch([{ path: /^\/api\/v1\/image-sets$/, body: [ready], total: 30 }]);
    const user = userEvent.setup();
    renderAt("/image-sets?offset=25");
    await screen.findByText("Fashion-MNIST train (3000)");
    expect(getsTo(calls, "/api/v1/image-sets")[0].get("offset")).toBe("25");
    expect(screen.getByRole("navigation", { name: "Pages of image sets" })).toHaveTextContent("26–30 of 30");
    await user.click(screen.getByRole("button", { name: "‹ previous" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/image-sets").at(-1)!.get("offset")).toBe("0"));
    await user.type(screen.getByRole("searchbox", { name: "Image set name contains" }), "train{Enter}");
    await waitFor(() => expect(getsTo(calls, "/api/v1/image-sets").at(-1)!.get("q")).toBe("train"));
    await user.click(screen.getByRole("checkbox", { name: "show hidden" }));
    await waitFor(() => expect(getsTo(calls, "/api/v1/image-sets").at(-1)!.get("include_hidden")).toBe("true"));
  });

  it("deletes a failed set after the confirmation; a set in use is refused with the reason", async () => {
    const reason = "image set 1 is used by 3 runs and 2 scans: it can be hidden, not deleted";
    const { calls } = mockPagedFetch([
      { path: /^\/api\/v1\/image-sets$/, body: [ready, failed], total: 2 },
      { method: "DELETE", path: /^\/api\/v1\/image-sets\/9$/, status: 204 },
      { method: "DELETE", path: /^\/api\/v1\/image-sets\/1$/, status: 409, body: { detail: reason } },
    ]);
    const user = userEvent.setup();
    renderAt();
    await user.click(await screen.findByRole("button", { name: "Delete image set 9 (my photos)" }));
    await user.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Delete image set 9" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    await user.click(screen.getByRole("button", { name: "Delete image set 1 (Fashion-MNIST train (3000))" }));
    const dialog = screen.getByRole("dialog");
    await user.click(within(dialog).getByRole("button", { name: "Delete image set 1" }));
    expect(await within(dialog).findByRole("alert")).toHaveTextContent(reason);
    expect(within(dialog).getByRole("button", { name: "Hide image set 1 instead" })).toBeInTheDocument();
    expect(calls.filter((c) => c.method === "DELETE").map((c) => c.url)).toEqual(["/api/v1/image-sets/9", "/api/v1/image-sets/1"]);
  });
});
