#!/usr/bin/env bash
# The real fvaudit service stack on this machine, for the browser tests and for people:
# Postgres (database created if missing, migrations applied), Redis, the API
# (`fvaudit serve`, service mode, serving frontend/dist at / when it is built) and one
# Celery worker (`fvaudit worker`), with the demo model and Fashion-MNIST registered and
# a known admin token.
#
# Usage
#   scripts/run-service-stack.sh run   [STATE_DIR]   foreground; Ctrl-C stops everything
#   scripts/run-service-stack.sh start STATE_DIR     background; returns once API and worker are ready
#   scripts/run-service-stack.sh stop  STATE_DIR     stops what `start` started
# STATE_DIR (default .stack) receives logs, pid files, admin_token and stack.env:
#   FVAUDIT_URL, FVAUDIT_ADMIN_TOKEN, FVAUDIT_STACK_LOGS, FVAUDIT_DATABASE_URL,
#   FVAUDIT_BROKER_URL, FVAUDIT_MODEL_ID, FVAUDIT_TRAIN_SET_ID, FVAUDIT_VAL_SET_ID
#   (and FVAUDIT_AUDIT_JOB_ID when a demo audit was queued).
#
# Environment (all optional)
#   FVAUDIT_STACK_DB        database name (default fvaudit_stack); created if missing
#   FVAUDIT_STACK_DROP_DB   1: `stop` drops the database (for throw-away test databases)
#   FVAUDIT_STACK_PORT      API port (default 8770)
#   FVAUDIT_STACK_HOST      API bind address (default 127.0.0.1)
#   FVAUDIT_STACK_REDIS     "own" (default: a private redis-server on a free port) or a
#                           redis:// URL (e.g. redis://127.0.0.1:6379/0, the machine's Redis)
#   FVAUDIT_ADMIN_TOKEN     the admin token to use (16-128 chars of A-Za-z0-9_-); default: random
#   FVAUDIT_STACK_TRAIN     training images registered (default 3000; 0 = all 60000)
#   FVAUDIT_STACK_VAL       validation images registered (default 1000; 0 = all 10000)
#   FVAUDIT_STACK_DEMO_AUDIT  1: queue a small demo audit (push-down on relu3) at start
#   FVAUDIT_STACK_STEPS     steps of that audit (default 30)
#   FVAUDIT_TEST_PG         admin connection URL (default postgresql://postgres@127.0.0.1:5432/test)
#   FVAUDIT_PYTHON          interpreter (default .venv/bin/python)
# Any other FVAUDIT_* setting (see backend/fvaudit/config.py) is passed through.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PY="${FVAUDIT_PYTHON:-$REPO/.venv/bin/python}"
CMD="${1:-run}"
STATE="${2:-$REPO/.stack}"
PG_ADMIN="${FVAUDIT_TEST_PG:-postgresql://postgres@127.0.0.1:5432/test}"
DB="${FVAUDIT_STACK_DB:-fvaudit_stack}"
PORT="${FVAUDIT_STACK_PORT:-8770}"
HOST="${FVAUDIT_STACK_HOST:-127.0.0.1}"

log() { echo "run-service-stack: $*" >&2; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
psql_admin() { psql "$PG_ADMIN" -v ON_ERROR_STOP=1 -Atqc "$1" 2>/dev/null || psql "${PG_ADMIN/postgres@/}" -v ON_ERROR_STOP=1 -Atqc "$1"; }

stop_pid() { # pid file: TERM the process group, wait, then KILL what is left
  local f="$1" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

do_stop() {
  stop_pid "$STATE/worker.pid"
  stop_pid "$STATE/api.pid"
  stop_pid "$STATE/redis.pid"
  if [ "${FVAUDIT_STACK_DROP_DB:-0}" = 1 ] && [ -f "$STATE/db.name" ]; then
    psql_admin "DROP DATABASE IF EXISTS \"$(cat "$STATE/db.name")\" WITH (FORCE)" >/dev/null \
      || log "could not drop database $(cat "$STATE/db.name")"
    rm -f "$STATE/db.name"
  fi
  log "stopped"
}

do_start() {
  [ -x "$PY" ] || { log "no Python at $PY (run 'make install' first)"; exit 1; }
  mkdir -p "$STATE"
  STATE="$(cd "$STATE" && pwd)"
  bash "$REPO/scripts/services.sh"            # Postgres (and the machine's Redis) running

  [[ "$DB" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { log "FVAUDIT_STACK_DB must be a plain identifier"; exit 2; }
  if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_admin "CREATE DATABASE \"$DB\"" >/dev/null
    log "created database $DB"
  fi
  echo "$DB" > "$STATE/db.name"
  local pg_user
  pg_user="$(psql_admin 'select current_user')"

  local redis_url="${FVAUDIT_STACK_REDIS:-own}"
  if [ "$redis_url" = own ]; then
    if command -v redis-server >/dev/null; then
      local rport
      rport="$(free_port)"
      setsid redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$STATE" \
        > "$STATE/redis.log" 2>&1 < /dev/null &
      echo $! > "$STATE/redis.pid"
      for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.2; done
      redis_url="redis://127.0.0.1:$rport/0"
    else
      redis_url="redis://127.0.0.1:6379/0"
    fi
  fi

  export PYTHONPATH="$REPO/backend${PYTHONPATH:+:$PYTHONPATH}"
  export FVAUDIT_DATABASE_URL="postgresql+psycopg://$pg_user@127.0.0.1:5432/$DB"
  export FVAUDIT_BROKER_URL="$redis_url"
  export FVAUDIT_DATA_DIR="${FVAUDIT_DATA_DIR:-$STATE/data}"
  export FVAUDIT_CACHE_DIR="${FVAUDIT_CACHE_DIR:-$REPO/.fvaudit-cache/stack}"
  export FVAUDIT_CELERY_QUEUE="${FVAUDIT_CELERY_QUEUE:-fvaudit-stack-$DB}"
  export FVAUDIT_DEVICE="${FVAUDIT_DEVICE:-cpu}"
  # service mode refuses to start without a secret key: one per state dir, kept across restarts
  [ -f "$STATE/secret_key" ] || python3 -c 'import secrets; print(secrets.token_hex(32))' > "$STATE/secret_key"
  export FVAUDIT_SECRET_KEY="${FVAUDIT_SECRET_KEY:-$(cat "$STATE/secret_key")}"
  export FVAUDIT_PROGRESS_INTERVAL="${FVAUDIT_PROGRESS_INTERVAL:-0.3}"
  export FVAUDIT_FRONTEND_DIST="${FVAUDIT_FRONTEND_DIST:-$REPO/frontend/dist}"
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
  unset DATABASE_URL BROKER_URL CELERY_BROKER_URL DATA_DIR
  mkdir -p "$FVAUDIT_DATA_DIR" "$FVAUDIT_CACHE_DIR"

  local token="${FVAUDIT_ADMIN_TOKEN:-}"
  if [ -z "$token" ] && [ -f "$STATE/admin_token" ]; then token="$(cat "$STATE/admin_token")"; fi
  [ -n "$token" ] || token="fva_$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
  local setup=(-m fvaudit.cli setup-demo --limit-train "${FVAUDIT_STACK_TRAIN:-3000}"
               --limit-val "${FVAUDIT_STACK_VAL:-1000}" --admin-token "$token" --json-out "$STATE/demo.json")
  if [ "${FVAUDIT_STACK_DEMO_AUDIT:-0}" = 1 ]; then setup+=(--queue-audit --steps "${FVAUDIT_STACK_STEPS:-30}"); fi
  "$PY" "${setup[@]}" > "$STATE/setup.log" 2>&1 || { log "setup failed:"; tail -30 "$STATE/setup.log" >&2; exit 1; }
  echo "$token" > "$STATE/admin_token"
  chmod 600 "$STATE/admin_token"

  setsid "$PY" -m fvaudit.cli serve --host "$HOST" --port "$PORT" --no-upgrade > "$STATE/api.log" 2>&1 < /dev/null &
  echo $! > "$STATE/api.pid"
  setsid "$PY" -m fvaudit.cli worker --loglevel INFO --hostname "stack-$DB@%h" > "$STATE/worker.log" 2>&1 < /dev/null &
  echo $! > "$STATE/worker.pid"

  local url="http://127.0.0.1:$PORT"
  for i in $(seq 120); do
    curl -fsS "$url/api/v1/health" 2>/dev/null | grep -q '"mode":"service"' && break
    kill -0 "$(cat "$STATE/api.pid")" 2>/dev/null || { log "the API died:"; tail -40 "$STATE/api.log" >&2; exit 1; }
    [ "$i" = 120 ] && { log "the API did not come up:"; tail -40 "$STATE/api.log" >&2; exit 1; }
    sleep 0.5
  done
  for i in $(seq 120); do
    grep -q "ready\." "$STATE/worker.log" 2>/dev/null && break
    kill -0 "$(cat "$STATE/worker.pid")" 2>/dev/null || { log "the worker died:"; tail -40 "$STATE/worker.log" >&2; exit 1; }
    [ "$i" = 120 ] && { log "the worker did not report ready:"; tail -40 "$STATE/worker.log" >&2; exit 1; }
    sleep 0.5
  done

  "$PY" - "$STATE/demo.json" "$STATE/stack.env" "$url" "$token" "$STATE" <<'PYEOF'
import json, os, sys
demo, env, url, token, state = sys.argv[1:]
d = json.load(open(demo))
lines = {"FVAUDIT_URL": url, "FVAUDIT_ADMIN_TOKEN": token, "FVAUDIT_STACK_LOGS": state,
         "FVAUDIT_DATABASE_URL": os.environ["FVAUDIT_DATABASE_URL"], "FVAUDIT_BROKER_URL": os.environ["FVAUDIT_BROKER_URL"],
         "FVAUDIT_MODEL_ID": d["model_id"], "FVAUDIT_TRAIN_SET_ID": d["train_set_id"], "FVAUDIT_VAL_SET_ID": d["val_set_id"]}
if "audit_job_id" in d:
    lines["FVAUDIT_AUDIT_JOB_ID"] = d["audit_job_id"]
open(env, "w").write("".join(f"{k}={v}\n" for k, v in lines.items()))
PYEOF
  log "API + Celery worker up at $url (database $DB, broker $FVAUDIT_BROKER_URL, logs in $STATE)"
  echo "FVAUDIT_URL=$url"
  echo "FVAUDIT_ADMIN_TOKEN=$token"
}

case "$CMD" in
  start) do_start ;;
  stop) [ -d "$STATE" ] && STATE="$(cd "$STATE" && pwd)"; do_stop ;;
  run)
    do_start
    trap 'do_stop; exit 0' INT TERM
    log "dashboard: http://127.0.0.1:$PORT/?token=$(cat "$STATE/admin_token")   (Ctrl-C stops the stack)"
    while kill -0 "$(cat "$STATE/api.pid")" 2>/dev/null; do sleep 1; done
    log "the API exited; stopping"; do_stop ;;
  *) echo "usage: $0 run|start|stop [STATE_DIR]" >&2; exit 2 ;;
esac
