"""The per-track feedback policy (full | summary | none): what the owning team sees of its runs on the
hidden test set, through every path — API detail, list, results, logs, the submission page and the CLI.
Organizers always see everything. On f13a824 every participant view was ``full``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, UTC

import pytest
from fastapi.testclient import TestClient

from api.db import session_scope
from api.models import Feedback, Submission, Track, Visibility
from api.submissions import feedback as fb
from tests.api_helpers import auth, finish_run, seed, submit
from tests.cli_helpers import ThreadServer, run_cli

LEAKY = "case 3DBox_CT_0002: no output file outputs/3DBox_CT_0002.npz (found: LEAKED-test-image-bytes.npz) (after 2.50 s)"
OK_CASE = {"case_id": "2DBox_US_0001", "modality": "US", "dsc": 0.9137, "nsd": 0.9311, "runtime_s": 1.234,
           "stdout_tail": "SECRET-STDOUT of the container", "per_class": {"1": {"dsc": 0.9137, "nsd": 0.9311}},
           "peak_memory_bytes": 123456789}
NO_OUTPUT = {"case_id": "3DBox_CT_0002", "modality": "CT", "status": "no_output", "dsc": 0, "nsd": 0, "runtime_s": 60.0,
             "reason": LEAKY, "stderr_tail": "SECRET-STDERR printed by predict.sh", "exit_code": 0}
CRASH = {"case_id": "2DBox_MR_0003", "modality": "MR", "status": "crash", "dsc": 0, "nsd": 0, "runtime_s": 60.0,
         "reason": "case 2DBox_MR_0003: predict.sh exited with code 3; see its stderr (after 0.40 s)",
         "stderr_tail": "SECRET-STDERR Traceback", "exit_code": 3}
SUMMARY = {"n": 2, "dsc": 0.4568, "nsd": 0.4655, "runtime_s": 30.6, "status_counts": {"ok": 1, "no_output": 1},
           "ok": 1, "failed": 1, "by_modality": {"US": {"n": 1, "dsc": 0.9137, "nsd": 0.9311, "runtime_s": 1.234},
                                                 "CT": {"n": 1, "dsc": 0.0, "nsd": 0.0, "runtime_s": 60.0}},
           "per_case_debug": {"3DBox_CT_0002": "SECRET-aggregate"}, "run_id": 1, "attempt": 1}
SECRETS = ("SECRET", "LEAKED")


def _world(settings, policy: str, *, published: bool = True):
    """Team A's two submissions on track main (policy ``policy``): one succeeded, one failed with a reason
    that quotes the container's output; the track is live (published) or frozen until tomorrow."""
    from tests.api_helpers import shared_app

    app = shared_app(settings, migrate=True)
    w = seed(settings.database_url)
    with session_scope(settings.database_url) as s:
        track = s.get(Track, w.tracks["main"])
        track.feedback = Feedback(policy)
        if not published:
            track.visibility, track.frozen_at = Visibility.frozen, datetime.now(UTC) + timedelta(days=1)
    with TestClient(app) as c:
        good = submit(c, w.token_a, label="good").json()["id"]
        bad = submit(c, w.token_a, label="bad").json()["id"]
    finish_run(settings.database_url, good, state="succeeded", cases=[OK_CASE, NO_OUTPUT], dsc=0.4568, nsd=0.4655,
               reason="1 of 2 cases failed", log_tail=LEAKY + "\nSECRET-RUNLOG")
    finish_run(settings.database_url, bad, state="failed", cases=[NO_OUTPUT, CRASH], dsc=0.0, nsd=0.0,
               reason=f"every case failed; first: {LEAKY}", log_tail=LEAKY)
    with session_scope(settings.database_url) as s:
        s.get(Submission, good).aggregates = dict(SUMMARY)
        s.get(Submission, good).runtime_s = 30.6
    return app, w, good, bad


def _views(c: TestClient, token: str, good: int, bad: int) -> dict[str, dict]:
    h = auth(token)
    out = {}
    for name, sid in (("good", good), ("bad", bad)):
        for path in ("", "/results", "/logs"):
            r = c.get(f"/api/submissions/{sid}{path}", headers=h)
            assert r.status_code == 200, (path, r.text)
            out[f"{name}{path}"] = r.json()
    listed = c.get("/api/submissions", headers=h)
    assert listed.status_code == 200
    out["list"] = {s["id"]: s for s in listed.json()}
    return out


def _assert_full(v: dict, good: int, bad: int) -> None:
    assert v["good"]["feedback"] == "full" and v["good"]["feedback_note"] == ""
    rows = {c["case"]: c for c in v["good/results"]["cases"]}
    assert rows["2DBox_US_0001"]["dsc"] == 0.9137 and rows["2DBox_US_0001"]["runtime_s"] == 1.234
    assert rows["2DBox_US_0001"]["per_class"] and rows["3DBox_CT_0002"]["reason"] == LEAKY
    assert "SECRET-RUNLOG" in v["good/logs"]["log_tail"]
    assert {c["case"]: c["stdout_tail"] for c in v["good/logs"]["cases"]}["2DBox_US_0001"].startswith("SECRET-STDOUT")
    assert v["bad"]["reason"] == f"every case failed; first: {LEAKY}" == v["list"][bad]["reason"]
    assert v["good"]["aggregates"]["per_case_debug"]


@pytest.mark.parametrize("policy", ["full", "summary", "none"])
def test_organizers_always_see_everything(settings, policy):
    app, w, good, bad = _world(settings, policy, published=False)
    with TestClient(app) as c:
        _assert_full(_views(c, w.token_org, good, bad), good, bad)
        admin = c.get(f"/api/admin/submissions/{bad}", headers=auth(w.token_org)).json()
        assert admin["reason"] == f"every case failed; first: {LEAKY}" and admin["feedback"] == "full"
        page = c.get(f"/submissions/{bad}", headers=auth(w.token_org)).text
        assert "LEAKED-test-image-bytes" in page


def test_full_shows_the_team_everything(settings):
    app, w, good, bad = _world(settings, "full")
    with TestClient(app) as c:
        _assert_full(_views(c, w.token_a, good, bad), good, bad)


def test_summary_shows_scores_and_statuses_but_no_logs_or_per_case_scores(settings):
    app, w, good, bad = _world(settings, "summary")
    with TestClient(app) as c:
        v = _views(c, w.token_a, good, bad)
        page_good = c.get(f"/submissions/{good}", headers=auth(w.token_a)).text
        page_bad = c.get(f"/submissions/{bad}", headers=auth(w.token_a)).text
    for key, body in v.items():
        text = json.dumps(body)
        assert not any(s in text for s in SECRETS), (key, text)
    assert not any(s in page_bad or s in page_good for s in SECRETS)
    # overall and per-modality scores, progress by status
    sub = v["good"]
    assert sub["feedback"] == "summary" and sub["dsc"] == 0.4568 and sub["runtime_s"] == 30.6
    assert sub["aggregates"]["by_modality"]["US"]["dsc"] == 0.9137 and "per_case_debug" not in sub["aggregates"]
    assert sub["progress"]["by_status"] == {"ok": 1, "no_output": 1}
    assert "feedback: summary" in sub["feedback_note"] and "segarena check" in sub["feedback_note"]
    # per case: status and the cap that stopped it, no scores
    rows = {c["case"]: c for c in v["bad/results"]["cases"]}
    assert rows["3DBox_CT_0002"]["status"] == "no_output"
    assert rows["3DBox_CT_0002"]["reason"] == "no output file was written for this case"
    assert rows["2DBox_MR_0003"]["reason"] == "predict.sh exited with code 3" and rows["2DBox_MR_0003"]["exit_code"] == 3
    good_rows = v["good/results"]["cases"]
    assert all(c["dsc"] is None and c["nsd"] is None and c["runtime_s"] is None and c["per_class"] == {}
               for c in good_rows), good_rows
    assert v["good/results"]["dsc"] == 0.4568 and "per-case scores" in v["good/results"]["feedback_note"]
    # no log content; the failure reason says the cap, not what the container wrote
    logs = v["bad/logs"]
    assert logs["log_tail"] == "" and all(c["stdout_tail"] == c["stderr_tail"] == "" for c in logs["cases"])
    assert {c["case"]: c["status"] for c in logs["cases"]} == {"3DBox_CT_0002": "no_output", "2DBox_MR_0003": "crash"}
    assert logs["feedback_note"].startswith("logs are not shown on this track (feedback: summary)")
    expected = "every case failed; first: case 3DBox_CT_0002: no output file was written for this case"
    assert v["bad"]["reason"] == expected == v["list"][bad]["reason"] == logs["reason"]
    assert expected in page_bad and 'id="dsc">0.457' in page_good.replace("0.4568", "0.457")


@pytest.mark.parametrize("published", [False, True])
def test_none_shows_the_state_only_until_the_board_is_published(settings, published):
    app, w, good, bad = _world(settings, "none", published=published)
    with TestClient(app) as c:
        v = _views(c, w.token_a, good, bad)
        page_good = c.get(f"/submissions/{good}", headers=auth(w.token_a)).text
        page_bad = c.get(f"/submissions/{bad}", headers=auth(w.token_a)).text
    for key, body in v.items():
        text = json.dumps(body)
        assert not any(s in text for s in SECRETS), (key, text)
    assert not any(s in page_bad or s in page_good for s in SECRETS)
    if published:  # the board shows everyone's scores now: the team gets the summary
        assert v["good"]["feedback"] == "summary" and v["good"]["dsc"] == 0.4568
        assert [c["status"] for c in v["bad/results"]["cases"]] == ["crash", "no_output"]
        return
    assert v["good"]["state"] == "succeeded" and v["bad"]["state"] == "failed"
    for sub in (v["good"], v["bad"], v["list"][good], v["list"][bad]):
        assert sub["feedback"] == "none" and sub["dsc"] is None and sub["nsd"] is None and sub["runtime_s"] is None
        assert sub["aggregates"] == {} and sub["progress"]["by_status"] == {}
        assert "until its leaderboard is published (feedback: none)" in sub["feedback_note"]
    assert "3DBox" not in v["bad"]["reason"] and "segarena check" in v["bad"]["reason"]
    assert v["good"]["reason"] != "1 of 2 cases failed"
    for key in ("good/results", "bad/results", "good/logs", "bad/logs"):
        assert v[key]["cases"] == [], key
    assert v["good/results"]["dsc"] is None and v["good/results"]["aggregates"] == {}
    assert v["bad/logs"]["log_tail"] == ""
    assert 'id="dsc"' not in page_good and "feedback: none" in page_good


def test_a_reason_from_before_any_case_is_shown_as_is(settings):
    """An image refused while loading never saw the test set: its reason helps and leaks nothing."""
    app, w, good, bad = _world(settings, "none", published=False)
    with TestClient(app) as c:
        sid = submit(c, w.token_a, label="broken").json()["id"]
        finish_run(settings.database_url, sid, state="failed", reason="the image could not be loaded: no /bin/sh")
        got = c.get(f"/api/submissions/{sid}", headers=auth(w.token_a)).json()
    assert got["reason"] == "the image could not be loaded: no /bin/sh"


def test_level_and_published(settings):
    track = Track(feedback=Feedback.none, visibility=Visibility.public, frozen_at=None, closes_at=None)
    assert fb.board_published(track) and fb.level(track, None) == Feedback.summary
    for vis in (Visibility.hidden, Visibility.frozen):
        assert fb.level(Track(feedback=Feedback.none, visibility=vis, frozen_at=None, closes_at=None), None) == Feedback.none
    frozen_public = Track(feedback=Feedback.none, visibility=Visibility.public, frozen_at=datetime.now(UTC))
    assert not fb.board_published(frozen_public) and fb.level(frozen_public, None) == Feedback.none
    assert fb.level(Track(feedback=Feedback.summary, visibility=Visibility.public), None) == Feedback.summary


def test_cli_prints_a_one_line_note_instead_of_what_is_withheld(settings, tmp_path):
    app, w, good, bad = _world(settings, "summary")
    with session_scope(settings.database_url) as s:
        s.get(Track, w.tracks["booster"]).feedback = Feedback.none
        s.get(Track, w.tracks["booster"]).visibility = Visibility.frozen
        s.get(Track, w.tracks["booster"]).frozen_at = datetime.now(UTC) + timedelta(days=1)
    with TestClient(app) as c:
        hidden = submit(c, w.token_a, track="booster").json()["id"]
    finish_run(settings.database_url, hidden, state="succeeded", cases=[OK_CASE], dsc=0.9137, nsd=0.9311,
               log_tail="SECRET-RUNLOG")
    with ThreadServer(app) as server:
        base = {"SEGARENA_URL": server.url, "SEGARENA_CHALLENGE": "cvpr24",
                "SEGARENA_CONFIG": str(tmp_path / "none.toml"), "SEGARENA_CACHE_DIR": str(tmp_path / "cache")}
        team = {**base, "SEGARENA_TOKEN": w.token_a}
        org = {**base, "SEGARENA_TOKEN": w.token_org}
        logs = run_cli("logs", str(bad), env=team)
        results = run_cli("results", str(good), env=team)
        status = run_cli("status", str(good), env=team)
        none_status = run_cli("status", str(hidden), env=team)
        none_logs = run_cli("logs", str(hidden), env=team)
        none_results = run_cli("results", str(hidden), env=team)
        org_logs = run_cli("logs", str(bad), env=org)
    for proc in (logs, results, status, none_status, none_logs, none_results, org_logs):
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    for proc in (logs, results, status, none_status, none_logs, none_results):
        assert not any(s in proc.stdout for s in SECRETS), proc.stdout
    flat = lambda p: " ".join(p.stdout.split())  # noqa: E731
    assert ("note: logs are not shown on this track (feedback: summary); debug with `segarena check` on the public "
            "sample cases") in logs.stdout
    assert "3DBox_CT_0002 [no_output] no output file was written for this case" in flat(logs)
    assert "note: per-case scores are not shown on this track (feedback: summary)" in results.stdout
    assert "0.9137" in results.stdout  # the per-modality table (US: one case) — no per-case DSC column values
    assert "DSC=0.4568" in status.stdout and "feedback: summary" in status.stdout
    assert f"submission {hidden}: succeeded" in none_status.stdout and "DSC=" not in none_status.stdout
    for proc in (none_status, none_logs, none_results):
        assert "(feedback: none)" in proc.stdout and "segarena check" in proc.stdout, proc.stdout
    assert "LEAKED-test-image-bytes" in org_logs.stdout and "SECRET-STDERR" in org_logs.stdout


FIX = ("write /workspace/outputs/<input file name> for the input; make predict.sh exit 0; run `segarena check` on "
       "your image archive: it runs the image on public sample cases under this track's limits and shows its logs; "
       "then submit again (1 remaining cases were not run)")
LEAKY_BODY = "no output file outputs/3DBox_CT_0002.npz (found: LEAKED-test-image-bytes.npz)"


@pytest.mark.parametrize("reason,expected", [
    # the worker's fail-fast reason quotes case reasons without their "case <id>: " prefix
    (f"stopped after the first 2 cases failed: {LEAKY_BODY} | predict.sh exited with code 3; see its stderr — {FIX}",
     f"stopped after the first 2 cases failed: no output file was written for this case | predict.sh exited with "
     f"code 3 — {FIX}"),
    # cut short by the reason bound, with a fake separator and fix inside the container's text
    ("stopped after the first 2 cases failed: no output file (found: x — LEAKED (1 remaining cases were not run)"
     ".npz)… (900 chars cut)",
     "stopped after the first 2 cases failed: no output file was written for this case | predict.sh exited with "
     "code 3 — debug with `segarena check` on the public sample cases"),
    # a case reason quoted in some other way
    (f"the run failed: {LEAKY_BODY}", "the run failed: no output file was written for this case"),
    ("2 of 2 cases failed", "2 of 2 cases failed"),
])
def test_summary_rewrites_every_reason_that_quotes_a_case(settings, reason, expected):
    app, w, good, bad = _world(settings, "summary")
    with session_scope(settings.database_url) as s:
        s.get(Submission, bad).reason = reason
    with TestClient(app) as c:
        got = c.get(f"/api/submissions/{bad}", headers=auth(w.token_a)).json()["reason"]
        org = c.get(f"/api/submissions/{bad}", headers=auth(w.token_org)).json()["reason"]
    assert got == expected and "LEAKED" not in got
    assert org == reason


@pytest.mark.parametrize("policy", ["summary", "full"])
def test_reproducibility_board_shows_per_case_scores_only_on_full_tracks(settings, policy):
    """A reproduction of a team's main-track run must not become a public per-case score sheet of it."""
    import numpy as np

    from api import leaderboard as lb
    from api.models import TrackKind
    from leaderboard_web.seed import add_submission
    from api.models import Role
    from tests.leaderboard_helpers import add_member, at, cases, make_app, make_challenge, make_team

    app = make_app(settings)
    cs = cases(6)
    d = np.linspace(0.6, 0.9, 6)
    with session_scope(settings.database_url) as s:
        trs = make_challenge(s, tracks={"main": {"feedback": Feedback(policy)},
                                        "repro": {"kind": TrackKind.reproducibility, "feedback": Feedback(policy)}})
        orig = add_submission(s, track=trs["main"], team=make_team(s, "winner"), cases=cs, dsc=d, nsd=d,
                              runtime=np.ones(6), label="orig", created_at=at(0)).id
        add_submission(s, track=trs["repro"], team=make_team(s, "again"), cases=cs, dsc=d, nsd=d, runtime=np.ones(6),
                       reproduces_id=orig, created_at=at(1))
    add_member(settings.database_url, role=Role.organizer, token="sa_feedback_org_token")
    lb.invalidate()
    with TestClient(app) as c:
        pub = c.get("/api/challenges/c1/tracks/repro/leaderboard").json()["rows"][0]
        page = c.get("/challenges/c1/tracks/repro").text
        org = c.get("/api/challenges/c1/tracks/repro/leaderboard",
                    headers={"Authorization": "Bearer sa_feedback_org_token"}).json()["rows"][0]
    assert pub["verdict"] == "reproduced" and pub["delta_dsc"] == 0.0  # the verdict and mean deltas stay public
    assert len(org["details"]["cases"]) == 6
    if policy == "full":
        assert len(pub["details"]["cases"]) == 6 and cs[0][0] in page
    else:
        assert pub["details"]["cases"] == [] and cs[0][0] not in page
