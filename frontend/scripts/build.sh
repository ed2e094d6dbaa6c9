#!/usr/bin/env bash
# Build the dashboard into frontend/dist (the backend serves it at /): npm ci when
# node_modules is missing or older than package-lock.json, then vite build.
#   bash frontend/scripts/build.sh            build if dist is missing or older than the sources
#   bash frontend/scripts/build.sh --force    always build
set -euo pipefail
FRONT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$FRONT"
command -v npm >/dev/null || { echo "frontend: npm is not installed (Node >= 20.19 needed); the API still works at /api/v1/docs" >&2; exit 1; }
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ "${1:-}" != --force ] && [ -f dist/index.html ] \
   && [ -z "$(find src index.html package-lock.json vite.config.ts -newer dist/index.html -print -quit)" ]; then
  echo "frontend: dist is up to date"
  exit 0
fi
npm run -s build
