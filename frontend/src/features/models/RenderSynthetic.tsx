// Launch a `visualize` job on a model (no attack needed): a layer, an objective, go.
// The job's settings not shown here (seeds, steps, size) take the registry's defaults.
import { useState } from "react";
import { useNavigate } from "react-router";
import { ApiError, type LayerOut } from "../../api/client";
import { useCreateJob, useJobKinds } from "../../api/queries";
import { ErrorBox } from "../../components/States";
import { mapServerErrors } from "../launch/launch";

export function RenderSynthetic({ modelId, layers, initial, units, compact }: {
  modelId: number;
  layers: LayerOut[];
  initial?: string;
  /** render only these units (default: every unit of the layer) */
  units?: number[];
  compact?: boolean;
}) {
  const navigate = useNavigate();
  const kinds = useJobKinds();
  const create = useCreateJob();
  const visualize = kinds.data?.find((k) => k.kind === "visualize");
  const objectiveDefault = typeof visualize?.defaults?.objective === "string" ? (visualize.defaults.objective as string) : "";
  const [layer, setLayer] = useState(initial ?? layers.filter((l) => l.kind === "conv").at(-1)?.name ?? layers[0]?.name ?? "");
  const [objective, setObjective] = useState<string>("");
  const id = `render-${compact ? "c" : "f"}-${layer || "x"}`;
  const go = async () => {
    const spec: Record<string, unknown> = { model_id: modelId, layers: [layer], units: units ?? null };
    if (objective) spec.objective = objective;
    const job = await create.mutateAsync({ kind: "visualize", spec });
    navigate(`/jobs/${job.id}`);
  };
  const refused = create.error instanceof ApiError && create.error.fieldErrors.length ? mapServerErrors(create.error.fieldErrors) : null;
  return (
    <form
      className={`render-synthetic row wrap${compact ? " compact" : ""}`}
      aria-label="Render synthetic visualizations"
      onSubmit={(e) => {
        e.preventDefault();
        void go().catch(() => undefined);
      }}
    >
      {!initial && (
        <label htmlFor={`${id}-layer`}>
          Layer{" "}
          <select id={`${id}-layer`} value={layer} onChange={(e) => setLayer(e.target.value)}>
            {layers.map((l) => (
              <option key={l.name} value={l.name}>
                {l.label ? `${l.label} — ${l.name}` : l.name} · {l.units} units
              </option>
            ))}
          </select>
        </label>
      )}
      <label htmlFor={`${id}-objective`}>
        objective{" "}
        <select id={`${id}-objective`} value={objective} onChange={(e) => setObjective(e.target.value)}>
          <option value="">{objectiveDefault ? `default (${objectiveDefault})` : "default"}</option>
          <option value="score">score a_j</option>
          <option value="channel_mean">channel mean (layers that can be negative)</option>
        </select>
      </label>
      <button type="submit" className="primary" disabled={!layer || create.isPending}>
        {create.isPending ? "Launching…" : units?.length === 1 ? `Render unit ${units[0]}` : `Render ${initial ? "this layer" : "synthetic visualizations"}`}
      </button>
      {refused ? (
        <p className="field-error" role="alert">
          {[...Object.values(refused.fields), ...refused.form].join("; ")}
        </p>
      ) : create.error ? (
        <ErrorBox error={create.error} />
      ) : null}
    </form>
  );
}
