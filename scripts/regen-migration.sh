#!/usr/bin/env bash
# Regenerates the initial Alembic migration from api/models.py (pre-release: one migration).
# After the first release, add new revisions with `alembic revision --autogenerate` instead.
source "$(dirname "$0")/lib.sh"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
rm -f "$ROOT"/api/migrations/versions/*.py
"$PY" - "$tmp" <<'PY'
import sys
from alembic import command
from api.db import alembic_config
cfg = alembic_config(f"sqlite:///{sys.argv[1]}/gen.db")
command.revision(cfg, message="initial schema", autogenerate=True, rev_id="20261127_0001")
PY
ls "$ROOT"/api/migrations/versions/
