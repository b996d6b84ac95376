"""The failed-case rule (evaluator.failures): a failed case is charged DSC 0, NSD 0 and the time limit of THE RUN
it belongs to. The board, the totals stored with the run and the submission page agree, also after an organizer
edits the track's limit (before: the board charged the track's current limit, the stored totals the run's)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from api.db import session_scope
from api.models import CaseResult, CaseStatus, Run, RunState, Shard, ShardState, Submission, SubmissionState, Track
from leaderboard_web.seed import add_submission
from tests.api_helpers import auth
from tests.leaderboard_helpers import arr, at, cases, make_team

CASES = cases(3, mods=("CT",))  # 3DBox_CT_0000 … _0002


def _scored_run(settings, track_id: int, team_id: int) -> int:
    """A submission whose run was created under the track's limit (as an upload creates it); two cases scored ok
    (2 s and 4 s), the third timed out and was recorded by the trusted scorer (record_case), then the run finished
    (stop_run: the stored totals). Returns the submission id."""
    from api.execution.scoring import record_case, stop_run

    with session_scope(settings.database_url) as s:
        track = s.get(Track, track_id)
        sub = Submission(track_id=track_id, team_id=team_id, label="v1", state=SubmissionState.running,
                         archive_path="archives/x.tar.gz", archive_sha256="0" * 64, archive_bytes=1, image_id="sha256:x")
        s.add(sub)
        s.flush()
        run = Run(submission_id=sub.id, attempt=1, state=RunState.running, case_timeout_s=float(track.case_timeout_s),
                  cases_total=3, testset=track.testset)
        s.add(run)
        s.flush()
        shard = Shard(run_id=run.id, index=0, case_ids=[c for c, _, _ in CASES], state=ShardState.done, lease="l")
        s.add(shard)
        s.flush()
        for (cid, mod, size), rt in zip(CASES[:2], (2.0, 4.0)):
            s.add(CaseResult(run_id=run.id, case_id=cid, modality=mod, size_class=size, status=CaseStatus.ok,
                             runtime_s=rt, dsc=0.9, nsd=0.8, scored=True))
        cid, mod, size = CASES[2]
        row = record_case(settings, shard=shard, case=SimpleNamespace(id=cid, modality=mod, size_class=size),
                          meta={"status": "timeout", "runtime_s": 60.3, "reason": "time limit exceeded"},
                          output_key="", worker_name="w1", session=s)
        assert row is not None and row.runtime_s == 60.0  # charged the run's limit
        s.flush()
        assert stop_run(s, settings, run.id)
        return sub.id


def test_board_and_stored_totals_agree_after_the_track_limit_is_edited(client, world, db_settings, monkeypatch):
    from api.leaderboard import cache

    monkeypatch.setattr(cache, "CACHE_TTL_S", 0.0)  # every request revalidates (the track edit is seen at once)
    tid = world.tracks["main"]
    sid = _scored_run(db_settings, tid, world.team_a)
    expected = (2.0 + 4.0 + 60.0) / 3  # 22.0 s: the failed case at the 60 s limit the run was executed under
    path = "/api/challenges/cvpr24/tracks/main/leaderboard"

    def board_row() -> dict:
        rows = client.get(path).json()["rows"]
        return next(r for r in rows if r["submission_id"] == sid)

    def stored() -> float:
        return client.get(f"/api/submissions/{sid}", headers=auth(world.token_a)).json()["runtime_s"]

    assert board_row()["runtime_s"] == pytest.approx(expected, abs=0.01) and stored() == pytest.approx(expected)
    # the organizer raises the track's limit to 10 minutes after the run
    r = client.patch("/api/challenges/cvpr24/tracks/main", json={"case_timeout_s": 600, "total_timeout_s": 7200},
                     headers=auth(world.token_org))
    assert r.status_code == 200, r.text
    row = board_row()
    assert row["runtime_s"] == pytest.approx(expected, abs=0.01), "the board charges the run's limit, not the track's"
    assert row["runtime_s"] == pytest.approx(stored(), abs=0.01)
    assert row["dsc"] == pytest.approx(0.6) and row["CT:runtime_s"] == pytest.approx(expected, abs=0.01)
    # the submission page's per-modality means charge the same limit; the organizers' run page shows it
    page = client.get(f"/submissions/{sid}", headers=auth(world.token_a)).text
    assert "22.00" in page and "202.00" not in page
    with session_scope(db_settings.database_url) as s:
        run_id = s.get(Submission, sid).runs[0].id
    run_page = client.get(f"/admin/runs/{run_id}", headers=auth(world.token_org)).text
    assert "60 s per case" in run_page
    assert "now 600 s per case" in client.get("/challenges/cvpr24/tracks/main").text
    # a run created after the edit (a re-run) is executed under, and charged, the new limit
    with session_scope(db_settings.database_url) as s:
        from evaluator.failures import run_time_limit

        track_limit = s.get(Track, tid).case_timeout_s
        assert run_time_limit(s.get(Submission, sid).runs[0].case_timeout_s, track_limit) == 60.0
        assert run_time_limit(None, track_limit) == 600.0  # only a run without a recorded limit: the track's


def test_entries_run_under_different_limits_are_each_charged_their_own(client, world, db_settings):
    """Two teams fail the same case; one run was made under 60 s, the other under 10 s (the organizer lowered the
    limit in between): each is charged its own limit, in the means and in aggregate-then-rank."""
    url = db_settings.database_url
    with session_scope(url) as s:
        track = s.get(Track, world.tracks["main"])
        track.ranking_scheme = "aggregate_then_rank"
        cs = cases(2, mods=("CT",))
        failed = np.array([False, True])
        a = add_submission(s, track=track, team=make_team(s, "slow limit"), cases=cs, dsc=arr(0.8, 0), nsd=arr(0.8, 0),
                           runtime=arr(1, 0), failed=failed, created_at=at(1))
        track.case_timeout_s = 10
        b = add_submission(s, track=track, team=make_team(s, "fast limit"), cases=cs, dsc=arr(0.8, 0), nsd=arr(0.8, 0),
                           runtime=arr(1, 0), failed=failed, created_at=at(2))
        assert a.runs[-1].case_timeout_s == 60.0 and b.runs[-1].case_timeout_s == 10.0
        ids = {a.id: (1 + 60) / 2, b.id: (1 + 10) / 2}
        stored = {a.id: a.runtime_s, b.id: b.runtime_s}
    rows = {r["submission_id"]: r for r in client.get("/api/challenges/cvpr24/tracks/main/leaderboard").json()["rows"]}
    for sid, mean in ids.items():
        assert rows[sid]["runtime_s"] == pytest.approx(mean) == pytest.approx(stored[sid])
    # equal DSC and NSD; the run charged 10 s is faster on average, so it ranks first
    assert rows[b.id]["rank"] == 1 and rows[a.id]["rank"] == 2


def test_a_limit_edited_mid_run_changes_neither_its_execution_nor_its_charge(client, db_settings):
    """The real path: an upload creates the run under the track's 60 s limit; the organizer raises the limit to
    600 s while it is queued; the worker still gets 60 s in its shard spec, a case that times out is recorded at
    60 s, and the stored totals and the board both charge 60 s."""
    import json

    from sqlalchemy import select

    from api.execution.identity import create_worker
    from api.execution.scoring import score_case
    from api.models import CaseResult
    from tests.api_helpers import seed, submit
    from tests.execution.test_execution_api import _gt, _npz

    db_settings.execution, db_settings.shard_balance = "sharded", False
    w = seed(db_settings.database_url, quota=20, shard_size=27)
    with session_scope(db_settings.database_url) as s:
        _, wt = create_worker(s, db_settings, actor=None, name="w1", queues=["cpu"])
    hello = {"name": "w1", "queues": ["cpu"], "host": "h", "pid": 1, "cpu_model": "CPU", "cores": 2,
             "docker_version": "27.0", "calibration_s": 1.0}
    assert client.post("/api/worker/hello", json=hello, headers=auth(wt)).status_code == 200
    r = submit(client, w.token_a)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    with session_scope(db_settings.database_url) as s:
        assert s.get(Submission, sid).runs[0].case_timeout_s == 60.0  # recorded when the run was created
    r = client.patch("/api/challenges/cvpr24/tracks/main", json={"case_timeout_s": 600, "total_timeout_s": 7200},
                     headers=auth(w.token_org))
    assert r.status_code == 200, r.text
    spec = client.post("/api/worker/claim", json={"name": "w1", "queue": "cpu"}, headers=auth(wt)).json()
    assert spec["caps"]["case_timeout_s"] == 60.0  # executed under the run's limit, not the edited one
    timed_out = spec["cases"][0]["id"]
    for case in spec["cases"]:
        status = "timeout" if case["id"] == timed_out else "ok"
        meta = {"lease": spec["lease"], "status": status, "reason": "time limit" if status != "ok" else "",
                "runtime_s": 60.4 if status != "ok" else 0.5, "exit_code": 137 if status != "ok" else 0}
        files = {"meta": (None, json.dumps(meta))}
        if status == "ok":
            files["output"] = (f"{case['id']}.npz", _npz(_gt(db_settings, case["id"])), "application/octet-stream")
        up = client.post(f"/api/worker/shards/{spec['shard_id']}/cases/{case['id']}", files=files, headers=auth(wt))
        assert up.status_code == 200, up.text
    done = client.post(f"/api/worker/shards/{spec['shard_id']}/finish", json={"lease": spec["lease"], "outcome": "done"},
                       headers=auth(wt))
    assert done.status_code == 200
    with session_scope(db_settings.database_url) as s:
        ids = list(s.scalars(select(CaseResult.id).where(CaseResult.scored.is_(False))))
    for cid in ids:
        score_case(db_settings, cid)
    n = len(spec["cases"])
    expected = ((n - 1) * 0.5 + 60.0) / n
    with session_scope(db_settings.database_url) as s:
        sub = s.get(Submission, sid)
        assert sub.state == SubmissionState.succeeded, sub.reason
        row = next(c for c in sub.runs[0].cases if c.case_id == timed_out)
        assert row.runtime_s == 60.0 and row.dsc == 0.0
        assert sub.runtime_s == pytest.approx(expected)
    board = client.get("/api/challenges/cvpr24/tracks/main/leaderboard").json()
    entry = next(r for r in board["rows"] if r["submission_id"] == sid)
    assert entry["runtime_s"] == pytest.approx(expected, abs=0.01) and entry["dsc"] == pytest.approx((n - 1) / n, abs=1e-3)
