// Slingshots target images (SPEC §8.1): uploading one (`POST /target-images`, multipart) for the
// launch form; a 422 names `body.file` and why.
import { useMutation } from "@tanstack/react-query";
import { authHeaders, fetchOk, type Schemas } from "../client";

export type TargetImageOut = Schemas["TargetImageOut"];

/** `POST /api/v1/target-images`: 201 with the stored target, or an ApiError (422: the file refused, and why). */
export async function uploadTarget(file: File): Promise<TargetImageOut> {
  const body = new FormData();
  body.append("file", file);
  const res = await fetchOk("/api/v1/target-images", { method: "POST", headers: authHeaders(), body });
  return (await res.json()) as TargetImageOut;
}

export const useUploadTarget = () => useMutation({ mutationFn: uploadTarget });
