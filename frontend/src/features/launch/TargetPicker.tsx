// A Slingshots attack's target image (SPEC §8.1): one image of a registered image set (browsed
// by class, or given by its id), or a PNG/JPEG uploaded at once with `POST /target-images`;
// either way its preview. A refused upload (422) shows next to the file field.
import { useState } from "react";
import { ApiError, type ImageSetOut } from "../../api/client";
import { useSamples, useUploadTarget } from "../../api/queries";
import { AuthImage } from "../../components/AuthImage";
import { fieldAria, FieldError, ImageSetSelect } from "../../components/FormField";
import { Loading } from "../../components/States";
import type { LaunchState } from "./useLaunchForm";

const PAGE = 24;

/** The message of a refused upload: the 422's item naming the file, else the error's own text. */
export function uploadError(e: unknown): string {
  if (e instanceof ApiError && e.fieldErrors.length) return e.fieldErrors.map((i) => i.msg).join("; ");
  return e instanceof Error ? e.message : String(e);
}

export function TargetField({ f, sets }: { f: LaunchState; sets: ImageSetOut[] }) {
  const { form, set, shown } = f;
  return (
    <fieldset className="target" id="f-target" tabIndex={-1}>
      <legend>Target image</legend>
      <p className="muted small">
        The synthetic visualization of every attacked unit is aimed at this image; the unit's natural top-k should stay
        {form.kind === "push_up_slingshot" ? " (the combined attack pushes the decoy class up too: pick an image of that class, so both views tell the same lie)" : ""}.
      </p>
      <div className="row">
        <label className="check">
          <input type="radio" name="targetMode" checked={form.targetMode === "set"} onChange={() => set("targetMode", "set", "target")} /> an image of a registered set
        </label>
        <label className="check">
          <input type="radio" name="targetMode" checked={form.targetMode === "upload"} onChange={() => set("targetMode", "upload", "target")} /> upload a PNG or JPEG
        </label>
      </div>
      {form.targetMode === "set" ? <TargetFromSet f={f} sets={sets} /> : <TargetUpload f={f} />}
      <FieldError field="target" msg={shown("target")} />
    </fieldset>
  );
}

/** An image of a registered set: the set, a class to browse, its images; or the image id typed in. */
function TargetFromSet({ f, sets }: { f: LaunchState; sets: ImageSetOut[] }) {
  const { form, set, blur, shown } = f;
  const target = sets.find((s) => String(s.id) === form.target_set_id) ?? null;
  const decoy = form.kind === "push_up_slingshot" && form.decoy_class !== "" ? Number(form.decoy_class) : 0;
  const [cls, setCls] = useState<number | null>(null);
  const shownCls = cls ?? decoy;
  const [offset, setOffset] = useState(0);
  const samples = useSamples(target?.id, target ? shownCls : null, PAGE, offset);
  const [names, setNames] = useState<Record<string, string>>({});
  const id = form.target_image_id.trim();
  const picked = target && /^\d+$/.test(id) && Number(id) < target.size ? Number(id) : null;
  return (
    <div className="target-set">
      <div className="row wrap pickers">
        <label htmlFor="f-target_set_id">Image set</label>
        <ImageSetSelect id="target_set_id" sets={sets} value={form.target_set_id} onChange={(v) => { set("target_set_id", v, "target"); setOffset(0); }} />
        {target && (
          <label>
            Browse class{" "}
            <select aria-label="Browse class" value={shownCls} onChange={(e) => { setCls(Number(e.target.value)); setOffset(0); }}>
              {target.classes.map((c, i) => (
                <option key={i} value={i}>
                  {i}: {c}
                </option>
              ))}
            </select>
          </label>
        )}
        <label htmlFor="f-target_image_id">Image id</label>
        <input id="f-target_image_id" className="short" inputMode="numeric" value={form.target_image_id}
               onChange={(e) => set("target_image_id", e.target.value, "target")} onBlur={blur("target")} {...fieldAria("target", shown("target"))} />
      </div>
      {target && (
        <div className="row">
          <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>
            ‹ previous
          </button>
          <button type="button" disabled={(samples.data?.length ?? 0) < PAGE} onClick={() => setOffset(offset + PAGE)}>
            more ›
          </button>
        </div>
      )}
      {samples.isLoading ? (
        <Loading what="Loading images" />
      ) : (
        <div className="pick-grid" role="group" aria-label="Target candidates">
          {(samples.data ?? []).map((s) => {
            const on = picked === s.image_id;
            return (
              <button key={s.image_id} type="button" aria-pressed={on} className={`pick${on ? " on" : ""}`} title={`image ${s.image_id}: ${s.label_name}`}
                      onClick={() => { set("target_image_id", String(s.image_id), "target"); setNames((n) => ({ ...n, [`${target!.id}:${s.image_id}`]: s.label_name })); }}>
                <img src={s.thumb_url} loading="lazy" width={56} height={56} alt={`image ${s.image_id}, ${s.label_name}`} />
              </button>
            );
          })}
        </div>
      )}
      {target && picked != null && (
        <TargetPreview
          src={`/api/v1/image-sets/${target.id}/images/${picked}/thumb`}
          alt={`target: image ${picked} of ${target.name}`}
          caption={`image ${picked} of ${target.name}${names[`${target.id}:${picked}`] ? ` · ${names[`${target.id}:${picked}`]}` : ""}`}
        />
      )}
    </div>
  );
}

/** A file uploaded as soon as it is chosen; the stored image's preview, or why it was refused. */
function TargetUpload({ f }: { f: LaunchState }) {
  const { form, set } = f;
  const upload = useUploadTarget();
  const up = form.target_upload;
  const refused = upload.error ? uploadError(upload.error) : undefined;
  const onFile = (file: File | undefined) => {
    set("target_upload", null, "target");
    upload.reset();
    if (!file) return;
    upload.mutate(file, {
      onSuccess: (t) => set("target_upload", { ...t, file: file.name }, "target"),
    });
  };
  return (
    <div className="target-upload">
      <div className={`field${refused ? " invalid" : ""}`}>
        <label htmlFor="f-target_file">Target image file</label>
        <input id="f-target_file" type="file" accept="image/png,image/jpeg,.png,.jpg,.jpeg" onChange={(e) => onFile(e.target.files?.[0])} {...fieldAria("target_file", refused, true)} />
        {!refused && (
          <p className="hint muted small" id="h-target_file">
            {upload.isPending ? "Uploading…" : "PNG or JPEG, at most 8 MiB and 4096×4096 pixels; uploaded as soon as it is chosen"}
          </p>
        )}
        <FieldError field="target_file" msg={refused} />
      </div>
      {up && (
        <TargetPreview
          src={up.url}
          alt={`target: the uploaded ${up.file}`}
          caption={`${up.file} · ${up.width}×${up.height} ${up.format}${up.mode === "L" ? " (grey)" : ""} · ${Math.max(1, Math.round(up.size_bytes / 1024))} KB`}
        />
      )}
    </div>
  );
}

function TargetPreview({ src, alt, caption }: { src: string; alt: string; caption: string }) {
  return (
    <figure className="target-preview" data-testid="target-preview">
      <AuthImage src={src} alt={alt} size={96} />
      <figcaption className="muted small">{caption}</figcaption>
    </figure>
  );
}
