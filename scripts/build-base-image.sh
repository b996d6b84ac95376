#!/usr/bin/env bash
# Builds SegArena's local base image (minimal Debian + python3 + numpy + scipy) with debootstrap
# and `docker import`, for machines that cannot pull python:3.11-slim from a registry.
# Cached by tag: does nothing if the image exists. Usage: scripts/build-base-image.sh [TAG]
source "$(dirname "$0")/lib.sh"
TAG="${1:-$BASE_IMAGE}"
if docker image inspect "$TAG" >/dev/null 2>&1; then say "base image $TAG present"; exit 0; fi
command -v debootstrap >/dev/null 2>&1 || need_apt debootstrap
is_root || die "building the base image needs root (debootstrap); or set SEGARENA_BASE_IMAGE=python:3.11-slim where a registry is reachable"
SUITE="${SEGARENA_BASE_SUITE:-bookworm}"
MIRROR="${SEGARENA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d /tmp/segarena-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
say "building base image $TAG from Debian $SUITE (debootstrap, about a minute)"
debootstrap --variant=minbase --include=python3,python3-numpy,python3-scipy,ca-certificates \
  "$SUITE" "$work/root" "$MIRROR" >"$work/log" 2>&1 || { tail -20 "$work/log"; die "debootstrap failed"; }
rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/* "$work/root"/usr/share/doc "$work/root"/usr/share/man
ln -sf /usr/bin/python3 "$work/root/usr/local/bin/python"
tar -C "$work/root" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$TAG" >/dev/null
say "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
