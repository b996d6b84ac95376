#!/usr/bin/env bash
# The demo: on a running SegArena (./segarena.sh up starts this in the background), create the demo
# challenge, build and submit the two baseline images as two demo teams, and follow their runs.
# Idempotent: a second run finds everything and exits in seconds.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
export SEGARENA_DATA_DIR="${SEGARENA_DATA_DIR:-$ROOT/.segarena}"
export SEGARENA_BASE_IMAGE="${SEGARENA_BASE_IMAGE:-$BASE_IMAGE}"
if [ -z "${SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN:-}" ] && [ -f "$SEGARENA_DATA_DIR/organizer.token" ]; then
  SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN="$(cat "$SEGARENA_DATA_DIR/organizer.token")"
  export SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN
fi
export SEGARENA_URL="${SEGARENA_URL:-http://127.0.0.1:${SEGARENA_PORT:-8000}}"
exec "$VENV/bin/segarena" demo "$@"
