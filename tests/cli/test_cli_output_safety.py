"""Terminal escape sequences from participants (labels, team names, reasons, container logs) never reach a
terminal through the CLI: the real ``segarena`` command against a real API (in-process uvicorn)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, update

from api.db import session_scope
from api.models import CaseResult, Feedback, Role, Run, Submission, Track
from leaderboard_web.seed import add_submission
from tests.cli_helpers import ThreadServer, run_cli
from tests.leaderboard_helpers import add_member, at, cases, make_challenge, make_team

ORG = "sa_cli_output_organizer_token"
PART = "sa_cli_output_participant_token"
EVIL = "\x1b]0;pwned\x07\x1b[2J"  # retitle the terminal, clear the screen
NASTY = EVIL + "\x9b2J\x1b[31m\x07\x08\r\x00"  # 8-bit CSI, colour, bell, backspace, CR, NUL


@pytest.fixture
def stage(settings, tmp_path):
    from tests.api_helpers import shared_app

    settings.bootstrap_organizer_token = ORG
    app = shared_app(settings, migrate=True)
    url = settings.database_url
    cs = cases(4)
    with session_scope(url) as s:
        tr = make_challenge(s, slug="evil")["main"]
        tr.feedback = Feedback.full  # the participant may read its logs
        team = make_team(s, NASTY + "team-x")
        sub = add_submission(s, track=tr, team=team, cases=cs, dsc=np.array([0.9, 0.8, 0.7, 0.6]),
                             nsd=np.array([0.9, 0.8, 0.7, 0.6]), runtime=np.array([1.0, 2, 3, 4]),
                             label=NASTY + "model-x", created_at=at(1))
        sid, team_id = sub.id, team.id
        run_id = s.scalar(select(Run.id).where(Run.submission_id == sid))
        s.execute(update(CaseResult).where(CaseResult.run_id == run_id).values(
            stdout_tail=NASTY + "stdout-x\n", stderr_tail=NASTY + "stderr-x\n", reason=NASTY + "reason-x"))
        s.execute(update(Run).where(Run.id == run_id).values(log_tail=NASTY + "runlog-x\n"))
        s.execute(update(Submission).where(Submission.id == sid).values(reason=NASTY + "why-x"))
        assert s.scalar(select(Track.id).where(Track.slug == "main"))
    add_member(url, role=Role.participant, token=PART, team_id=team_id, name="p")
    with ThreadServer(app) as srv:
        base = {"SEGARENA_URL": srv.url, "SEGARENA_CHALLENGE": "evil", "SEGARENA_CONFIG": str(tmp_path / "none.toml"),
                "SEGARENA_CACHE_DIR": str(tmp_path / "cache")}
        yield srv, base, sid


def _assert_clean(proc, *expected: str, escaped_json: bool = False) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stream in (proc.stdout, proc.stderr):
        bad = sorted({hex(ord(ch)) for ch in stream if (ord(ch) < 32 and ch not in "\n\t") or 0x7f <= ord(ch) <= 0x9f})
        assert not bad, (bad, stream[:500])
        if not escaped_json:  # JSON keeps the data, escaped (\\u001b): harmless to a terminal
            assert "pwned" not in stream and "[2J" not in stream, stream[:500]
    for text in expected:
        assert text in proc.stdout, (text, proc.stdout[:1000])


def test_cli_strips_terminal_control_from_every_output_path(stage):
    srv, base, sid = stage
    anon = {**base, "SEGARENA_TOKEN": ""}
    org = {**base, "SEGARENA_TOKEN": ORG}
    part = {**base, "SEGARENA_TOKEN": PART}
    # the API does send the raw sequences: the CLI is what must not pass them on
    import httpx

    raw = httpx.get(f"{srv.url}/api/challenges/evil/tracks/main/leaderboard").json()
    assert raw["rows"][0]["label"] == NASTY + "model-x"

    _assert_clean(run_cli("leaderboard", "main", env=anon), "model-x", "team-x")
    _assert_clean(run_cli("leaderboard", "main", "--csv", env=anon), "model-x", "team-x")
    _assert_clean(run_cli("leaderboard", "main", "--json", env=anon), "model-x", escaped_json=True)
    _assert_clean(run_cli("admin", "export", env=org), "model-x", "team-x", "reason-x")
    _assert_clean(run_cli("logs", str(sid), env=part), "stdout-x", "stderr-x")
    _assert_clean(run_cli("status", str(sid), env=part), "why-x")
    _assert_clean(run_cli("status", env=part), "model-x")


def test_clean_removes_sequences_whole_and_keeps_text():
    from segarena.output import clean

    assert clean(EVIL + "label") == "label"
    assert clean("a\x1b[1;31mred\x1b[0m\tb\nc") == "ared\tb\nc"
    assert clean("x\x9b2Jy\x9d0;t\x07z") == "xyz"
    assert clean("\x1bP1;2q\x1b\\after") == "after"
    assert clean("naïve 中文 ✓") == "naïve 中文 ✓"
    assert clean("bell\x07 del\x7f nul\x00 cr\r") == "bell del nul cr"
