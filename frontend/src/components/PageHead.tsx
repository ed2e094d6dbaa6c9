// The head of a page: where it sits (crumbs), its title, what it is, and its actions.
import type { ReactNode } from "react";

export function PageHead({ title, crumbs, actions, children }: { title: ReactNode; crumbs?: ReactNode; actions?: ReactNode; children?: ReactNode }) {
  return (
    <div className="page-head">
      <div>
        {crumbs != null && <p className="crumbs">{crumbs}</p>}
        <h1>{title}</h1>
        {children != null && <p className="muted">{children}</p>}
      </div>
      {actions}
    </div>
  );
}
