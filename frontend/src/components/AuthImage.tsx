import { useEffect, useState } from "react";
import { authHeaders } from "../api/client";

/** An image behind the API's auth (an <img src> cannot send the Bearer header). */
export function AuthImage({ src, alt, className, size }: { src: string; alt: string; className?: string; size?: number }) {
  const [url, setUrl] = useState<string | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  useEffect(() => {
    let obj: string | null = null;
    let live = true;
    setUrl(null);
    setFailed(null);
    fetch(src, { headers: authHeaders() })
      .then(async (r) => {
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        obj = URL.createObjectURL(await r.blob());
        if (live) setUrl(obj);
      })
      .catch((e) => live && setFailed(String(e.message ?? e)));
    return () => {
      live = false;
      if (obj) URL.revokeObjectURL(obj);
    };
  }, [src]);
  if (failed) return <p className="muted small">Could not load {alt} ({failed}).</p>;
  if (!url) return <span className="ph big" role="img" aria-label={`loading ${alt}`} style={size ? { width: size, height: size } : undefined} />;
  return <img src={url} alt={alt} className={className} width={size} height={size} />;
}
