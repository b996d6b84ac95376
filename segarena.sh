#!/usr/bin/env bash
# SegArena's two commands:
#   ./segarena.sh up     run the platform (embedded mode) with the demo challenge at http://127.0.0.1:8000
#   ./segarena.sh test   install and start what the tests need, then run the whole test suite
#                        (about 6 minutes on 2 cores; --fast: only what needs no Docker, PostgreSQL or browser, 1.3 min)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-help}"; shift || true
case "$cmd" in
  up) exec "$here/scripts/up.sh" "$@" ;;
  test) exec "$here/scripts/test.sh" "$@" ;;
  *) sed -n '2,5p' "$0" | sed 's/^# //'; exit 2 ;;
esac
