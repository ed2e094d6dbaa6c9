// The dashboard's registration forms (issue 13, item 18): a registry model, an uploaded
// checkpoint, an image folder under an allowed root. The same checks as the API, run in the
// browser first; the server's 422 items land on the field their `loc` names.
import { API, ApiError, authHeaders, type ImageSetOut, type Job, type ModelOut, type ValidationItem } from "../../api/client";

export type RegField = "name" | "registry_name" | "pretrained" | "checkpoint_path" | "file" | "source" | "limit";
export type RegErrors = Partial<Record<RegField, string>>;

/** What `POST /image-sets` returns: a Fashion-MNIST split at once (201), a folder with the job indexing it (202). */
export type RegisteredSet = ImageSetOut & {
  status?: "ready" | "indexing" | "failed";
  job_id?: number | null;
  error?: string | null;
  skipped?: { path?: string; reason?: string }[];
  job?: Job;
};

export const CHECKPOINT_SUFFIXES = [".safetensors", ".pt", ".pth"];

/** Map a 422's items onto the form's fields by `loc` (["body", "<field>", …]); the rest is for the form. */
export function mapRegisterErrors(items: ValidationItem[], fields: readonly RegField[]): { fields: RegErrors; form: string[] } {
  const out: RegErrors = {};
  const form: string[] = [];
  for (const it of items) {
    const loc = (it.loc ?? []).map(String).filter((p) => p !== "body");
    const msg = it.msg.replace(/^Value error, /, "");
    const f = fields.find((x) => x === loc[0]);
    if (f) out[f] = out[f] ? `${out[f]}; ${msg}` : msg;
    else form.push(loc.length ? `${loc.join(".")}: ${msg}` : msg);
  }
  return { fields: out, form };
}

function nameError(name: string): string | undefined {
  if (!name.trim()) return "give it a name";
  if (name.length > 200) return "at most 200 characters";
  return undefined;
}

const strip = (e: RegErrors): RegErrors => Object.fromEntries(Object.entries(e).filter(([, v]) => v)) as RegErrors;

export type ModelForm = { name: string; registry_name: string; pretrained: boolean; checkpoint_path: string };

export function validateModel(f: ModelForm): RegErrors {
  return strip({
    name: nameError(f.name),
    registry_name: f.registry_name ? undefined : "pick an architecture from the registry",
    checkpoint_path:
      f.checkpoint_path.trim() && !CHECKPOINT_SUFFIXES.some((s) => f.checkpoint_path.trim().toLowerCase().endsWith(s))
        ? "a checkpoint file: .safetensors (or a weights-only .pt / .pth)"
        : undefined,
  });
}

export function modelBody(f: ModelForm): { name: string; registry_name: string; pretrained: boolean; checkpoint_path?: string } {
  const path = f.checkpoint_path.trim();
  return { name: f.name.trim(), registry_name: f.registry_name, pretrained: f.pretrained, ...(path ? { checkpoint_path: path } : {}) };
}

export type UploadForm = { name: string; registry_name: string; file: File | null };

export function validateUpload(f: UploadForm): RegErrors {
  let file: string | undefined;
  if (!f.file) file = "choose a checkpoint file";
  else if (!CHECKPOINT_SUFFIXES.some((s) => f.file!.name.toLowerCase().endsWith(s)))
    file = `${f.file.name} is not a checkpoint: upload .safetensors (or a weights-only .pt / .pth)`;
  else if (f.file.size === 0) file = `${f.file.name} is empty`;
  return strip({ name: nameError(f.name), registry_name: f.registry_name ? undefined : "choose the architecture the weights are for", file });
}

export type FolderForm = { name: string; source: string; limit: string };

export function validateFolder(f: FolderForm): RegErrors {
  const src = f.source.trim();
  let limit: string | undefined;
  if (f.limit.trim()) {
    const n = /^\s*\d+\s*$/.test(f.limit) ? Number(f.limit) : NaN;
    limit = Number.isNaN(n) ? "the limit must be a whole number" : n < 1 ? "the limit must be ≥ 1" : n > 10_000_000 ? "the limit must be ≤ 10,000,000" : undefined;
  }
  return strip({
    name: nameError(f.name),
    source: !src ? "the folder's path on the server" : src.startsWith("/") || src.startsWith("fashion-mnist:") ? undefined : "an absolute path on the server, e.g. /data/pets",
    limit,
  });
}

export function folderBody(f: FolderForm): { name: string; source: string; limit?: number } {
  return { name: f.name.trim(), source: f.source.trim(), ...(f.limit.trim() ? { limit: Number(f.limit) } : {}) };
}

/**
 * POST a checkpoint as multipart with upload progress (fetch cannot report it): resolves to
 * the registered model, rejects with an ApiError (its 422 items, a 413 for a file too large).
 */
export function uploadCheckpoint(f: UploadForm, onProgress: (sent: number, total: number) => void): Promise<ModelOut> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API}/models/upload`);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = "text";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    };
    xhr.onload = () => {
      let body: unknown = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = xhr.responseText;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body as ModelOut);
      else reject(new ApiError(xhr.status, body && typeof body === "object" && "detail" in body ? (body as { detail: unknown }).detail : body));
    };
    xhr.onerror = () => reject(new ApiError(0, "the upload was interrupted"));
    const data = new FormData();
    data.append("name", f.name.trim());
    data.append("registry_name", f.registry_name);
    data.append("file", f.file!, f.file!.name);
    xhr.send(data);
  });
}

/** "12.5 / 40.0 MiB" */
export function bytesText(sent: number, total: number): string {
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  return `${mib(sent)} / ${mib(total)} MiB`;
}
