#!/usr/bin/env bash
# The dashboard's test suite (`make test` runs it when frontend/package.json exists):
#   1. Chromium from Debian when /usr/bin/chromium is missing
#   2. npm ci
#   3. the generated API client matches the backend's OpenAPI (fails when stale)
#   4. Vitest: unit and component tests
#   5. npm run build (type check + Vite build into frontend/dist, which the API serves at /)
#   6. the real service stack (Postgres, Redis, API, Celery worker; scripts/run-service-stack.sh)
#      and the Playwright end-to-end tests (every e2e/*.test.mjs) against it; the stack is stopped even on failure.
# Screenshots and the stack's logs land in test-output/e2e/ (git-ignored).
#
# FVAUDIT_SKIP_E2E=1 stops after the build; FVAUDIT_E2E_ONLY=1 runs only the build and the
# end-to-end part (steps 5 and 6: what to rerun after a backend change, on 2 CPU cores).
set -euo pipefail
FRONT="$(cd "$(dirname "$0")/.." && pwd)"
REPO="$(cd "$FRONT/.." && pwd)"
OUT="${FVAUDIT_E2E_OUT:-$REPO/test-output/e2e}"
cd "$FRONT"
T0=$(date +%s)
step() { printf '\n== frontend: %s\n' "$*"; }
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

step "Chromium"
if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
"${CHROMIUM_PATH:-/usr/bin/chromium}" --version 2>/dev/null

if [ "${FVAUDIT_E2E_ONLY:-0}" = 1 ]; then
  [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
else
  step "npm ci"
  npm ci --no-audit --no-fund --loglevel=error

  step "API client is up to date with the backend's OpenAPI"
  node scripts/gen-api.mjs --check

  step "unit and component tests (Vitest)"
  npx vitest run
fi

step "build (tsc + vite)"
npm run -s build

if [ "${FVAUDIT_SKIP_E2E:-0}" = 1 ]; then
  echo "FVAUDIT_SKIP_E2E=1: end-to-end tests skipped"
  exit 0
fi

step "end-to-end (Playwright + Chromium) against the real API + Celery worker"
mkdir -p "$OUT"
STATE="$OUT/stack"
rm -rf "$STATE"
STACK=(bash "$REPO/scripts/run-service-stack.sh")
export FVAUDIT_STACK_DB="fvaudit_e2e_$$" FVAUDIT_STACK_DROP_DB=1
export FVAUDIT_STACK_PORT="${FVAUDIT_STACK_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
export FVAUDIT_CELERY_QUEUE="fvaudit-e2e-$$"
stop_stack() {
  local rc=$?
  if [ $rc -ne 0 ] && [ -d "$STATE" ]; then
    for f in api worker; do
      [ -f "$STATE/$f.log" ] && { echo "---- last lines of $f.log"; tail -25 "$STATE/$f.log"; }
    done
  fi
  "${STACK[@]}" stop "$STATE" || true
  echo "frontend tests: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - T0 )) s"
  exit $rc
}
trap stop_stack EXIT
"${STACK[@]}" start "$STATE"
set -a
# shellcheck disable=SC1091
. "$STATE/stack.env"
set +a
export FVAUDIT_E2E_OUT="$OUT"
# every e2e file, one after another (they share the one stack)
node --test --test-concurrency=1 --test-reporter=spec e2e/*.test.mjs
echo "screenshots: $(ls "$OUT"/*.png 2>/dev/null | tr '\n' ' ')"
