#!/usr/bin/env bash
# The README's test command: installs and starts everything the tests need, lints (ruff) and type-checks (mypy) the
# tree, then runs pytest.
#   ./segarena.sh test [PYTEST ARGS...]          the whole suite (Docker, Redis, PostgreSQL, Chromium)
#   ./segarena.sh test --fast [PYTEST ARGS...]   what needs no Docker, PostgreSQL or browser and is not slow
# Under CI=true a missing service fails the tests that need it (never a silent skip); --fast does not start
# Docker or PostgreSQL and deselects the tests marked docker/postgres/browser/slow (tests/conftest.py marks them).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
fast=0
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then fast=1; else args+=("$a"); fi
done
if [ $fast -eq 1 ]; then
  need_apt redis-server
  ensure_venv
  ensure_redis
  export SEGARENA_TEST_FAST=1
else
  need_apt docker.io redis-server postgresql debootstrap chromium chromium-driver
  ensure_venv
  ensure_docker
  ensure_redis
  ensure_postgres
  ensure_base_image
fi
# pytest's cache of rewritten test modules (and Python's .pyc files), written once, in the background while lint
# runs: every xdist process then collects in ~3 s of CPU instead of ~7 s. Written even where PYTHONDONTWRITEBYTECODE
# is set (under it nothing would ever be cached; the caches are in __pycache__, ignored by git).
PYTHONDONTWRITEBYTECODE= "$PY" -m pytest --collect-only -q -p no:cacheprovider "$ROOT/tests" >/dev/null 2>&1 &
warming=$!
# Lint and types before the tests (ruff and mypy: configured in pyproject.toml, installed from the test extras by
# ensure_venv). Whole-suite runs only (no pytest arguments besides --fast); SEGARENA_SKIP_LINT=1 skips them.
if [ ${#args[@]} -eq 0 ] && [ "${SEGARENA_SKIP_LINT:-0}" != "1" ]; then
  say "lint: ruff check . (rules in pyproject.toml [tool.ruff])"
  "$PY" -m ruff check --no-cache "$ROOT" || die "ruff found the problems above; fix them (do not reformat the tree)"
  say "types: mypy (strict for evaluator/ and data_manifests/, basic elsewhere)"
  "$PY" -m mypy || die "mypy found the type errors above"
fi
wait "$warming" || true  # a collection error shows again, with its message, in the run itself
export SEGARENA_BASE_IMAGE="$BASE_IMAGE"
export SEGARENA_TEST_REDIS_URL="redis://127.0.0.1:${SEGARENA_REDIS_PORT:-6379}/15"
say "running the test suite$([ $fast -eq 1 ] && echo ' (--fast: no Docker, PostgreSQL or browser)')"
# pytest-xdist processes: the lanes of minutes-long, mostly waiting files (tests/conftest.py LANES, one process each)
# plus one per core for everything else; a test file stays in one process (its module fixtures run once). No test
# touches a shared service's life: the fault tests restart private Redis, PostgreSQL and Docker engines of their own.
lanes=3  # len(set(LANES.values())) in tests/conftest.py
[ $fast -eq 1 ] && lanes=1  # --fast deselects the lanes' files; one process more than cores still helps (waits)
workers="${SEGARENA_TEST_WORKERS:-$(( $(nproc) + lanes ))}"
select=()
[ $fast -eq 1 ] && select=(-m "not docker and not postgres and not browser and not slow")
set +e
# --dist loadfile: by file, a lane's files together (tests/conftest.py pytest_xdist_make_scheduler);
# --no-loadscope-reorder: in the order conftest.py sorts them (the lanes first), not xdist's (most tests first)
"$PY" -m pytest "${select[@]}" -n "$workers" --dist loadfile --no-loadscope-reorder "${args[@]}"
rc=$?
set -e
[ $rc -eq 5 ] && die "pytest collected no tests"
exit $rc
