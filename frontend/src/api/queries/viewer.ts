// One query-key convention for every resource: `[resource, ...args, viewer]`. The viewer is
// who asks (the API token's prefix) and through which share link (the page's ?share=), the
// two credentials every request carries (client.ts): a shared view and a signed-in view of the
// same run never share a cache entry, and a key's first item still names the list to invalidate.
import { useToken, currentShare } from "../auth";

export type Viewer = { token: string | null; share: string | null };

export function useViewer(): Viewer {
  return { token: useToken(), share: currentShare() };
}

export function queryKey(viewer: Viewer, resource: string, ...args: unknown[]) {
  return [resource, ...args, { t: viewer.token ? viewer.token.slice(0, 12) : null, s: viewer.share }] as const;
}

/** No retry on a 404 (or the given statuses): the address names nothing, asking again will not change that. */
export const retryUnless =
  (...statuses: number[]) =>
  (n: number, e: unknown) =>
    !(statuses.length ? statuses : [404]).includes((e as { status?: number }).status ?? 0) && n < 2;
