"""The challenge report's data route and its offline HTML (real app, seeded SQLite database, the real CLI)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from api.db import session_scope
from api.models import Role, Track
from tests.leaderboard_helpers import add_member

ORG = "sa_report_organizer_token_0123456789ab"
PART = "sa_report_participant_token_0123456789"
PATH = "/api/admin/challenges/demo/tracks/main/report.json"


@pytest.fixture
def seeded(settings):
    from fastapi.testclient import TestClient

    from leaderboard_web.seed import seed_demo
    from tests.leaderboard_helpers import make_app

    app = make_app(settings)
    with session_scope(settings.database_url) as s:
        seed_demo(s, teams=6, cases=27)
        main = s.scalar(select(Track).where(Track.slug == "main"))
        main.testset = "tiny"  # a readable manifest (27 cases) for the test-set section
    add_member(settings.database_url, role=Role.organizer, token=ORG, name="Org")
    add_member(settings.database_url, role=Role.participant, token=PART, name="Someone")
    with TestClient(app) as client:
        yield client


def _get(client, path=PATH, token=ORG, **params):
    return client.get(path, params=params, headers={"Authorization": f"Bearer {token}"} if token else {})


def test_report_data_matches_the_board(seeded):
    res = _get(seeded)
    assert res.status_code == 200, res.text
    rep = res.json()
    board = seeded.get("/api/challenges/demo/tracks/main/leaderboard").json()
    assert rep["scheme"]["name"] == board["scheme"] and rep["n_cases"] == board["n_cases"] == 27
    assert [(r["submission_id"], r["rank"]) for r in rep["ranking"]] == \
        [(r["submission_id"], r["rank"]) for r in board["rows"]]
    for mine, theirs in zip(rep["ranking"], board["rows"]):
        assert mine["dsc"] == theirs["dsc"] and mine["nsd"] == theirs["nsd"]
    ranked = [r for r in rep["ranking"] if r["rank"]]
    st = rep["stability"]
    assert st["n_boot"] == 1000 and len(st["entries"]) == len(ranked)
    assert [e["rank"] for e in st["entries"]] == sorted(r["rank"] for r in ranked)
    assert all(abs(sum(e["rank_freq"]) - 1) < 1e-3 for e in st["entries"])
    for metric in ("dsc", "nsd"):
        sig = rep["significance"][metric]
        assert sig["metric"] == metric and sig["correction"] == "Holm" and len(sig["names"]) == len(ranked)
    # the test set from its manifest
    ts = rep["testset"]
    assert ts["id"] == "synthetic-tiny" and ts["n_cases"] == 27 and sum(v["cases"] for v in ts["modalities"].values()) == 27
    # runtime and memory per entry, failures, submissions over time
    assert len(rep["distributions"]) == len([r for r in rep["ranking"] if not r["excluded"]])
    d = rep["distributions"][0]["runtime_s"]
    assert d["min"] <= d["q1"] <= d["median"] <= d["q3"] <= d["max"]
    f = rep["failures"]
    assert f["cases_recorded"] > 0 and f["cases_failed"] == sum(f["by_status"].values())
    s = rep["submissions"]
    assert s["n_submissions"] == sum(day["total"] for day in s["days"]) and s["n_teams"] >= len(ranked)
    assert sum(t["submissions"] for t in s["per_team"]) == s["n_submissions"] and len(s["per_team"]) == s["n_teams"]
    # deterministic for a seed
    again = _get(seeded).json()
    assert again["stability"] == st


def test_report_route_refuses_clearly(seeded):
    assert _get(seeded, token=None).status_code == 401
    res = _get(seeded, token=PART)
    assert res.status_code == 403 and "organizers" in res.json()["message"]
    res = _get(seeded, path="/api/admin/challenges/demo/tracks/nope/report.json")
    assert res.status_code == 404 and "nope" in res.json()["message"]
    res = _get(seeded, n_boot=100)
    assert res.status_code == 422 and "n_boot" in res.json()["message"]
    assert _get(seeded, alpha=2).status_code == 422


def test_html_is_offline_and_every_plot_has_its_numbers(seeded):
    from segarena.report_html import render_report

    rep = _get(seeded).json()
    html = render_report(rep)
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must not load anything from the network"
    assert "<script" not in html and "@media print" in html
    for fid in ("fig-stability", "fig-significance-dsc", "fig-significance-nsd", "fig-runtime", "fig-memory",
                "fig-failures", "fig-timeline"):
        assert f'id="{fid}"' in html and f'aria-describedby="{fid}-alt"' in html and f'id="{fid}-alt"' in html, fid
        alt = html.split(f'id="{fid}-alt"', 1)[1].split("</details>", 1)[0]
        assert re.search(r"\d\.\d", alt) or re.search(r"<td>\d+</td>", alt), fid
    # the blob plot's numbers: each ranked entry's median rank and interval
    first = rep["stability"]["entries"][0]
    assert f"{first['rank_median']:.1f}" in html.split('id="fig-stability-alt"', 1)[1]
    assert rep["scheme"]["label"].split(" (")[0] in html


def test_cli_writes_the_report(seeded, tmp_path, settings):
    """``segarena admin report main -o report.html`` against the served app over HTTP."""
    from tests.cli_helpers import run_cli
    from tests.servers import ThreadServer

    with ThreadServer(seeded.app, lifespan="off") as srv:
        env = {"SEGARENA_URL": srv.url, "SEGARENA_TOKEN": ORG, "SEGARENA_CHALLENGE": "demo",
               "HOME": str(tmp_path)}
        out = tmp_path / "report.html"
        proc = run_cli("admin", "report", "main", "-o", str(out), "--json", str(tmp_path / "r.json"), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "wrote" in proc.stdout and out.exists() and (tmp_path / "r.json").exists()
        html = out.read_text(encoding="utf-8")
        assert html.count("<svg") >= 7 and "Ranking stability" in html
        proc = run_cli("admin", "report", "main", "-o", str(out), "--bootstrap", "10", env=env)
        assert proc.returncode != 0 and "n_boot" in (proc.stdout + proc.stderr)
        proc = run_cli("admin", "report", "main", "-o", str(out),
                       env={**env, "SEGARENA_TOKEN": PART})
        assert proc.returncode != 0 and "organizers" in (proc.stdout + proc.stderr)


def test_the_renderer_imports_no_server_code():
    """The CLI's client side: rendering the report loads no server package (nor numpy)."""
    import subprocess
    import sys

    code = ("import sys, segarena.report_html, segarena.admin; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'api', 'leaderboard_web', 'worker', 'evaluator', "
            "'server', 'numpy', 'sqlalchemy'}); print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
