// The one auth guard: a layout route around every page that needs an API token. Without a
// token it shows how to get one instead of the page; `orShare` lets a share link (?share=)
// stand in for the token (a run and its units are readable through one).
import { useState } from "react";
import { Outlet } from "react-router";
import { useToken } from "../api/auth";
import { useShareParam } from "../lib/share";
import { TokenDialog } from "./TokenDialog";

export function RequireToken({ orShare = false }: { orShare?: boolean }) {
  const token = useToken();
  const share = useShareParam();
  if (token || (orShare && share)) return <Outlet />;
  return <SignIn />;
}

function SignIn() {
  const [open, setOpen] = useState(false);
  return (
    <section className="panel signin">
      <h1>Sign in with an API token</h1>
      <p>
        This page shows your runs, models and jobs, which needs an API token. <code>make demo</code> prints one (open the
        link it prints, or paste the token); a server admin can create one with <code>fvaudit token create --user you</code>.
      </p>
      <p>Opened a share link? It shows its run without a token.</p>
      <button type="button" className="primary" onClick={() => setOpen(true)}>
        Enter API token
      </button>
      {open && <TokenDialog onClose={() => setOpen(false)} />}
    </section>
  );
}
