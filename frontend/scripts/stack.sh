#!/usr/bin/env bash
# The real service stack for the dashboard's end-to-end tests (used when the backend's
# scripts/run-service-stack.sh is not there):
#   Postgres (a fresh database on 127.0.0.1:5432), a redis-server of its own on a free
#   port, the API (`fvaudit serve`, service mode, serving frontend/dist at /) and a Celery
#   worker (`fvaudit worker`), with the demo model + Fashion-MNIST registered and a known
#   admin token.
#
#   stack.sh start STATE_DIR   start it; writes STATE_DIR/stack.env (FVAUDIT_URL,
#                              FVAUDIT_ADMIN_TOKEN, ...) and logs under STATE_DIR
#   stack.sh stop STATE_DIR    stop every process it started and drop the database
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${FVAUDIT_PYTHON:-$REPO/.venv/bin/python}"
CMD="${1:?usage: stack.sh start|stop STATE_DIR}"
STATE="${2:?usage: stack.sh start|stop STATE_DIR}"
PG_ADMIN="${FVAUDIT_TEST_PG:-postgresql://postgres@127.0.0.1:5432/test}"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop_pid() { # pid-file: TERM the process group, then KILL what is left
  local f="$1" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

psql_admin() { psql "$PG_ADMIN" -v ON_ERROR_STOP=1 -Atqc "$1" 2>/dev/null || psql "${PG_ADMIN/postgres@/}" -v ON_ERROR_STOP=1 -Atqc "$1"; }

if [ "$CMD" = stop ]; then
  stop_pid "$STATE/worker.pid"
  stop_pid "$STATE/api.pid"
  stop_pid "$STATE/redis.pid"
  if [ -f "$STATE/db.name" ]; then
    psql_admin "DROP DATABASE IF EXISTS \"$(cat "$STATE/db.name")\" WITH (FORCE)" >/dev/null || echo "stack: could not drop the test database" >&2
    rm -f "$STATE/db.name"
  fi
  echo "stack: stopped"
  exit 0
fi
[ "$CMD" = start ] || { echo "usage: stack.sh start|stop STATE_DIR" >&2; exit 2; }

[ -x "$PY" ] || { echo "stack: no Python at $PY (run 'make install' first)" >&2; exit 1; }
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
bash "$REPO/scripts/services.sh"   # Postgres (and the machine's Redis) up

DB="fvaudit_e2e_$$_$RANDOM"
psql_admin "CREATE DATABASE \"$DB\"" >/dev/null
echo "$DB" > "$STATE/db.name"
PGUSER_NAME="$(psql_admin 'select current_user')"

REDIS_PORT="$(free_port)"
setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$STATE" \
  > "$STATE/redis.log" 2>&1 < /dev/null &
echo $! > "$STATE/redis.pid"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done

PORT="${FVAUDIT_E2E_PORT:-$(free_port)}"
TOKEN="fva_e2e_$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
export PYTHONPATH="$REPO/backend${PYTHONPATH:+:$PYTHONPATH}"
export FVAUDIT_DATABASE_URL="postgresql+psycopg://$PGUSER_NAME@127.0.0.1:5432/$DB"
export FVAUDIT_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"
export FVAUDIT_DATA_DIR="$STATE/data"
export FVAUDIT_CACHE_DIR="${FVAUDIT_CACHE_DIR:-$REPO/.fvaudit-cache/e2e}"
export FVAUDIT_CELERY_QUEUE="fvaudit-e2e-$$"
export FVAUDIT_PROGRESS_INTERVAL="${FVAUDIT_PROGRESS_INTERVAL:-0.3}"
export FVAUDIT_DEVICE="${FVAUDIT_DEVICE:-cpu}"
export FVAUDIT_FRONTEND_DIST="$REPO/frontend/dist"
export HF_HUB_OFFLINE=1
mkdir -p "$FVAUDIT_DATA_DIR" "$FVAUDIT_CACHE_DIR"

"$PY" -m fvaudit.cli setup-demo --limit-train "${FVAUDIT_E2E_TRAIN:-3000}" --limit-val "${FVAUDIT_E2E_VAL:-1000}" \
  --admin-token "$TOKEN" --json-out "$STATE/demo.json" > "$STATE/setup.log" 2>&1 \
  || { echo "stack: setup-demo failed:" >&2; tail -30 "$STATE/setup.log" >&2; exit 1; }

setsid "$PY" -m fvaudit.cli serve --host 127.0.0.1 --port "$PORT" --no-upgrade > "$STATE/api.log" 2>&1 < /dev/null &
echo $! > "$STATE/api.pid"
setsid "$PY" -m fvaudit.cli worker --loglevel INFO > "$STATE/worker.log" 2>&1 < /dev/null &
echo $! > "$STATE/worker.pid"

URL="http://127.0.0.1:$PORT"
for i in $(seq 120); do
  if curl -fsS "$URL/api/v1/health" 2>/dev/null | grep -q '"mode":"service"'; then break; fi
  kill -0 "$(cat "$STATE/api.pid")" 2>/dev/null || { echo "stack: the API died:" >&2; tail -40 "$STATE/api.log" >&2; exit 1; }
  [ "$i" = 120 ] && { echo "stack: the API did not come up:" >&2; tail -40 "$STATE/api.log" >&2; exit 1; }
  sleep 0.5
done
for i in $(seq 120); do
  grep -q "ready" "$STATE/worker.log" 2>/dev/null && break
  kill -0 "$(cat "$STATE/worker.pid")" 2>/dev/null || { echo "stack: the worker died:" >&2; tail -40 "$STATE/worker.log" >&2; exit 1; }
  [ "$i" = 120 ] && { echo "stack: the worker did not report ready:" >&2; tail -40 "$STATE/worker.log" >&2; exit 1; }
  sleep 0.5
done

cat > "$STATE/stack.env" <<ENV
FVAUDIT_URL=$URL
FVAUDIT_ADMIN_TOKEN=$TOKEN
FVAUDIT_STACK_LOGS=$STATE
ENV
echo "stack: API + Celery worker up at $URL (database $DB, redis :$REDIS_PORT, logs in $STATE)"
