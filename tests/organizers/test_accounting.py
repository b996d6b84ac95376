"""Compute accounting (api/accounting): usage sums equal the case results' sums (analytic values, and the database's
own SUM), GPU-seconds only on GPU queues x GPUs assigned, organizer re-runs reported apart; budgets warn at
70/90/100 % exactly once each through the real worker path (fail-fast runs ending in the scorer), refuse new
submissions past 100 % naming the budget and the usage, and show in the API and the CLI."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from tests.api_helpers import app, auth, client, db_settings, live, seed, submit  # noqa: F401 (fixtures)
from tests.execution.test_execution_api import _claim, _hello, _upload, _worker

from api.db import session_scope
from api.models import AuditEvent, CaseResult, CaseStatus, Run, RunState, Submission, SubmissionState, Track


def _run_with_cases(db_settings, *, team_id: int, member_id: int, track_id: int, cases: list[tuple], queue="cpu",
                    requested_by="upload:1", params=None, sub_id: int | None = None, attempt: int = 1) -> int:
    """A finished run with case results (cpu_s, wall_s, runtime_s); returns the submission id."""
    with session_scope(db_settings.database_url) as s:
        if sub_id is None:
            sub = Submission(track_id=track_id, team_id=team_id, member_id=member_id, state=SubmissionState.succeeded,
                             archive_path="x.tar", archive_sha256="0" * 64, archive_bytes=1,
                             image_id=f"sha256:{track_id}{team_id}{len(cases)}{queue}".ljust(71, "0"))
            s.add(sub)
            s.flush()
            sub_id = sub.id
        run = Run(submission_id=sub_id, attempt=attempt, state=RunState.succeeded, queue=queue,
                  requested_by=requested_by, container_params=params or {}, testset="tiny")
        s.add(run)
        s.flush()
        for i, (cpu, wall, runtime) in enumerate(cases):
            s.add(CaseResult(run_id=run.id, case_id=f"case{i}", status=CaseStatus.ok, cpu_s=cpu, wall_s=wall,
                             runtime_s=runtime))
    return sub_id


@pytest.mark.dialects("sqlite", "postgres")
def test_usage_sums_equal_the_case_results_sums(client, db_settings):
    w = seed(db_settings.database_url)
    main, booster = w.tracks["main"], w.tracks["booster"]
    with session_scope(db_settings.database_url) as s:
        gpu_track = s.get(Track, booster)
        gpu_track.queue, gpu_track.gpus = "gpu", 2
    # team A on main: two runs of its own (one case without wall_s: its runtime counts) and an organizer re-run
    a1 = _run_with_cases(db_settings, team_id=w.team_a, member_id=w.member_a, track_id=main,
                         cases=[(1.5, 2.0, 1.0), (2.25, 3.0, 2.5), (None, None, 1.0)])
    _run_with_cases(db_settings, team_id=w.team_a, member_id=w.member_a, track_id=main, cases=[(0.25, 0.5, 0.4)])
    _run_with_cases(db_settings, team_id=w.team_a, member_id=w.member_a, track_id=main, cases=[(4.0, 5.0, 4.5)],
                    requested_by=f"rerun:{w.organizer}", sub_id=a1, attempt=2)
    # team B on the GPU track: device requests recorded (1 GPU) and a run without them (the track's 2)
    _run_with_cases(db_settings, team_id=w.team_b, member_id=w.member_b, track_id=booster, queue="gpu",
                    cases=[(3.0, 10.0, 9.0)], params={"device_requests": [{"driver": "nvidia", "device_ids": ["1"]}]})
    _run_with_cases(db_settings, team_id=w.team_b, member_id=w.member_b, track_id=booster, queue="gpu",
                    cases=[(1.0, 4.0, 3.0), (1.0, 6.0, 5.0)])

    rows = client.get("/api/challenges/cvpr24/tracks/main/usage", headers=auth(w.token_org)).json()
    [a] = rows
    assert a["team"] == "Team A" and a["cases"] == 4 and a["runs"] == 3
    assert a["cpu_s"] == pytest.approx(1.5 + 2.25 + 0.25) and a["wall_s"] == pytest.approx(2.0 + 3.0 + 1.0 + 0.5)
    assert a["gpu_s"] == 0.0  # a CPU queue
    assert a["rerun_cpu_s"] == pytest.approx(4.0) and a["rerun_wall_s"] == pytest.approx(5.0) and a["rerun_cases"] == 1
    [b] = client.get("/api/challenges/cvpr24/tracks/booster/usage", headers=auth(w.token_org)).json()
    assert b["gpu_s"] == pytest.approx(10.0 * 1 + (4.0 + 6.0) * 2) and b["cpu_s"] == pytest.approx(5.0)
    # the database's own sums over the case results agree (own runs + re-runs = everything)
    with session_scope(db_settings.database_url) as s:
        for track_id, row in ((main, a), (booster, b)):
            q = (select(func.sum(CaseResult.cpu_s), func.sum(func.coalesce(CaseResult.wall_s, CaseResult.runtime_s)),
                        func.count(CaseResult.id))
                 .join(Run, Run.id == CaseResult.run_id).join(Submission, Submission.id == Run.submission_id)
                 .where(Submission.track_id == track_id))
            cpu, wall, n = s.execute(q).one()
            assert row["cpu_s"] + row["rerun_cpu_s"] == pytest.approx(cpu)
            assert row["wall_s"] + row["rerun_wall_s"] == pytest.approx(wall)
            assert row["cases"] + row["rerun_cases"] == n
    # a participant sees their own team only; another team's usage is not theirs to see
    mine = client.get("/api/challenges/cvpr24/tracks/main/usage", headers=auth(w.token_a)).json()
    assert [r["team"] for r in mine] == ["Team A"] and mine[0]["cpu_s"] == a["cpu_s"]
    theirs = client.get("/api/challenges/cvpr24/tracks/main/usage", headers=auth(w.token_b)).json()
    assert [r["team"] for r in theirs] == ["Team B"] and theirs[0]["cpu_s"] == 0.0
    assert client.get("/api/challenges/cvpr24/tracks/main/usage").status_code == 401
    me = client.get("/api/me/usage", headers=auth(w.token_b)).json()
    assert [(r["track"], r["gpu_s"]) for r in me] == [("booster", pytest.approx(30.0))]
    every = client.get("/api/admin/usage", headers=auth(w.token_org)).json()
    assert {(r["track"], r["team"]) for r in every} == {("main", "Team A"), ("booster", "Team B")}
    assert client.get("/api/admin/usage", headers=auth(w.token_a)).status_code == 403


def _fail_fast_run(client, w, wt, cpu_each: float) -> int:
    """Team A submits; the worker claims its first shard and reports 3 crashes: fail-fast ends the run in the
    scorer (stop_run), where the budget is checked."""
    r = submit(client, w.token_a)
    assert r.status_code == 201, r.text
    spec = _claim(client, wt).json()
    for case in spec["cases"][:3]:
        up = _upload(client, wt, spec, case["id"], status="crash", reason="predict.sh exited with code 1",
                     cpu_s=cpu_each, wall_s=1.0)
        assert up.status_code == 200, up.text
    return int(r.json()["id"])


def _warnings(db_settings) -> list[tuple[str, int]]:
    with session_scope(db_settings.database_url) as s:
        return [(e.details["resource"], e.details["level"]) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action == "budget.warning").order_by(AuditEvent.id))]


@pytest.mark.dialects("sqlite", "postgres")
def test_budget_warnings_once_each_and_refusal_past_the_budget(client, live, db_settings, tmp_path):
    db_settings.execution = "sharded"
    db_settings.shard_balance = False
    w = seed(db_settings.database_url, quota=20, shard_size=3, fail_fast_cases=3)
    patch = client.patch("/api/challenges/cvpr24/tracks/main", json={"budget_cpu_s": 10.0}, headers=auth(w.token_org))
    assert patch.status_code == 200 and patch.json()["budget_cpu_s"] == 10.0, patch.text
    wt = _worker(db_settings, "w1")
    assert _hello(client, wt, "w1").status_code == 200

    first = _fail_fast_run(client, w, wt, 2.5)  # 7.5 of 10 CPU-s: 75 %
    with session_scope(db_settings.database_url) as s:
        assert s.get(Submission, first).state == SubmissionState.failed
    assert _warnings(db_settings) == [("cpu", 70)]
    _fail_fast_run(client, w, wt, 2.5)  # 15 of 10: 150 %, past 90 and 100 at once
    assert _warnings(db_settings) == [("cpu", 70), ("cpu", 90), ("cpu", 100)]
    # checking again (another run ending) records nothing new: each level exactly once
    from api.accounting.service import record_budget_warnings

    with session_scope(db_settings.database_url) as s:
        run = s.scalars(select(Run).order_by(Run.id.desc())).first()
        assert record_budget_warnings(s, run, settings=db_settings) == []
    assert _warnings(db_settings) == [("cpu", 70), ("cpu", 90), ("cpu", 100)]
    with session_scope(db_settings.database_url) as s:
        last = s.scalars(select(AuditEvent).where(AuditEvent.action == "budget.warning")
                         .order_by(AuditEvent.id.desc())).first()
        assert last.target_type == "run" and last.details["used_s"] == pytest.approx(15.0)
        assert "new submissions to this track are refused" in last.details["reason"]

    # past 100 %: a new submission and a new upload session are refused, naming the budget and the usage
    refused = submit(client, w.token_a)
    assert refused.status_code == 403 and refused.json()["code"] == "budget_exhausted", refused.text
    msg = refused.json()["message"]
    assert "15.0 of its budget of 10.0 CPU-seconds (150.0 %)" in msg and "budget_cpu_s" in msg, msg
    up = client.post("/api/challenges/cvpr24/tracks/main/uploads", json={"total_bytes": 1000}, headers=auth(w.token_a))
    assert up.status_code == 403 and up.json()["code"] == "budget_exhausted"
    assert submit(client, w.token_b).status_code == 201  # the budget is per team
    assert submit(client, w.token_a, track="booster").status_code == 201  # and per track

    # the team sees it: API and CLI
    [mine] = [r for r in client.get("/api/me/usage", headers=auth(w.token_a)).json() if r["track"] == "main"]
    assert mine["cpu_percent"] == 150.0 and mine["exhausted"] == ["cpu"]
    assert [x["level"] for x in mine["warnings"]] == [70, 90, 100]
    from tests.cli_helpers import run_cli

    env = {"SEGARENA_URL": live.url, "SEGARENA_TOKEN": w.token_a, "SEGARENA_CHALLENGE": "cvpr24",
           "SEGARENA_CONFIG": str(tmp_path / "none.toml"), "SEGARENA_CACHE_DIR": str(tmp_path / "cache")}
    status = run_cli("status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "cvpr24/main" in status.stdout and "USED UP: new submissions refused" in status.stdout, status.stdout
    who = run_cli("whoami", env=env)
    assert '"budget_cpu_s": 10.0' in who.stdout and '"cpu_percent": 150.0' in who.stdout, who.stdout
    org = run_cli("admin", "usage", "main", env={**env, "SEGARENA_TOKEN": w.token_org})
    assert org.returncode == 0 and "Team A" in org.stdout and "cpu 100 %" in org.stdout, org.stdout

    # an organizer raises the budget: the team may submit again, and the new levels warn again once
    client.patch("/api/challenges/cvpr24/tracks/main", json={"budget_cpu_s": 100.0}, headers=auth(w.token_org))
    assert submit(client, w.token_a).status_code == 201
    cleared = client.patch("/api/challenges/cvpr24/tracks/main", json={"budget_cpu_s": None}, headers=auth(w.token_org))
    assert cleared.status_code == 200 and cleared.json()["budget_cpu_s"] is None


def test_budget_setting_is_validated(client, db_settings):
    w = seed(db_settings.database_url)
    for bad in (0, -5, "lots"):
        r = client.patch("/api/challenges/cvpr24/tracks/main", json={"budget_gpu_s": bad}, headers=auth(w.token_org))
        assert r.status_code == 422 and "budget_gpu_s" in r.text, r.text


def test_usage_pages_for_organizers_and_the_team(client, db_settings):
    w = seed(db_settings.database_url)
    with session_scope(db_settings.database_url) as s:
        s.get(Track, w.tracks["main"]).budget_cpu_s = 8.0
    _run_with_cases(db_settings, team_id=w.team_a, member_id=w.member_a, track_id=w.tracks["main"],
                    cases=[(1.5, 2.0, 1.0), (0.5, 1.0, 1.0)])
    page = client.get("/admin/challenges/cvpr24/usage", headers=auth(w.token_org))
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="usage-main"' in html and "Team A" in html and "<td class=\"num\">2.0</td>" in html
    assert "25.0 %" in html and "Budget per team: CPU 8.0 s" in html  # 2.0 of 8.0 CPU-seconds
    assert client.get("/admin/challenges/cvpr24/usage", headers=auth(w.token_a)).status_code == 403
    assert client.get("/admin/challenges/nope/usage", headers=auth(w.token_org)).status_code == 404
    assert 'id="usage-link"' in client.get("/challenges/cvpr24", headers=auth(w.token_org)).text
    # the team's own page shows its compute and budget share
    me = client.get("/me", headers=auth(w.token_a))
    assert me.status_code == 200 and 'id="usage"' in me.text and "25.0 % of 8.0 s" in me.text, me.text[-3000:]
    other = client.get("/me", headers=auth(w.token_b)).text  # team B ran nothing; it sees the budget, 0 used
    assert "0.0 % of 8.0 s" in other
