// What every e2e file needs from its environment (frontend/scripts/test.sh sets it): the stack's
// URL and admin token, where screenshots go, and how Debian's Chromium is started.
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const here = dirname(fileURLToPath(import.meta.url));
export const BASE = (process.env.FVAUDIT_URL ?? "").replace(/\/$/, "");
export const TOKEN = process.env.FVAUDIT_ADMIN_TOKEN ?? "";
export const OUT = process.env.FVAUDIT_E2E_OUT ?? resolve(here, "../../test-output/e2e");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const JOB_TIMEOUT = Number(process.env.FVAUDIT_E2E_JOB_TIMEOUT ?? 1200) * 1000;
export const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

if (!BASE || !TOKEN) throw new Error("set FVAUDIT_URL and FVAUDIT_ADMIN_TOKEN (frontend/scripts/test.sh does)");
mkdirSync(OUT, { recursive: true });

/** Asserts the page's title matches `re`, once the page has set it: a page sets its title after
 * it renders, so the address can change first (the assertion is unchanged; it waits up to 10 s). */
export async function assertTitle(page, re) {
  await page.waitForFunction((src) => new RegExp(src).test(document.title), re.source, { timeout: 10_000 }).catch(() => {});
  const { match } = await import("node:assert/strict");
  match(await page.title(), re);
}
