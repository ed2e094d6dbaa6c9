import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { setToken } from "../../api/auth";
import { mockFetch } from "../../test/fetchMock";
import { ShareDialog } from "./ShareDialog";

const link = (token: string) => ({ token, url: `http://127.0.0.1:8000/runs/7?share=${token}`, run_id: 7, created_at: new Date().toISOString(), revoked_at: null });

describe("ShareDialog", () => {
  beforeEach(() => setToken("fva_test_token_0123456789"));

  it("creates a link, copies it, lists and revokes links", async () => {
    let links = [link("old_token_aaaaaaaaaaaaaaaa")];
    const { calls } = mockFetch([
      { path: /^\/api\/v1\/runs\/7\/shares$/, body: () => links },
      { method: "POST", path: /^\/api\/v1\/runs\/7\/shares$/, respond: () => { const l = link("new_token_bbbbbbbbbbbbbbbb"); links = [...links, l]; return { status: 201, body: l }; } },
      { method: "DELETE", path: /^\/api\/v1\/shares\/(.+)$/, respond: (_r, m) => { links = links.filter((l) => l.token !== m[1]); return { status: 204 }; } },
    ]);
    const user = userEvent.setup();
    const onClose = vi.fn();
    render(
      <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
        <ShareDialog runId={7} runName="conv3 push-down" onClose={onClose} />
      </QueryClientProvider>,
    );
    const dialog = screen.getByRole("dialog", { name: "Share “conv3 push-down”" });
    expect(await within(dialog).findByText(/old_token_a/)).toBeInTheDocument();

    await user.click(within(dialog).getByRole("button", { name: "Create share link" }));
    const input = await within(dialog).findByTestId("share-url");
    expect(input).toHaveValue("http://127.0.0.1:8000/runs/7?share=new_token_bbbbbbbbbbbbbbbb");
    await user.click(within(dialog).getByRole("button", { name: "Copy link" }));
    expect(await within(dialog).findByRole("button", { name: "Copied ✓" })).toBeInTheDocument();
    expect(await navigator.clipboard.readText()).toBe("http://127.0.0.1:8000/runs/7?share=new_token_bbbbbbbbbbbbbbbb");
    expect(await within(dialog).findAllByRole("button", { name: /^Revoke/ })).toHaveLength(2);

    // revoking asks first: "Keep it" keeps the link, nothing is deleted
    await user.click(within(dialog).getAllByRole("button", { name: /^Revoke/ })[0]);
    expect(within(dialog).getByText("Anyone using this link loses access. Revoke it?")).toBeInTheDocument();
    await user.click(within(dialog).getByRole("button", { name: "Keep it" }));
    expect(calls.some((c) => c.method === "DELETE")).toBe(false);
    expect(within(dialog).getAllByRole("button", { name: /^Revoke/ })).toHaveLength(2);
    await user.click(within(dialog).getAllByRole("button", { name: /^Revoke/ })[0]);
    await user.click(within(dialog).getByRole("button", { name: "Yes, revoke the link" }));
    expect(calls.some((c) => c.method === "DELETE" && c.url === "/api/v1/shares/old_token_aaaaaaaaaaaaaaaa")).toBe(true);
    await within(dialog).findByText(/^http.*new_token_b/);
    expect(within(dialog).queryByText(/old_token_a/)).toBeNull();

    await user.keyboard("{Escape}");
    expect(onClose).toHaveBeenCalled();
  });
});
