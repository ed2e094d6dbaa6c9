#!/usr/bin/env bash
# `make test`: every test, the Python suite (engine + service, pytest) and the dashboard suite
# (frontend/scripts/test.sh: API-client check, Vitest, build, Playwright e2e against the real
# stack) side by side. Both spend much of their time waiting on jobs run by their own workers
# (Celery, the e2e stack), so on 2 cores running them together fills the cores that either
# leaves idle (issue 19 item 13: the measured times are in the closing notes and README);
# each uses its own database, Redis and ports.
#
# FVAUDIT_TEST_SERIAL=1 runs them one after the other (the pytest output then streams live).
# PYTEST_ARGS are passed to pytest. The pytest log lands in test-output/pytest.log and is
# printed when it ends; the slowest tests are listed at its end (--durations).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT=test-output
mkdir -p "$OUT"
T0=$(date +%s)
secs() { echo $(( $(date +%s) - T0 )); }

if [ "${FVAUDIT_TEST_SERIAL:-0}" = 1 ] || [ ! -f frontend/package.json ]; then
  # shellcheck disable=SC2086
  "$PY" -m pytest -q tests --durations=25 ${PYTEST_ARGS:-} || exit $?
  echo "pytest: passed in $(secs) s"
  [ -f frontend/package.json ] && { bash frontend/scripts/test.sh || exit $?; }
  echo "make test: passed in $(secs) s"
  exit 0
fi

# Side by side, each suite gets one core's worth of torch threads (its own process, its Celery
# worker and their DataLoader workers): two suites each spinning two OpenMP threads on two
# cores wait on each other far more than they compute (the make test times in README).
export FVAUDIT_TORCH_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
rm -f "$OUT/pytest.rc"
# shellcheck disable=SC2086
( "$PY" -m pytest -q tests --durations=25 ${PYTEST_ARGS:-} > "$OUT/pytest.log" 2>&1; echo $? > "$OUT/pytest.rc"
  echo "pytest ended after $(secs) s (rc $(cat "$OUT/pytest.rc"))" ) &
PYTEST_PID=$!
trap 'kill 0' INT TERM
bash frontend/scripts/test.sh
FRONT_RC=$?
echo "dashboard suite ended after $(secs) s (rc $FRONT_RC); waiting for pytest"
wait "$PYTEST_PID"
PYTEST_RC=$(cat "$OUT/pytest.rc" 2>/dev/null || echo 1)
echo
echo "==================== pytest (ran beside the dashboard suite): test-output/pytest.log"
cat "$OUT/pytest.log"
echo "===================="
echo "pytest: rc $PYTEST_RC; dashboard suite: rc $FRONT_RC; make test took $(secs) s"
[ "$PYTEST_RC" = 0 ] && [ "$FRONT_RC" = 0 ]
