// Several layers of a model (attack.layers / scan layers): checkboxes grouped by kind,
// with the quick choices a user wants (every conv layer, none). Keyboard: Tab into the
// list, Space toggles; the fieldset is the focus target of a field error.
import type { UseQueryResult } from "@tanstack/react-query";
import type { ReactNode } from "react";
import type { LayerOut } from "../api/client";
import { FieldError } from "./FormField";
import { ErrorBox, Loading } from "./States";

const GROUPS: { kind: string; title: string }[] = [
  { kind: "conv", title: "convolutional" },
  { kind: "tokens", title: "token (ViT)" },
  { kind: "fc", title: "fully connected" },
];

export function layerText(l: LayerOut): string {
  return `${l.label ? `${l.label} — ${l.name}` : l.name} · ${l.units} units`;
}

export function LayerPicker({ layers, value, onChange, invalid, describedBy }: {
  layers: LayerOut[];
  value: string[];
  onChange: (v: string[]) => void;
  invalid?: boolean;
  describedBy?: string;
}) {
  const chosen = new Set(value);
  // keep the model's layer order, whatever order they were ticked in
  const ordered = (names: Set<string>) => layers.filter((l) => names.has(l.name)).map((l) => l.name);
  const toggle = (name: string, on: boolean) => {
    const next = new Set(chosen);
    if (on) next.add(name);
    else next.delete(name);
    onChange(ordered(next));
  };
  const conv = layers.filter((l) => l.kind === "conv" && l.module_type.toLowerCase().includes("conv"));
  const units = layers.filter((l) => chosen.has(l.name)).reduce((a, l) => a + l.units, 0);
  const other = layers.filter((l) => !GROUPS.some((g) => g.kind === l.kind));
  return (
    <fieldset className="layer-picker" id="f-layers" tabIndex={-1} aria-invalid={invalid || undefined} aria-describedby={describedBy}>
      <legend>Layers</legend>
      <div className="row wrap small">
        <span className="muted" aria-live="polite">
          {value.length === 0 ? "none chosen" : `${value.length} chosen · ${units.toLocaleString("en")} units`}
        </span>
        {conv.length > 1 && (
          <button type="button" className="link" onClick={() => onChange(ordered(new Set(conv.map((l) => l.name))))}>
            all {conv.length} conv layers
          </button>
        )}
        {value.length > 0 && (
          <button type="button" className="link" onClick={() => onChange([])}>
            clear
          </button>
        )}
      </div>
      <div className="layer-list">
        {[...GROUPS, { kind: "", title: "other" }].map((g) => {
          const ls = g.kind ? layers.filter((l) => l.kind === g.kind) : other;
          if (!ls.length) return null;
          return (
            <div key={g.title} role="group" aria-label={`${g.title} layers`}>
              <p className="muted small group-title">{g.title}</p>
              {ls.map((l) => (
                <label key={l.name} className={`check${chosen.has(l.name) ? " on" : ""}`} title={`${l.module_type} · output ${l.shape.join("×")}`}>
                  <input type="checkbox" name="layers" value={l.name} checked={chosen.has(l.name)} onChange={(e) => toggle(l.name, e.target.checked)} />{" "}
                  {layerText(l)}
                </label>
              ))}
            </div>
          );
        })}
      </div>
    </fieldset>
  );
}

/** The picker as a form field (`layers`): the layer list's loading and error states, its error below, `children` (a hint) between. */
export function LayerField({ layers, value, onChange, error, children }: {
  layers: UseQueryResult<LayerOut[]>;
  value: string[];
  onChange: (v: string[]) => void;
  error?: string;
  children?: ReactNode;
}) {
  if (layers.isLoading) return <Loading what="Loading layers" />;
  if (layers.error) return <ErrorBox error={layers.error} retry={() => layers.refetch()} />;
  return (
    <div className={`field${error ? " invalid" : ""}`}>
      <LayerPicker layers={layers.data ?? []} value={value} onChange={onChange} invalid={!!error} describedBy={error ? "e-layers" : undefined} />
      {children}
      <FieldError field="layers" msg={error} />
    </div>
  );
}

/** The layer a form starts on: the deepest labelled layer, else the deepest convolution, else the first. */
export function defaultLayer(layers: LayerOut[]): string {
  const labelled = layers.filter((l) => l.label);
  if (labelled.length) return labelled[labelled.length - 1].name;
  return (layers.filter((l) => l.kind === "conv").at(-1) ?? layers[0])?.name ?? "";
}

/** Layers named by their names or labels, resolved on the model's list (in its order); unknown names dropped. */
export function resolveLayers(layers: LayerOut[], names: string[]): string[] {
  const out = names.map((n) => layers.find((l) => l.name === n || l.label === n)?.name).filter((n): n is string => !!n);
  return layers.filter((l) => out.includes(l.name)).map((l) => l.name);
}
