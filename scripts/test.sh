#!/usr/bin/env bash
# The README's test command: installs and starts everything the tests need, then runs pytest.
#   ./segarena.sh test [PYTEST ARGS...]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_apt docker.io redis-server postgresql debootstrap chromium chromium-driver
ensure_venv
ensure_docker
ensure_redis
ensure_postgres
ensure_base_image
export SEGARENA_BASE_IMAGE="$BASE_IMAGE"
export SEGARENA_TEST_REDIS_URL="redis://127.0.0.1:${SEGARENA_REDIS_PORT:-6379}/15"
say "running the test suite"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
[ $rc -eq 5 ] && die "pytest collected no tests"
exit $rc
