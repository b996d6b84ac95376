"""The notification commands as a user runs them (subprocesses against the real API on 127.0.0.1), and the
dispatcher inside a real ``segarena scorer`` process (its beat), delivering to a real receiver and SMTP server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.api_helpers import seed
from tests.cli_helpers import ROOT, ThreadServer, run_cli
from tests.notifications.events import fail_run
from tests.processes import log_tail, spawn, stop
from tests.waiting import wait_until


@pytest.fixture
def server(sqlite_nsettings):
    from tests.api_helpers import shared_app

    app = shared_app(sqlite_nsettings, migrate=True)
    with ThreadServer(app) as srv:
        yield srv


def cli(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = run_cli(*args, env=env)
    if ok:
        assert proc.returncode == 0, f"segarena {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def test_cli_webhooks_deliveries_and_opt_out(server, sqlite_nsettings, receivers, smtp_server, tmp_path):
    from api.notifications.dispatcher import dispatch

    s = sqlite_nsettings
    w = seed(s.database_url)
    base = {"SEGARENA_URL": server.url, "SEGARENA_CHALLENGE": "cvpr24",
            "SEGARENA_CONFIG": str(tmp_path / "none.toml"), "SEGARENA_CACHE_DIR": str(tmp_path / "cache")}
    org, alice = {**base, "SEGARENA_TOKEN": w.token_org}, {**base, "SEGARENA_TOKEN": w.token_a}
    rx = receivers(script=[500])

    added = cli(org, "admin", "webhook", "add", rx.url, "--event", "run.failed", "--description", "ops").stdout
    m = re.search(r"webhook (\d+) of challenge cvpr24: (\S+) \(run.failed\)", added)
    assert m and m.group(2) == rx.url, added
    secret = re.search(r"secret: (whsec_\S+)", added).group(1)
    rx.secret = secret
    listed = cli(org, "admin", "webhook", "list").stdout
    assert rx.url in listed and "[run.failed]" in listed and secret not in listed
    bad = cli(org, "admin", "webhook", "add", "ftp://example.org/x", ok=False)
    assert bad.returncode != 0 and "only http:// and https://" in bad.stderr
    assert "unknown event kind" in cli(org, "admin", "webhook", "add", rx.url, "-e", "run.boom", ok=False).stderr
    denied = cli(alice, "admin", "webhook", "list", ok=False)
    assert denied.returncode != 0 and "organizer" in (denied.stderr + denied.stdout).lower()

    shown = cli(alice, "notifications").stdout
    assert "e-mail notifications: on" in shown and "alice@example.org" in shown
    assert "e-mail notifications: off" in cli(alice, "notifications", "--email", "off").stdout
    assert "takes on or off" in cli(alice, "notifications", "--email", "maybe", ok=False).stderr

    # a run of team A fails: the webhook gets it after one retry, anna gets an e-mail, alice (opted out) none
    from api.db import session_scope
    from api.models import Run, RunState, Submission, SubmissionState

    with session_scope(s.database_url) as sess:
        sub = Submission(track_id=w.tracks["main"], team_id=w.team_a, member_id=w.member_a, label="cli model",
                         state=SubmissionState.running, archive_path="x", archive_sha256="0" * 64, archive_bytes=1,
                         image_id="sha256:" + "2" * 64)
        sess.add(sub)
        sess.flush()
        run = Run(submission_id=sub.id, attempt=1, state=RunState.running, queue="cpu")
        sess.add(run)
        sess.flush()
        run_id = run.id
    fail_run(s, run_id, "every case failed; first: exit code 137")
    dispatch(s)
    time.sleep(0.3)  # the point: past the first attempt's backoff, so the second pass retries
    dispatch(s)
    _port, box = smtp_server
    assert len(rx.requests) == 2 and all(r.valid_signature for r in rx.requests)
    assert [a for _f, rcpt, _m in box.messages for a in rcpt] == ["anna@example.org"]

    log = cli(org, "admin", "webhook", "deliveries").stdout
    assert re.search(r"run\.failed\s+webhook\s+" + re.escape(rx.url) + r"\s+delivered after 2 attempt", log), log
    assert "anna@example.org  delivered after 1 attempt" in log and "alice@example.org" not in log
    full = cli(org, "admin", "webhook", "deliveries", "--channel", "webhook", "--json").stdout
    assert '"status": 500' in full and '"status": 200' in full and secret not in full

    hook_id = m.group(1)
    assert f"webhook {hook_id} removed" in cli(org, "admin", "webhook", "remove", hook_id).stdout
    assert "has no webhook" in cli(org, "admin", "webhook", "list").stdout


def test_scorer_process_delivers_from_its_beat(sqlite_nsettings, receivers, smtp_server, tmp_path):
    """`segarena scorer` (celery worker + beat, embedded broker) runs the dispatcher every
    SEGARENA_NOTIFY_INTERVAL_S: an audit event written by the scoring code reaches the webhook and the mailbox."""
    from api.db import migrate, session_scope
    from api.models import Run, RunState, Submission, SubmissionState

    s = sqlite_nsettings
    migrate(s.database_url)
    w = seed(s.database_url)
    rx = receivers()
    from fastapi.testclient import TestClient

    from tests.api_helpers import shared_app

    with TestClient(shared_app(s, migrate=True)) as client:
        r = client.post("/api/admin/challenges/cvpr24/webhooks", json={"url": rx.url},
                        headers={"Authorization": f"Bearer {w.token_org}"})
        rx.secret = r.json()["secret"]
    port, box = smtp_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGARENA_")}
    from api.settings import DEFAULT_BASE_IMAGE
    env.update(SEGARENA_DATA_DIR=str(s.data_dir), SEGARENA_DATABASE_URL=s.database_url,
               SEGARENA_BASE_IMAGE=os.environ.get("SEGARENA_BASE_IMAGE", DEFAULT_BASE_IMAGE),
               SEGARENA_NOTIFY_INTERVAL_S="1", SEGARENA_WEBHOOK_ALLOW_PRIVATE="true",
               SEGARENA_SMTP_HOST="127.0.0.1", SEGARENA_SMTP_PORT=str(port), SEGARENA_SMTP_TLS="none",
               SEGARENA_SMTP_SENDER="noreply@segarena.test", SEGARENA_REAPER_INTERVAL_S="3600")
    log = tmp_path / "scorer.log"
    proc = spawn([sys.executable, "-m", "segarena.cli", "scorer"], cwd=ROOT, env=env, log=log)
    try:
        with session_scope(s.database_url) as sess:
            sub = Submission(track_id=w.tracks["main"], team_id=w.team_a, member_id=w.member_a, label="beat",
                             state=SubmissionState.running, archive_path="x", archive_sha256="0" * 64,
                             archive_bytes=1, image_id="sha256:" + "3" * 64)
            sess.add(sub)
            sess.flush()
            run = Run(submission_id=sub.id, attempt=1, state=RunState.running, queue="cpu")
            sess.add(run)
            sess.flush()
            run_id = run.id
        fail_run(s, run_id, "no case was run")
        wait_until(lambda: rx.requests and len(box.messages) >= 2, 90,
                   "the scorer's beat to deliver the webhook and both e-mails", interval=0.25, proc=proc,
                   detail=lambda: "scorer log tail:\n" + log_tail(log))
        assert rx.requests and rx.requests[0].valid_signature and rx.requests[0].json["type"] == "run.failed"
        assert sorted(a for _f, rcpt, _m in box.messages for a in rcpt) == ["alice@example.org", "anna@example.org"]
    finally:
        stop(proc, timeout=20)
    text = log.read_text(errors="replace")
    assert rx.secret not in text, "the webhook secret never appears in the scorer's log"
