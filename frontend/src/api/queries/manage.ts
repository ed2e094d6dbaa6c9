// Hide and delete runs, models, image sets and sweeps (issue 19, item 6). What changes is
// invalidated by the first item of the query keys (the resource's name), so every list and
// detail that shows it refreshes, whoever's view it is.
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { call } from "./request";

/** What can be hidden and deleted, by its path under /api/v1 and the query keys that show it. */
export type Managed = "runs" | "models" | "image-sets" | "sweeps";
const DETAIL_KEY: Record<Managed, string> = { runs: "run", models: "model", "image-sets": "image-set", sweeps: "sweep" };

function useInvalidate(what: Managed) {
  const qc = useQueryClient();
  return (id: number) => {
    qc.invalidateQueries({ queryKey: [what] });
    qc.invalidateQueries({ queryKey: [DETAIL_KEY[what], id] });
    // a deleted run or model changes the model usage counts, a deleted sweep its runs and models
    if (what !== "image-sets") qc.invalidateQueries({ queryKey: ["models"] });
    if (what === "sweeps" || what === "models") qc.invalidateQueries({ queryKey: ["runs"] });
    qc.invalidateQueries({ queryKey: ["jobs"] });
  };
}

/** `PATCH /{what}/{id} {"hidden": …}`: hidden rows leave lists and pickers, and stay reachable by address. */
export function useSetHidden(what: Managed) {
  const done = useInvalidate(what);
  return useMutation({
    mutationFn: async ({ id, hidden }: { id: number; hidden: boolean }) => {
      await call("PATCH", `/${what}/${id}`, { body: { hidden } });
      return id;
    },
    onSuccess: done,
  });
}

/** `DELETE /{what}/{id}`: 204, or 409 with the reason in words (something derives from it, it is still running). */
export function useDelete(what: Managed) {
  const done = useInvalidate(what);
  return useMutation({
    mutationFn: async (id: number) => {
      await call("DELETE", `/${what}/${id}`);
      return id;
    },
    onSuccess: done,
  });
}
