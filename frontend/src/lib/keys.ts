// ← / → between units: the key handler of the unit pages (a model's unit, a detection's unit).
import { useEffect, useRef } from "react";

/**
 * Calls `go(prev)` on ← and `go(next)` on → (null: nothing there), unless a modifier is held
 * or the focus is in a field that takes arrow keys. The latest prev/next/go are used on each
 * press, so the handler is bound once.
 */
export function useArrowKeys(prev: number | null, next: number | null, go: (to: number) => void) {
  const nav = useRef({ prev, next, go });
  nav.current = { prev, next, go };
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
      const t = e.target as HTMLElement | null;
      if (t && (["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName) || t.isContentEditable)) return;
      const to = e.key === "ArrowLeft" ? nav.current.prev : e.key === "ArrowRight" ? nav.current.next : null;
      if (to == null) return;
      e.preventDefault();
      nav.current.go(to);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
}
