#!/usr/bin/env bash
# The README's run command: SegArena in embedded mode (SQLite, embedded broker, local storage,
# the local Docker engine) with the API and leaderboard at http://127.0.0.1:8000: the API, the trusted
# scorer (segarena scorer) and one execution worker (segarena worker, its token generated here).
#   ./segarena.sh up
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_apt docker.io debootstrap
ensure_venv
ensure_docker
ensure_base_image
export SEGARENA_DATA_DIR="${SEGARENA_DATA_DIR:-$ROOT/.segarena}"
export SEGARENA_BASE_IMAGE="$BASE_IMAGE" SEGARENA_BASE_IMAGE_TAG="$BASE_IMAGE"
mkdir -p "$SEGARENA_DATA_DIR"
# the organizer of this installation: a token generated once, kept in the data dir (mode 0600);
# the API creates the organizer from it at start-up, the demo uses it
if [ -z "${SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN:-}" ]; then
  token_file="$SEGARENA_DATA_DIR/organizer.token"
  if [ ! -s "$token_file" ]; then
    (umask 077; "$PY" -c "from api.deps import new_token; print(new_token())" >"$token_file")
  fi
  SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN="$(cat "$token_file")"
  export SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN
  say "organizer token: $token_file  (export SEGARENA_TOKEN=\$(cat $token_file) to use 'segarena admin')"
fi
# the embedded execution worker's identity: a worker token generated once, kept in the data dir (mode 0600);
# the API creates the worker identity from it at start-up (every cpu-kind queue)
if [ -z "${SEGARENA_BOOTSTRAP_WORKER_TOKEN:-}" ]; then
  wtoken_file="$SEGARENA_DATA_DIR/worker.token"
  if [ ! -s "$wtoken_file" ]; then
    (umask 077; "$PY" -c "from api.deps import new_token; print(new_token())" >"$wtoken_file")
  fi
  SEGARENA_BOOTSTRAP_WORKER_TOKEN="$(cat "$wtoken_file")"
  export SEGARENA_BOOTSTRAP_WORKER_TOKEN
fi
export SEGARENA_URL="${SEGARENA_URL:-http://127.0.0.1:${SEGARENA_PORT:-8000}}"
export SEGARENA_EXECUTION="${SEGARENA_EXECUTION:-sharded}"
"$PY" -c "from api.db import migrate; migrate()"
broker_url="$("$PY" -c "from api.settings import get_settings; print(get_settings().broker_url)")"
say "starting the scorer: trusted scoring and reaper (log: $SEGARENA_DATA_DIR/scorer.log)"
"$VENV/bin/segarena" scorer >"$SEGARENA_DATA_DIR/scorer.log" 2>&1 &
scorer_pid=$!
# the execution worker needs only the API, its token and the broker (no database, no storage); it says
# hello to the API, so it starts once the API answers
say "starting one execution worker (log: $SEGARENA_DATA_DIR/worker.log)"
(
  for _ in $(seq 1 240); do
    "$PY" - "$SEGARENA_URL" <<'PYEOF' 2>/dev/null && break
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)
except urllib.error.HTTPError:
    pass  # it answers
PYEOF
    sleep 0.5
  done
  exec env -u SEGARENA_DATABASE_URL -u SEGARENA_STORAGE_URL -u SEGARENA_STORAGE_DIR \
    SEGARENA_API_URL="$SEGARENA_URL" SEGARENA_WORKER_TOKEN="$SEGARENA_BOOTSTRAP_WORKER_TOKEN" \
    SEGARENA_BROKER_URL="$broker_url" SEGARENA_CACHE_DIR="${SEGARENA_CACHE_DIR:-$SEGARENA_DATA_DIR/worker-cache}" \
    "$VENV/bin/segarena" worker
) >"$SEGARENA_DATA_DIR/worker.log" 2>&1 &
worker_pid=$!
demo_pid=""
trap 'kill $worker_pid $scorer_pid $demo_pid 2>/dev/null || true; wait $worker_pid $scorer_pid 2>/dev/null || true' EXIT INT TERM
if [ -x "$ROOT/scripts/demo.sh" ] && [ "${SEGARENA_NO_DEMO:-}" != 1 ]; then
  say "setting up the demo in the background (its progress appears below; log: $SEGARENA_DATA_DIR/demo.log)"
  "$ROOT/scripts/demo.sh" 2>&1 | tee "$SEGARENA_DATA_DIR/demo.log" &
  demo_pid=$!
fi
say "SegArena is at $SEGARENA_URL  (health: $SEGARENA_URL/health; Ctrl-C stops)"
# requests are not logged here, so the demo's progress stays readable
"$VENV/bin/segarena" serve --host 127.0.0.1 --port "${SEGARENA_PORT:-8000}" --no-access-log
