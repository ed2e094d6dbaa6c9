import "@testing-library/jest-dom/vitest";
import { cleanup, configure } from "@testing-library/react";
import { afterEach } from "vitest";

// findBy*/waitFor wait up to 10 s (default 1 s): under `make test` the suite shares 2 CPU
// cores with the Python tests, and a fixture round trip plus a render can take seconds there.
// A ceiling, not a wait (they return as soon as the element is there); it stays below the
// 30 s testTimeout in vite.config.ts, so a test that really fails reports what it waited for.
configure({ asyncUtilTimeout: 10_000 });

afterEach(() => {
  cleanup();
  localStorage.clear();
});
