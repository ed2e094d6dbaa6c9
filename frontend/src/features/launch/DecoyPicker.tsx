// Push-up decoys: a class (cards with sample thumbnails) or hand-picked images.
import { useState } from "react";
import type { ImageSetOut } from "../../api/client";
import { useSamples } from "../../api/queries";
import { Loading } from "../../components/States";

function ClassCard({ setId, index, name, checked, onPick }: { setId: number; index: number; name: string; checked: boolean; onPick: () => void }) {
  const samples = useSamples(setId, index, 4);
  return (
    <button type="button" role="radio" aria-checked={checked} className={`class-card${checked ? " checked" : ""}`} onClick={onPick}>
      <span className="thumbs" aria-hidden="true">
        {samples.data
          ? samples.data.map((s) => <img key={s.image_id} src={s.thumb_url} loading="lazy" width={40} height={40} alt="" />)
          : Array.from({ length: 4 }, (_, i) => <span key={i} className="ph" />)}
      </span>
      <span className="name">
        {index}: {name}
      </span>
    </button>
  );
}

export function DecoyClassPicker({ set, value, onChange, invalid }: { set: ImageSetOut; value: string; onChange: (v: string) => void; invalid?: boolean }) {
  return (
    <div role="radiogroup" aria-label="Decoy class" aria-invalid={invalid} id="f-decoy" className="class-grid" tabIndex={-1}>
      {set.classes.map((name, i) => (
        <ClassCard key={i} setId={set.id} index={i} name={name} checked={value === String(i)} onPick={() => onChange(String(i))} />
      ))}
    </div>
  );
}

export function DecoyImagePicker({ set, value, onChange }: { set: ImageSetOut; value: number[]; onChange: (ids: number[]) => void }) {
  const [cls, setCls] = useState(0);
  const [offset, setOffset] = useState(0);
  const samples = useSamples(set.id, cls, 24, offset);
  const chosen = new Set(value);
  const toggle = (id: number) => onChange(chosen.has(id) ? value.filter((v) => v !== id) : [...value, id]);
  return (
    <div className="decoy-images" id="f-decoy" tabIndex={-1}>
      <div className="row">
        <label>
          Browse class{" "}
          <select
            value={cls}
            onChange={(e) => {
              setCls(Number(e.target.value));
              setOffset(0);
            }}
          >
            {set.classes.map((c, i) => (
              <option key={i} value={i}>
                {i}: {c}
              </option>
            ))}
          </select>
        </label>
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - 24))}>
          ‹ previous
        </button>
        <button type="button" disabled={(samples.data?.length ?? 0) < 24} onClick={() => setOffset(offset + 24)}>
          more ›
        </button>
        <span className="muted">
          {value.length} chosen{" "}
          {value.length > 0 && (
            <button type="button" className="link" onClick={() => onChange([])}>
              clear
            </button>
          )}
        </span>
      </div>
      {samples.isLoading ? (
        <Loading what="Loading images" />
      ) : (
        <div className="pick-grid">
          {(samples.data ?? []).map((s) => (
            <button
              key={s.image_id}
              type="button"
              aria-pressed={chosen.has(s.image_id)}
              className={`pick${chosen.has(s.image_id) ? " on" : ""}`}
              onClick={() => toggle(s.image_id)}
              title={`image ${s.image_id}: ${s.label_name}`}
            >
              <img src={s.thumb_url} loading="lazy" width={56} height={56} alt={`image ${s.image_id}, ${s.label_name}`} />
            </button>
          ))}
        </div>
      )}
    </div>
  );
}
