#!/usr/bin/env bash
# Builds SegArena's local base image (minimal Debian + python3 + numpy + scipy) with debootstrap
# and `docker import`, for machines that cannot pull python:3.11-slim from a registry.
# Cached by tag: does nothing if the image exists (and, for the default tag, was built by this recipe:
# scripts/lib.sh BASE_IMAGE_VERSION). Usage: scripts/build-base-image.sh [TAG]
source "$(dirname "$0")/lib.sh"
TAG="${1:-$BASE_IMAGE}"
if base_image_current "$TAG"; then say "base image $TAG present"; exit 0; fi
command -v debootstrap >/dev/null 2>&1 || need_apt debootstrap
is_root || die "building the base image needs root (debootstrap); or set SEGARENA_BASE_IMAGE=python:3.11-slim where a registry is reachable"
SUITE="${SEGARENA_BASE_SUITE:-bookworm}"
MIRROR="${SEGARENA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d /tmp/segarena-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
say "building base image $TAG from Debian $SUITE (debootstrap, about a minute)"
debootstrap --variant=minbase --include=python3,python3-numpy,python3-scipy,ca-certificates \
  "$SUITE" "$work/root" "$MIRROR" >"$work/log" 2>&1 || { tail -20 "$work/log"; die "debootstrap failed"; }
# python3-scipy depends on python3-pythran (a compiler), which drags in gcc, g++, boost and the -dev packages
# (about 500 MB nobody runs: scipy itself needs none of them). Purged, dependencies ignored: the base image is for
# running models, and nothing installs packages in it (no network in the sandbox).
DEV_PKGS="python3-pythran python3-beniget python3-gast python3-ply libxsimd-dev libboost1.74-dev g++ g++-12 gcc gcc-12
  cpp cpp-12 libstdc++-12-dev libgcc-12-dev libpython3.11-dev libpython3-dev python3.11-dev python3-dev libexpat1-dev
  zlib1g-dev libopenblas-pthread-dev libopenblas-dev libblas-dev liblapack-dev libc6-dev libc-dev-bin linux-libc-dev
  libcrypt-dev libnsl-dev libtirpc-dev rpcsvc-proto binutils binutils-common binutils-x86-64-linux-gnu libbinutils
  libctf0 libctf-nobfd0 libgprofng0 libjansson4 libasan8 libtsan2 libubsan1 liblsan0 libitm1 libcc1-0
  libisl23 libmpc3 libmpfr6 libhwasan0"
# OpenBLAS came with the -dev packages too (43 MB, 15 % of the image): numpy and scipy then use the reference BLAS and
# LAPACK (libblas3, liblapack3: their declared dependencies, already installed). SegArena's own images threshold,
# label and grow regions; none multiplies large matrices.
DEV_PKGS="$DEV_PKGS libopenblas0 libopenblas0-pthread"
installed="$(chroot "$work/root" dpkg-query -W -f='${Package}\n' 2>/dev/null)"
purge=""
for p in $DEV_PKGS; do grep -qx "$p" <<<"$installed" && purge="$purge $p"; done
if [ -n "$purge" ] && ! chroot "$work/root" dpkg --purge --force-depends $purge >"$work/purge.log" 2>&1; then
  tail -20 "$work/purge.log"; die "could not remove the compiler packages scipy drags in"
fi
rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/* "$work/root"/usr/share/doc "$work/root"/usr/share/man
# Nothing in the image reads message catalogues, and numpy's and scipy's own test suites are not run in it: 74 MB
# of the 343 that every image built on this base carries through docker save, upload, download and load
find "$work/root/usr/share/locale" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
find "$work/root/usr/lib/python3/dist-packages/numpy" "$work/root/usr/lib/python3/dist-packages/scipy" \
  -depth -type d -name tests -exec rm -rf {} +
chroot "$work/root" python3 -c "import numpy, scipy.ndimage, scipy.special, scipy.optimize, scipy.stats, scipy.linalg
a = numpy.array([[4.0, 1.0], [2.0, 3.0]]); assert numpy.allclose(a @ scipy.linalg.solve(a, [1.0, 2.0]), [1.0, 2.0])" \
  || die "numpy/scipy do not import (or their BLAS/LAPACK does not work) after the clean-up"
ln -sf /usr/bin/python3 "$work/root/usr/local/bin/python"
tar -C "$work/root" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' -c "LABEL org.segarena.base-version=$BASE_IMAGE_VERSION" - "$TAG" >/dev/null
say "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
