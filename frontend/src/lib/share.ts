import { useCallback } from "react";
import { useSearchParams } from "react-router";

/** The ?share= token of the current page (a shared, read-only view), or null. */
export function useShareParam(): string | null {
  const [sp] = useSearchParams();
  return sp.get("share");
}

/** Links inside a shared run keep its ?share= token so they keep working without login. */
export function useRunHref(): (path: string) => string {
  const share = useShareParam();
  return useCallback(
    (path: string) => {
      if (!share) return path;
      const [p, q] = path.split("?");
      const sp = new URLSearchParams(q);
      sp.set("share", share);
      return `${p}?${sp.toString()}`;
    },
    [share],
  );
}

export const enc = encodeURIComponent;

export const runPath = (run: number) => `/runs/${run}`;
export const layerPath = (run: number, layer: string) => `/runs/${run}/layers/${enc(layer)}`;
export const unitPath = (run: number, layer: string, unit: number) => `/runs/${run}/layers/${enc(layer)}/units/${unit}`;
