// A job kind's spec JSON schema (`GET /job-kinds` → `spec_schema`, pydantic's JSON schema):
// the bounds and choices of its fields, so a form checks in the browser what the server will
// check, without restating the numbers. A field the schema does not describe (an older server,
// a registry that failed to load) is checked for its form only; the server's 422 does the rest.
type Json = Record<string, unknown>;

export type Range = { lo: number; hi: number; loExclusive: boolean; hiExclusive: boolean };

const isObj = (v: unknown): v is Json => !!v && typeof v === "object" && !Array.isArray(v);

/** `{$ref: "#/$defs/X"}` → the definition; `anyOf: [X, {type: null}]` (an optional field) → X. */
function deref(root: Json, s: Json | undefined): Json | undefined {
  let cur = s;
  for (let i = 0; cur && i < 8; i++) {
    if (typeof cur.$ref === "string") {
      const name = cur.$ref.split("/").pop()!;
      cur = isObj(root.$defs) && isObj(root.$defs[name]) ? (root.$defs[name] as Json) : undefined;
    } else if (Array.isArray(cur.anyOf)) {
      cur = (cur.anyOf as Json[]).find((b) => isObj(b) && b.type !== "null");
    } else return cur;
  }
  return cur;
}

/** The schema of the field at `path` (property names, nested objects through their $ref). */
export function fieldSchema(root: Json | undefined, path: string[]): Json | undefined {
  if (!root) return undefined;
  let cur: Json | undefined = root;
  for (const key of path) {
    const props: unknown = deref(root, cur)?.properties;
    cur = isObj(props) && isObj(props[key]) ? (props[key] as Json) : undefined;
    if (!cur) return undefined;
  }
  return deref(root, cur);
}

/** A numeric field's bounds; an unbounded side is ±Infinity. */
export function rangeOf(root: Json | undefined, path: string[]): Range {
  const s = fieldSchema(root, path) ?? {};
  const num = (k: string) => (typeof s[k] === "number" ? (s[k] as number) : undefined);
  const whole = s.type === "integer";
  const xlo = num("exclusiveMinimum");
  const xhi = num("exclusiveMaximum");
  // a whole number above an exclusive minimum of 0 is ≥ 1: say it that way
  if (whole) return { lo: num("minimum") ?? (xlo != null ? xlo + 1 : -Infinity), hi: num("maximum") ?? (xhi != null ? xhi - 1 : Infinity), loExclusive: false, hiExclusive: false };
  return { lo: num("minimum") ?? xlo ?? -Infinity, hi: num("maximum") ?? xhi ?? Infinity, loExclusive: xlo != null, hiExclusive: xhi != null };
}

/** Whether `v` lies within the range. */
export const within = (r: Range, v: number) => (r.loExclusive ? v > r.lo : v >= r.lo) && (r.hiExclusive ? v < r.hi : v <= r.hi);

/** A string field's choices (`enum`; a list's: its items' `enum`), in the schema's order; [] when it has none. */
export function choicesOf(root: Json | undefined, path: string[]): string[] {
  const s = fieldSchema(root, path);
  const e = s?.enum ?? (isObj(s?.items) ? s.items.enum : undefined);
  return Array.isArray(e) ? e.filter((x): x is string => typeof x === "string") : [];
}

/** A string field's longest length, or Infinity. */
export function maxLengthOf(root: Json | undefined, path: string[]): number {
  const m = fieldSchema(root, path)?.maxLength;
  return typeof m === "number" ? m : Infinity;
}

const INT = /^\s*\d+\s*$/;
const NEG_INT = /^\s*[-−]\s*\d+\s*$/;
const FLOAT = /^\s*[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;

export function parseIntStrict(s: string): number | null {
  return INT.test(s) ? Number.parseInt(s, 10) : null;
}

export function parseFloatStrict(s: string): number | null {
  return FLOAT.test(s) ? Number.parseFloat(s) : null;
}

const big = (n: number) => n.toLocaleString("en");

/**
 * The error of a whole-number text field, or undefined: not a whole number, below the range
 * (a negative number, "-3" or "−3", is out of range, not malformed), or above it. `hi` caps the
 * range further (a set's size); `over` words the message above it (default "between lo and hi").
 */
export function intError(
  s: string,
  r: Range,
  what: string,
  o: { optional?: boolean; hi?: number; over?: (lo: number, hi: number) => string } = {},
): string | undefined {
  if ((o.optional ?? true) && !s.trim()) return undefined;
  const lo = Number.isFinite(r.lo) ? r.lo : 0;
  const hi = Math.min(r.hi, o.hi ?? Infinity);
  const v = parseIntStrict(s);
  if (v == null) return NEG_INT.test(s) ? `${what} must be ≥ ${lo}` : `${what} must be a whole number`;
  if (v < lo) return `${what} must be ≥ ${lo}`;
  if (v > hi) return o.over ? o.over(lo, hi) : `${what} must be between ${lo} and ${big(hi)}`;
  return undefined;
}

/** The error of an optional decimal text field: `msg(range)` when it is not a number within the range. */
export function floatError(s: string, r: Range, msg: (r: Range) => string): string | undefined {
  if (!s.trim()) return undefined;
  const v = parseFloatStrict(s);
  return v == null || !within(r, v) ? msg(r) : undefined;
}
