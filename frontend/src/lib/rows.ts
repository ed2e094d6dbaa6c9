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

/**
 * How the attack ended (`RunDetail.attack_outcome`, issue 19 item 2): `selected_is_init`
 * when no evaluated state stayed within the accuracy budget, so the "selected" state is
 * θ_init (step 0) and the selected results show no attack; `message` says so in words.
 */
export type AttackOutcome = {
  selected_step: number | null;
  final_step: number | null;
  selected_is_init: boolean;
  final_over_budget: boolean;
  budget_pp: number | null;
  message: string | null;
};

/** The run's attack outcome, or null for a run without one (a scan, a server from before issue 19). */
export function attackOutcome(run: unknown): AttackOutcome | null {
  const o = (run as { attack_outcome?: unknown } | null | undefined)?.attack_outcome;
  if (!o || typeof o !== "object") return null;
  const r = o as Partial<AttackOutcome>;
  const n = (v: unknown) => (typeof v === "number" ? v : null);
  return {
    selected_step: n(r.selected_step),
    final_step: n(r.final_step),
    selected_is_init: r.selected_is_init === true,
    final_over_budget: r.final_over_budget === true,
    budget_pp: n(r.budget_pp),
    message: typeof r.message === "string" ? r.message : null,
  };
}

/** The words for a selected state that is θ_init: the server's message, or one built from the steps. */
export function selectedIsInitText(o: AttackOutcome): string {
  if (o.message) return o.message;
  const budget = o.budget_pp != null ? `the ${o.budget_pp} pp ` : "the ";
  const fin = o.final_step != null ? ` The final state (step ${o.final_step}${o.final_over_budget ? ", over the budget" : ""}) is shown under 'final'.` : "";
  return `No evaluated state stayed within ${budget}accuracy budget: the selected state is θ_init, so the 'selected' results show no attack.${fin}`;
}
