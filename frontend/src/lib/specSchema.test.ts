// The forms' numeric bounds and choices are the registry's spec schemas (issue 20, item 6):
// a bound or a choice that changes on the server changes in the browser, with no number here.
import { describe, expect, it } from "vitest";
import type { JobKind } from "../api/contract";
import sweepKind from "../test/fixtures/job-kind-sweep.json";
import kinds from "../test/fixtures/job-kinds.json";
import { BLANK, launchKinds, validate } from "../features/launch/launch";
import { sweepAttacks } from "../features/sweeps/sweep";
import { choicesOf, intError, rangeOf } from "./specSchema";

const audit = (kinds as JobKind[]).find((k) => k.kind === "audit")!;

describe("spec schema", () => {
  it("reads a field's bounds through $ref and an optional field's anyOf", () => {
    expect(rangeOf(audit.spec_schema, ["attack", "k"])).toEqual({ lo: 1, hi: 1000, loExclusive: false, hiExclusive: false });
    expect(rangeOf(audit.spec_schema, ["attack", "alpha"])).toEqual({ lo: 0, hi: 1, loExclusive: false, hiExclusive: false });
    expect(rangeOf(audit.spec_schema, ["attack", "lr"])).toEqual({ lo: 0, hi: 10, loExclusive: true, hiExclusive: false });
    expect(rangeOf((sweepKind as JobKind).spec_schema, ["base", "prune", "finetune", "train_limit"])).toMatchObject({ lo: 1, hi: 100_000_000 });
    expect(rangeOf(audit.spec_schema, ["no_such_field"])).toEqual({ lo: -Infinity, hi: Infinity, loExclusive: false, hiExclusive: false });
  });

  it("reads choices: a field's enum, a list's items' enum", () => {
    expect(choicesOf(audit.spec_schema, ["attack", "kind"])).toEqual(["push_down", "push_up", "finetune"]);
    expect(sweepAttacks(sweepKind as JobKind)).toEqual(["push_down", "push_up"]);
    expect(intError("-3", rangeOf(audit.spec_schema, ["attack", "k"]), "k")).toBe("k must be ≥ 1");
  });

  it("the launch form offers the registry's attack kinds and checks the registry's bounds", () => {
    const changed = structuredClone(kinds) as JobKind[];
    const schema = changed.find((k) => k.kind === "audit")!.spec_schema as { $defs: Record<string, { properties: Record<string, Record<string, unknown>> }> };
    schema.$defs.AttackParams.properties.kind.enum = ["push_down", "push_sideways"];
    schema.$defs.AttackParams.properties.steps.maximum = 500;
    expect(launchKinds(kinds as JobKind[])).toEqual(["push_down", "push_up", "finetune", "scan"]);
    expect(launchKinds(changed)).toEqual(["push_down", "push_sideways", "scan"]);
    const form = { ...BLANK, steps: "600" };
    expect(validate(form, { kinds: changed }).steps).toBe("steps must be between 1 and 500");
    expect(validate(form, { kinds: kinds as JobKind[] }).steps).toBeUndefined();
  });
});
