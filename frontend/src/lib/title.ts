// Page titles that name what the page shows (a run, a unit, a model), for tabs,
// history and screen readers.
import { useEffect } from "react";

export const APP = "fvaudit";

/** Set document.title to "<what> · fvaudit" while the page is shown. */
export function usePageTitle(what: string | null | undefined) {
  useEffect(() => {
    document.title = what ? `${what} · ${APP}` : APP;
  }, [what]);
}
