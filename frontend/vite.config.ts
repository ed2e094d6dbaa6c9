/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API to a running backend (FVAUDIT_API, default :8000).
const api = process.env.FVAUDIT_API ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: { proxy: { "/api": { target: api, changeOrigin: false } } },
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 800 },
  test: {
    environment: "jsdom",
    globals: true,
    setupFiles: ["src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    css: false,
    // `make test` runs Vitest beside the Python suite on the same 2 cores: a test that takes
    // 2-3 s alone can take over Vitest's 5 s default there, and a correct test must not fail
    // for being slow. These are ceilings, not waits: a passing test still ends when it is done.
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
