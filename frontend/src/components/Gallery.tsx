// Top-k galleries: thumbnails (lazy) with rank, class label and activation score.
import type { Img } from "../api/client";
import { score } from "../lib/format";

export type GalleryProps = {
  title: string;
  images: Img[];
  variant: "before" | "after";
  /** image ids of the other side: marks images kept / new / dropped */
  otherIds?: Set<number>;
  /** a class to highlight (push-up decoy class) */
  highlightLabel?: number | null;
  emptyText?: string;
  /**
   * The k the measures use (the run's k_clip) when the gallery shows more: the count of
   * kept images is then given on the top-k_clip too, the one the overlap and CLIP-δ
   * beside it count (issue 19, item 4: "10/10 kept" next to a top-5 overlap of 40 %).
   */
  measureK?: number | null;
  /** the other side's images in rank order (for the count on the top-`measureK`) */
  other?: Img[];
};

export function classSummary(images: Img[]): string {
  const counts = new Map<string, number>();
  for (const im of images) counts.set(im.label_name, (counts.get(im.label_name) ?? 0) + 1);
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([name, n]) => (n > 1 ? `${name} ×${n}` : name))
    .join(", ");
}

/** How many of a side's first k images are among the other side's first k ("kept" on the top-k). */
export function keptOnTopK(images: Img[], other: Img[], k: number): number {
  const top = new Set(other.slice(0, k).map((im) => im.image_id));
  return images.slice(0, k).filter((im) => top.has(im.image_id)).length;
}

export function Gallery({ title, images, variant, otherIds, highlightLabel, emptyText, measureK, other }: GalleryProps) {
  const kept = otherIds ? images.filter((im) => otherIds.has(im.image_id)).length : null;
  const n = images.length;
  const k = measureK != null && other && measureK < n ? Math.min(measureK, other.length) : null;
  return (
    <section className={`gallery ${variant}`} aria-label={title}>
      <header>
        <h4>{title}</h4>
        {images.length > 0 && (
          <p className="muted small">
            {classSummary(images)}
            {kept != null && ` · ${kept}/${n} ${variant === "after" ? `kept from the top-${n} before` : `still in the top-${n} after`}`}
            {kept != null && k != null && ` · on the top-${k} the measures use: ${keptOnTopK(images, other!, k)}/${k}`}
          </p>
        )}
      </header>
      {images.length === 0 ? (
        <p className="muted">{emptyText ?? "No images (the unit is dead, or the set was not scanned)."}</p>
      ) : (
        <ol className="tiles">
          {images.map((im, i) => {
            const inOther = otherIds?.has(im.image_id);
            const mark = otherIds == null ? "" : inOther ? "kept" : variant === "after" ? "new" : "dropped";
            const decoy = highlightLabel != null && im.label === highlightLabel;
            return (
              <li key={`${im.image_set_id}-${im.image_id}`} className={`tile ${mark}${decoy ? " decoy" : ""}`} data-testid="tile">
                <a href={im.full_url} target="_blank" rel="noreferrer" title={`Open image ${im.image_id} full size`}>
                  <img
                    src={im.thumb_url}
                    loading="lazy"
                    decoding="async"
                    width={96}
                    height={96}
                    alt={`#${i + 1}: ${im.label_name} (image ${im.image_id})${mark === "dropped" ? ", dropped from the top-k after the attack" : mark === "new" ? ", new in the top-k" : ""}`}
                  />
                </a>
                <div className="cap">
                  <span className="rank">#{i + 1}</span>
                  <span className="label" title={`class ${im.label}: ${im.label_name}`}>{im.label_name}</span>
                  <span className="score" title="activation score a_j(x)">{score(im.score)}</span>
                  {mark && <span className={`mark ${mark}`}>{mark}</span>}
                  {decoy && <span className="mark decoy">decoy class</span>}
                </div>
              </li>
            );
          })}
        </ol>
      )}
    </section>
  );
}

export function BeforeAfter({ title, before, after, highlightLabel, afterTitle = "After (selected state)", measureK }: {
  title: string; before: Img[]; after: Img[]; highlightLabel?: number | null;
  /** names the state shown as "after": "After (selected state, step 200)" / "After (final state, step 300)" */
  afterTitle?: string;
  /** the run's k_clip (see Gallery) */
  measureK?: number | null;
}) {
  const beforeIds = new Set(before.map((i) => i.image_id));
  const afterIds = new Set(after.map((i) => i.image_id));
  return (
    <section className="before-after" aria-label={title}>
      <h3>{title}</h3>
      <div className="pair">
        <Gallery title="Before (θ_init)" images={before} variant="before" otherIds={afterIds} highlightLabel={highlightLabel} measureK={measureK} other={after} />
        <Gallery title={afterTitle} images={after} variant="after" otherIds={beforeIds} highlightLabel={highlightLabel} measureK={measureK} other={before} />
      </div>
    </section>
  );
}
