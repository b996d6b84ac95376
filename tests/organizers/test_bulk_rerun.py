"""Bulk re-run of a track (api/admin/bulk.py): the dry run lists exactly what the real run queues, skips carry
their reasons, the confirmation guards against a changed plan, the new attempts interleave fairly with other
teams' runs at the shard claim, and the CLI asks before queueing. Real app over HTTP, real embedded broker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from tests.api_helpers import add_member, app, auth, client, db_settings, finish_run, live, seed, submit  # noqa: F401
from tests.execution.test_execution_api import _claim, _hello, _worker

from api.db import session_scope
from api.models import AuditEvent, Run, RunState, Shard, Submission, utcnow
from tests import factories


def _sub(client, token) -> int:
    r = submit(client, token)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _done(db_settings, sub_id: int, dsc: float, state: str = "succeeded") -> None:
    finish_run(db_settings.database_url, sub_id, state=state, dsc=dsc, nsd=dsc, cases=[{"case_id": "c1"}])


def _team_c(db_settings) -> tuple[int, str]:
    with session_scope(db_settings.database_url) as s:
        team = factories.team(s, "Team C", affiliation="C univ")
        _, token = add_member(s, team=team, name="carl")
        return team.id, token


def _runs(db_settings) -> list[tuple[int, int]]:
    with session_scope(db_settings.database_url) as s:
        return [(r.submission_id, r.attempt) for r in s.scalars(select(Run).order_by(Run.id))]


def _rerun(client, token, which: str, dry_run: bool, **extra):
    return client.post("/api/challenges/cvpr24/tracks/main/rerun", json={"which": which, "dry_run": dry_run, **extra},
                       headers=auth(token))


@pytest.mark.dialects("sqlite", "postgres")
def test_dry_run_lists_exactly_what_the_real_run_queues(client, db_settings):
    w = seed(db_settings.database_url, quota=20)
    team_c, token_c = _team_c(db_settings)
    a1, a2 = _sub(client, w.token_a), _sub(client, w.token_a)
    _done(db_settings, a1, 0.7)
    _done(db_settings, a2, 0.5)  # A: latest a2, best a1
    b1 = _sub(client, w.token_b)
    _done(db_settings, b1, 0.6)
    b2 = _sub(client, w.token_b)  # B's latest is still queued: skipped
    c1 = _sub(client, token_c)
    _done(db_settings, c1, 0.0, state="failed")
    with session_scope(db_settings.database_url) as s:  # C's latest lost its archive to retention: skipped
        s.get(Submission, c1).archive_deleted_at = utcnow() - timedelta(hours=1)
    before = _runs(db_settings)

    dry = _rerun(client, w.token_org, "latest", True)
    assert dry.status_code == 200, dry.text
    plan = dry.json()
    assert [p["submission_id"] for p in plan["queued"]] == [a2]
    skipped = {p["submission_id"]: p["reason"] for p in plan["skipped"]}
    assert set(skipped) == {b2, c1}
    assert "still queued" in skipped[b2] and "archive was deleted" in skipped[c1]
    assert _runs(db_settings) == before, "a dry run queues nothing"

    # a confirmation that is not the plan is refused and queues nothing
    bad = _rerun(client, w.token_org, "latest", False, confirm=[a1])
    assert bad.status_code == 409 and bad.json()["code"] == "plan_changed", bad.text
    assert _runs(db_settings) == before

    real = _rerun(client, w.token_org, "latest", False, confirm=[p["submission_id"] for p in plan["queued"]])
    assert real.status_code == 200, real.text
    done = real.json()
    assert [p["submission_id"] for p in done["queued"]] == [p["submission_id"] for p in plan["queued"]]
    assert {p["submission_id"] for p in done["skipped"]} == set(skipped)
    new = _runs(db_settings)[len(before):]
    assert new == [(a2, 2)], "exactly the listed submissions got a new attempt"
    assert done["queued"][0]["new_attempt"] == 2 and done["queued"][0]["run_id"]
    with session_scope(db_settings.database_url) as s:
        run = s.scalar(select(Run).where(Run.submission_id == a2, Run.attempt == 2))
        assert run.state == RunState.queued and run.requested_by == f"rerun:{w.organizer}"
        assert s.scalar(select(func.count()).select_from(Shard).where(Shard.run_id == run.id)) > 0  # sent
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "track.rerun").order_by(AuditEvent.id)).all()
        assert [(e.details["dry_run"], e.details["queued"]) for e in events] == [(True, [a2]), (False, [a2])]
        assert {d["submission_id"] for d in events[-1].details["skipped"]} == {b2, c1}
        assert s.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "submission.rerun", AuditEvent.target_id == str(a2))) == 1

    # best: each team's best succeeded submission; a2's new attempt is active now, a1 is A's best
    best = _rerun(client, w.token_org, "best", True).json()
    assert sorted(p["submission_id"] for p in best["queued"]) == sorted([a1, b1])
    # participants may not
    assert _rerun(client, w.token_a, "latest", True).status_code == 403
    assert client.post("/api/challenges/cvpr24/tracks/main/rerun", json={"which": "all"},
                       headers=auth(w.token_org)).status_code == 422


def test_new_attempts_interleave_fairly_with_another_teams_run(client, db_settings):
    db_settings.execution = "sharded"
    db_settings.shard_balance = False
    w = seed(db_settings.database_url, quota=20, shard_size=9)  # tiny: 27 cases, 3 shards per run
    team_c, token_c = _team_c(db_settings)
    wt = _worker(db_settings, "w1")
    assert _hello(client, wt, "w1").status_code == 200
    a1, c1 = _sub(client, w.token_a), _sub(client, token_c)
    _done(db_settings, a1, 0.7)
    _done(db_settings, c1, 0.6)
    real = _rerun(client, w.token_org, "latest", False)  # A's and C's: 6 shards queued first
    assert sorted(p["submission_id"] for p in real.json()["queued"]) == sorted([a1, c1]), real.text
    _sub(client, w.token_b)  # then team B's new run: 3 shards
    with session_scope(db_settings.database_url) as s:
        team_of = {sh.id: s.get(Submission, s.get(Run, sh.run_id).submission_id).team_id
                   for sh in s.scalars(select(Shard))}
    order = []
    for _ in range(9):
        r = _claim(client, wt)
        assert r.status_code == 200, r.text
        order.append(team_of[r.json()["shard_id"]])
    # B's run is not starved behind the bulk re-run: one shard per team in turn (FIFO would be A A A C C C B B B)
    assert order[:3] in ([w.team_a, team_c, w.team_b], [team_c, w.team_a, w.team_b]), order
    assert order == order[:3] * 3, order


def test_cli_rerun_track_lists_asks_and_queues(client, live, db_settings, monkeypatch, tmp_path):
    import io
    import sys

    from tests.cli_helpers import run_cli

    w = seed(db_settings.database_url, quota=20)
    a1, b1 = _sub(client, w.token_a), _sub(client, w.token_b)
    _done(db_settings, a1, 0.7)
    _done(db_settings, b1, 0.6)
    before = _runs(db_settings)
    env = {"SEGARENA_URL": live.url, "SEGARENA_TOKEN": w.token_org, "SEGARENA_CHALLENGE": "cvpr24",
           "SEGARENA_CONFIG": str(tmp_path / "none.toml"), "SEGARENA_CACHE_DIR": str(tmp_path / "cache")}
    dry = run_cli("admin", "rerun-track", "main", "--which", "latest", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "2 submission(s) to re-run" in dry.stdout and "dry run: nothing queued" in dry.stdout
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))  # the operator answers no
    no = run_cli("admin", "rerun-track", "main", env=env)
    assert no.returncode == 1 and "Queue 2 new attempt(s) on track main?" in no.stdout + no.stderr, no.stdout
    assert _runs(db_settings) == before
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    yes = run_cli("admin", "rerun-track", "main", env=env)
    assert yes.returncode == 0 and "queued 2 new attempt(s)" in yes.stdout, yes.stdout + yes.stderr
    assert sorted(_runs(db_settings)[len(before):]) == sorted([(a1, 2), (b1, 2)])
    again = run_cli("admin", "rerun-track", "main", "--yes", env=env)  # both have an active attempt now
    assert again.returncode == 0 and "nothing to re-run" in again.stdout and "still queued" in again.stdout
