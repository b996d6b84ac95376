#!/bin/sh
# Build-time steps of the behaviours that need one (tests/behaviours.py: setup=True), run as root by the Dockerfile's
# "setup" target with the behaviour's name.
set -eu
case "$1" in
  setuid)  # a setuid-root copy of id(1)
    cp /usr/bin/id /workspace/suid-id && chown 0:0 /workspace/suid-id && chmod 4755 /workspace/suid-id ;;
  readonly_root)  # a directory the model's uid owns: only the read-only root file system stops the write
    mkdir -p /owned && chown 1000:1000 /owned ;;
  zip_bomb)  # an npz of ~1 MiB inflating to 1 GiB
    python3 /opt/segarena-test/make_bomb.py /workspace/bomb.npz ;;
  root_alias)  # uid 0 under another name: USER toor
    echo 'toor:x:0:0:root by another name:/root:/bin/sh' >> /etc/passwd ;;
  passwd_user)  # a named non-root user: USER app (1234:1235)
    echo 'app:x:1234:1235:the model:/tmp:/bin/sh' >> /etc/passwd ;;
  *) echo "setup.sh: no build-time step for behaviour $1" >&2; exit 64 ;;
esac
