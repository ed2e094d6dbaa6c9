// Table 3.1 rows (`GET /api/v1/runs/{id}` → `rows`) in the order a reader compares them:
// per layer the selected state, the final state, then the α = 0 control; the "all" row
// (mean over every attacked unit of every layer) last.
import type { RowState, RunRow } from "../api/contract";

const STATE_ORDER: Record<RowState, number> = { selected: 0, final: 1, control: 2 };

export function orderRows(rows: RunRow[], layers: string[]): RunRow[] {
  const layerRank = (l: string) => (l === "all" ? Number.MAX_SAFE_INTEGER : layers.indexOf(l) >= 0 ? layers.indexOf(l) : layers.length);
  return [...rows].sort(
    (a, b) => layerRank(a.layer) - layerRank(b.layer) || a.layer.localeCompare(b.layer) || (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9),
  );
}

export const STATE_LABEL: Record<RowState, string> = {
  selected: "selected",
  final: "final",
  control: "α = 0 control",
};

export const STATE_HELP: Record<RowState, string> = {
  selected: "the latest evaluated state whose accuracy drop on the full validation set is within the budget",
  final: "the state after the last step, measured too, so no result is silently dropped",
  control: "plain fine-tuning (α = 0) with the same settings: how much the top-k moves without an attack",
};
