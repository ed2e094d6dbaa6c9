// /search (issue 22): find units by what the interpreter concludes, their class-concept label,
// across the caller's runs. The label prefix, the filters and the page live in the address
// (?q=&state=&changed=1&sort=&offset=), so a search can be linked; each hit opens its unit page.
import { useEffect, useRef, useState } from "react";
import { Link } from "react-router";
import { ApiError } from "../../api/client";
import { PAGE_SIZE } from "../../api/queries";
import { FilterBar, FilterCheck, FilterSelect, Listing, ListScroll, Pager, useListParams } from "../../components/Manage";
import { PageHead } from "../../components/PageHead";
import { usePageTitle } from "../../lib/title";
import {
  hitHref, LABEL_STATES, labelTitle, shareText, STATE_WORDS, useLabelsPage,
  type LabelHit, type LabelSort, type LabelState,
} from "./labelQueries";

/** How long the box waits after the last keystroke before it searches. */
export const DEBOUNCE_MS = 300;
const SORTS: { value: LabelSort; text: string }[] = [
  { value: "score", text: "score (best first)" },
  { value: "label", text: "label" },
  { value: "unit", text: "run, layer, unit" },
];

export function SearchPage() {
  const lp = useListParams();
  const q = lp.get("q").trim();
  const stateParam = lp.get("state");
  const state: LabelState | "any" = (LABEL_STATES as string[]).includes(stateParam) ? (stateParam as LabelState) : "any";
  const changed = lp.get("changed") === "1";
  const sortParam = lp.get("sort");
  const sort: LabelSort = SORTS.some((s) => s.value === sortParam) ? (sortParam as LabelSort) : "score";
  const hits = useLabelsPage({ q, state, changed: changed || undefined, sort: sort === "score" ? undefined : sort, offset: lp.offset, limit: PAGE_SIZE });
  usePageTitle(q ? `Units labelled “${q}…”` : "Search unit labels");
  // a refused query (422) is said next to the box: it is the box's text that is wrong
  const refused = hits.error instanceof ApiError && hits.error.status === 422 ? hits.error : null;
  const filtered = state !== "any" || changed;
  const busy = hits.isFetching;

  return (
    <div className="page search">
      <PageHead title="Search unit labels">
        Each unit of an audited run is labelled in each state with the class most over-represented in its validation top-k
        (its share of the top-k is the score; the p-value is its hypergeometric enrichment). Type the start of a label
        (“bag” finds Bag, “ankle” finds Ankle boot) to find the units across your runs that an interpreter would call so.
      </PageHead>
      <section className="panel" aria-label="Units by label">
        <FilterBar label="Search unit labels">
          <LabelBox value={q} onSearch={(v) => lp.set({ q: v || null })} invalid={!!refused} />
          <FilterSelect
            label="State"
            value={state === "any" ? "" : state}
            onChange={(v) => lp.set({ state: v || null })}
            options={LABEL_STATES.map((s) => ({ value: s, text: STATE_WORDS[s] }))}
          />
          <FilterCheck label="label changed only" checked={changed} onChange={(v) => lp.set({ changed: v })} />
          <label>
            sort{" "}
            <select aria-label="Sort by" value={sort} onChange={(e) => lp.set({ sort: e.target.value === "score" ? null : e.target.value })}>
              {SORTS.map((s) => (
                <option key={s.value} value={s.value}>
                  {s.text}
                </option>
              ))}
            </select>
          </label>
          {refused && (
            <span className="field-error" role="alert" data-testid="search-error">
              {refused.fieldErrors.map((e) => e.msg).join("; ") || refused.message}
            </span>
          )}
        </FilterBar>
        <div className="search-results" aria-busy={busy} data-testid="search-results">
          {!q ? (
            <p className="muted">Type a label above: the units whose label starts with it are listed here, best score first.</p>
          ) : refused ? null : (
            <Listing
              q={hits}
              loading={`Searching for “${q}”`}
              isEmpty={(d) => !d.items.length}
              empty={
                <p data-testid="search-empty">
                  No unit labelled “{q}…”{filtered ? " with these filters" : ""} in the runs you can see
                  {lp.offset ? " on this page" : ""}. Labels are written by each run's metrics step; a run measured before
                  labels existed has none.
                </p>
              }
            >
              {(data) => (
                <>
                  <p className="muted small" aria-live="polite">
                    {data.total.toLocaleString("en")} unit label{data.total === 1 ? "" : "s"} starting with “{q}”
                    {state !== "any" ? ` in the ${STATE_WORDS[state]} state` : ""}
                    {changed ? ", changed by the attack" : ""}
                  </p>
                  <ListScroll busy={hits.isPlaceholderData}>
                    <HitTable hits={data.items} />
                  </ListScroll>
                  <Pager what="units" offset={lp.offset} total={data.total} onOffset={lp.setOffset} />
                </>
              )}
            </Listing>
          )}
        </div>
      </section>
    </div>
  );
}

/** The label box: searches when the typing stops (or at Enter), and follows the address (back button, a link). */
function LabelBox({ value, onSearch, invalid }: { value: string; onSearch: (v: string) => void; invalid: boolean }) {
  const [text, setText] = useState(value);
  const sent = useRef<string | null>(null);
  useEffect(() => {
    // the address changed by itself (back button, a link), not by this box's own search: show what it says
    if (value !== sent.current) setText(value);
    sent.current = null;
  }, [value]);
  const latest = useRef(onSearch);
  latest.current = onSearch;
  const search = (t: string) => {
    sent.current = t;
    latest.current(t);
  };
  useEffect(() => {
    const t = text.trim();
    if (t === value) return;
    const id = window.setTimeout(() => search(t), DEBOUNCE_MS);
    return () => window.clearTimeout(id);
  }, [text, value]);
  return (
    <input
      type="search"
      className="label-search"
      maxLength={200}
      aria-label="Unit label starts with"
      aria-invalid={invalid || undefined}
      placeholder="label starts with… (bag, ankle, …)"
      autoFocus
      value={text}
      onChange={(e) => setText(e.target.value)}
      onKeyDown={(e) => {
        if (e.key === "Enter") {
          e.preventDefault();
          if (text.trim() !== value) search(text.trim());
        }
      }}
    />
  );
}

function HitTable({ hits }: { hits: LabelHit[] }) {
  return (
    <table className="data label-hits" aria-label="Units found">
      <thead>
        <tr>
          <th scope="col">
            <span className="sr-only">top image</span>
          </th>
          <th scope="col">label</th>
          <th scope="col">model</th>
          <th scope="col">run</th>
          <th scope="col">layer</th>
          <th scope="col">unit</th>
          <th scope="col">state</th>
          <th scope="col">
            <span className="sr-only">changed</span>
          </th>
        </tr>
      </thead>
      <tbody>
        {hits.map((h) => (
          <tr key={`${h.run_id}-${h.layer}-${h.unit}-${h.state}-${h.describer}`} data-testid="label-hit">
            <td className="thumb-cell">
              <HitThumb h={h} />
            </td>
            <td>
              <HitLabel h={h} />
            </td>
            <td>{h.model_id != null ? <Link to={`/models/${h.model_id}`}>{h.model_name ?? `model ${h.model_id}`}</Link> : (h.model_name ?? "—")}</td>
            <td>
              <Link to={`/runs/${h.run_id}`}>
                #{h.run_id} {h.run_name}
              </Link>
            </td>
            <td className="mono">{h.layer}</td>
            <td>
              <Link to={hitHref(h)} data-testid="hit-unit" title={`open unit ${h.unit} of ${h.layer} in the ${STATE_WORDS[h.state as LabelState] ?? h.state} state`}>
                unit {h.unit}
              </Link>
            </td>
            <td>{STATE_WORDS[h.state as LabelState] ?? h.state}</td>
            <td>
              {h.changed && (
                <span className="badge attacked" title="the label differs from the unit's label before the attack" data-testid="hit-changed">
                  changed
                </span>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** A hit's label: its name and share of the top-k, the p-value in the tooltip. */
export function HitLabel({ h }: { h: Pick<LabelHit, "label" | "score" | "p_value"> }) {
  return (
    <span title={labelTitle(h)} className="hit-label">
      <strong>{h.label}</strong> <span className="muted small">{shareText(h.score)}</span>
    </span>
  );
}

/** The unit's top image in the hit's state (a signed URL), or a placeholder. */
export function HitThumb({ h, size = 48 }: { h: LabelHit; size?: number }) {
  const alt = `top image of unit ${h.unit} (${h.layer}), ${STATE_WORDS[h.state as LabelState] ?? h.state} state`;
  if (!h.thumb_url)
    return <span className="ph" role="img" aria-label={`no image of unit ${h.unit} (${h.layer})`} style={{ width: size, height: size }} />;
  return <img className="hit-thumb" src={h.thumb_url} alt={alt} width={size} height={size} loading="lazy" decoding="async" />;
}
