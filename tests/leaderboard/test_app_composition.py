"""Composition of the served app: ``api`` builds the API alone and imports neither the pages (``leaderboard_web``),
the composed app (``server``), the CLI (``segarena``) nor the execution host (``worker``); ``server.app`` is the one
place that mounts the pages, and it is what every entry point serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from tests.system.test_import_contract import ROOT, all_modules_under, forbidden_paths


def test_api_imports_no_pages_cli_worker_or_composed_app():
    bad = forbidden_paths(all_modules_under("api"), forbidden=("leaderboard_web", "segarena", "worker", "server"))
    assert not bad, "api reaches outside its layer:\n" + "\n".join(" -> ".join(chain) for chain in bad.values())


def test_the_api_app_has_no_pages_and_the_served_app_has_them_in_front(settings):
    from api.app import create_app as create_api
    from server.app import create_app

    with TestClient(create_api(settings)) as api:
        assert api.get("/api/challenges/x/tracks/y/leaderboard").status_code == 404  # the JSON route exists
        assert api.get("/login").status_code == 404 and api.get("/").status_code == 404
        assert api.app.version not in ("", "0+unknown")  # from the installed package's metadata
    from api.leaderboard import routes as json_routes
    from leaderboard_web import pages

    app = create_app(settings)

    def position(router) -> int:  # FastAPI keeps an included router as one node (or, in older versions, its routes)
        return next(i for i, r in enumerate(app.router.routes)
                    if getattr(r, "original_router", None) is router or r in router.routes)

    assert position(pages.router) == 0 < position(json_routes.router)  # the hottest page is matched first
    with TestClient(app) as served:
        assert served.get("/login").status_code == 200 and served.get("/").status_code == 200


def test_every_entry_point_serves_the_composed_app():
    """segarena serve, the image and the tests' process servers start ``server.app:create_app``; nothing starts the
    bare API factory as the platform."""
    starters = [ROOT / "segarena" / "serve.py", ROOT / "tests" / "scaleout_helpers.py",
                ROOT / "tests" / "api" / "test_api_limits.py", ROOT / "bench" / "upload.py"]
    for path in starters:
        text = path.read_text()
        assert "server.app:create_app" in text and "api.app:create_app" not in text, path
    assert "COPY server ./server" in (ROOT / "Dockerfile").read_text()


def test_importing_the_api_app_loads_no_pages():
    code = ("import sys, api.app, api.leaderboard.routes; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('leaderboard_web', 'segarena', 'server', 'worker')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=Path(ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
