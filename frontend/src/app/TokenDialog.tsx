import { useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { getToken, setToken } from "../api/auth";
import { ApiError } from "../api/client";
import { Dialog } from "../components/Dialog";

/** Enter / change / forget the API token (kept in this browser's localStorage). */
export function TokenDialog({ onClose }: { onClose: () => void }) {
  const [value, setValue] = useState(getToken() ?? "");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const qc = useQueryClient();
  const save = async () => {
    const t = value.trim();
    if (!t) {
      setError("Paste a token: it starts with fva_.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const res = await fetch("/api/v1/me", { headers: { Authorization: `Bearer ${t}` } });
      if (res.status === 401) throw new ApiError(401, "this token is invalid or revoked", "This token is invalid or revoked. Check it, or create one with `fvaudit token create`.");
      if (!res.ok) throw new ApiError(res.status, res.statusText);
      setToken(t);
      qc.invalidateQueries();
      onClose();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : `Cannot reach the server to check the token (${String(e)}).`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="API token" onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void save();
        }}
      >
        <p>
          Writes and private runs need an API token. <code>make demo</code> prints an admin token (and a link that sets it);
          otherwise create one with <code>fvaudit token create --user you</code>. It is kept in this browser only.
        </p>
        <label htmlFor="token-input">Token</label>
        <input
          id="token-input"
          className="mono"
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          onChange={(e) => setValue(e.target.value)}
          placeholder="fva_…"
          aria-invalid={!!error}
          aria-describedby={error ? "token-error" : undefined}
        />
        {error && (
          <p id="token-error" className="field-error" role="alert">
            {error}
          </p>
        )}
        <div className="row end">
          {getToken() && (
            <button
              type="button"
              className="danger"
              onClick={() => {
                setToken(null);
                qc.clear();
                onClose();
              }}
            >
              Forget token
            </button>
          )}
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Checking…" : "Save"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
