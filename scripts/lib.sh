# Shared helpers for SegArena's set-up scripts. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEGARENA_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
DEFAULT_BASE_IMAGE="segarena/base:bookworm-slim"  # the default of api/settings.py DEFAULT_BASE_IMAGE
BASE_IMAGE="${SEGARENA_BASE_IMAGE:-$DEFAULT_BASE_IMAGE}"
# the recipe of scripts/build-base-image.sh, recorded as the image's label org.segarena.base-version: a local base
# image of an older recipe is rebuilt (2: without locales and the numpy/scipy test suites, 343 -> ~270 MB; 3: the
# reference BLAS/LAPACK instead of OpenBLAS, ~270 -> ~230 MB)
BASE_IMAGE_VERSION=3

say() { printf '\033[1;34m[segarena]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[segarena] error:\033[0m %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# need_apt PKG... : install Debian packages if missing (root), or say what to install.
need_apt() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if is_root; then
    say "installing ${missing[*]} (apt-get)"
    if [ ! -f /var/lib/apt/periodic/segarena-updated ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
      apt-get update -qq && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/segarena-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "missing Debian packages: ${missing[*]}. Install them with: sudo apt-get install -y ${missing[*]}"
  fi
}

ensure_venv() {
  if [ ! -x "$PY" ]; then
    say "creating virtualenv $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed; install it with: sudo apt-get install -y python3-venv"
  fi
  local stamp="$VENV/.segarena-installed"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    say "installing SegArena and its dependencies into $VENV"
    "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$PY" -m pip install -q -e "$ROOT[test]" || die "pip install failed"
    touch "$stamp"
  fi
}

ensure_docker() {
  command -v dockerd >/dev/null 2>&1 || need_apt docker.io
  if docker info >/dev/null 2>&1; then return 0; fi
  is_root || die "the Docker engine is not running and I am not root: start it (sudo systemctl start docker) and add yourself to the docker group"
  say "starting the Docker engine (dockerd)"
  mkdir -p /var/log
  # a pid file left by an engine that died would stop the new one from starting
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then rm -f /var/run/docker.pid; fi
  (setsid dockerd >/var/log/segarena-dockerd.log 2>&1 &)
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "dockerd did not come up; see /var/log/segarena-dockerd.log"
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || need_apt redis-server
  if redis-cli -p "${SEGARENA_REDIS_PORT:-6379}" ping >/dev/null 2>&1; then return 0; fi
  say "starting redis-server on 127.0.0.1:${SEGARENA_REDIS_PORT:-6379}"
  redis-server --bind 127.0.0.1 --port "${SEGARENA_REDIS_PORT:-6379}" --daemonize yes --save "" --appendonly no >/dev/null
  for _ in $(seq 1 40); do redis-cli -p "${SEGARENA_REDIS_PORT:-6379}" ping >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "redis-server did not come up"
}

ensure_postgres() {
  command -v pg_ctlcluster >/dev/null 2>&1 || need_apt postgresql
  local ver
  ver="$(ls /usr/lib/postgresql | sort -V | tail -1)"
  if ! pg_lsclusters -h 2>/dev/null | grep -q "^$ver main"; then
    is_root || die "no PostgreSQL cluster; create one with: sudo pg_createcluster $ver main --start"
    pg_createcluster "$ver" main >/dev/null
  fi
  if ! pg_lsclusters -h | grep -q "^$ver main .* online"; then
    is_root || die "PostgreSQL is not running; start it with: sudo pg_ctlcluster $ver main start"
    say "starting PostgreSQL $ver"
    pg_ctlcluster "$ver" main start
  fi
  local port; port="$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')"
  export SEGARENA_PG_PORT="$port"
  if is_root; then
    su postgres -c "psql -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='segarena'\"" | grep -q 1 || \
      su postgres -c "psql -p $port -qc \"CREATE ROLE segarena LOGIN SUPERUSER PASSWORD 'segarena'\""
  fi
}

# base_image_current TAG: the image exists and is not a local base image of an older recipe (an image SegArena did
# not build, e.g. python:3.11-slim, is taken as it is)
base_image_current() {
  local version
  version="$(docker image inspect -f '{{ index .Config.Labels "org.segarena.base-version" }}' "$1" 2>/dev/null)" \
    || return 1
  [ "$version" = "<no value>" ] && version=""
  if [ -z "$version" ] && [ "$1" != "$DEFAULT_BASE_IMAGE" ]; then return 0; fi
  [ "$version" = "$BASE_IMAGE_VERSION" ]
}

ensure_base_image() {
  base_image_current "$BASE_IMAGE" && return 0
  "$ROOT/scripts/build-base-image.sh"
}
