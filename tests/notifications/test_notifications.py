"""Notifications end to end with real receivers: webhooks (HMAC signature and timestamp verified by the receiver,
retries with backoff after 500s, the delivery log), e-mail through a real SMTP server (content, opt-out, no
secrets, header injection), stuck runs after a real reaper requeue, exclusion through the API, no duplicate
delivery with two dispatchers, refused URLs, and a hanging receiver that blocks nothing."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.api_helpers import auth
from tests.notifications.conftest import make_arena
from tests.notifications.events import fail_run, reaper_requeues, succeed_run
from tests.waiting import wait_until


def add_hook(client: Any, token: str, url: str, events: list[str] | None = None, challenge: str = "cvpr24") -> dict:
    r = client.post(f"/api/admin/challenges/{challenge}/webhooks", json={"url": url, "events": events or []},
                    headers=auth(token))
    assert r.status_code == 201, r.text
    return r.json()


def deliveries(settings: Any, **where: Any) -> list[Any]:
    from api.db import session_scope
    from api.models import NotificationDelivery

    with session_scope(settings.database_url) as s:
        q = select(NotificationDelivery).order_by(NotificationDelivery.id)
        for k, v in where.items():
            q = q.where(getattr(NotificationDelivery, k) == v)
        rows = list(s.scalars(q))
        s.expunge_all()
        return rows


def pump(settings: Any, until: Any, timeout: float = 20.0) -> None:
    """Run dispatcher passes (as the scorer's beat does) until ``until()`` holds."""
    from api.notifications.dispatcher import dispatch

    def delivered() -> bool:
        dispatch(settings)
        return bool(until())

    wait_until(delivered, timeout, "the dispatcher to deliver the notifications")


def test_webhook_signed_retried_with_backoff_and_logged(arena, receivers):
    s, c, w = arena.settings, arena.client, arena.world
    rx = receivers(script=[500, 500])  # down twice, then up
    hook = add_hook(c, w.token_org, rx.url)
    rx.secret = hook["secret"]
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    listed = c.get("/api/admin/challenges/cvpr24/webhooks", headers=auth(w.token_org)).json()
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert hook["secret"] not in json.dumps(listed)
    assert listed[0]["events"] == ["run.finished", "run.failed", "run.stuck", "submission.excluded",
                                  "budget.warning"]

    fail_run(s, arena.run_id, "stopped early: 3 cases in a row failed (fail-fast)")
    pump(s, lambda: len(rx.requests) >= 3 and deliveries(s, channel="webhook")[0].state == "delivered")

    assert len(rx.requests) == 3
    assert all(r.valid_signature and r.fresh for r in rx.requests), "every attempt is signed with the secret"
    assert all(r.path == "/hooks/segarena" for r in rx.requests)
    bodies = {r.body for r in rx.requests}
    assert len(bodies) == 1, "every attempt sends the same body"
    ids = {r.headers["x-segarena-delivery"] for r in rx.requests}
    assert len(ids) == 1 and {r.headers["x-segarena-event"] for r in rx.requests} == {"run.failed"}
    assert all(r.headers["content-type"] == "application/json" for r in rx.requests)
    body = rx.requests[0].json
    assert body["schema"] == "segarena.notification/1" and body["type"] == "run.failed"
    assert body["challenge"] == {"slug": "cvpr24", "title": "CVPR 2024 MedSAM on Laptop"}
    assert body["track"]["slug"] == "main" and body["team"] == {"id": w.team_a, "name": "Team A"}
    assert body["submission"]["id"] == arena.submission_id and body["submission"]["label"] == "my model v2"
    assert body["submission"]["state"] == "failed"
    assert body["run"] == {"id": arena.run_id, "attempt": 1, "state": "failed"}
    assert body["reason"] == "stopped early: 3 cases in a row failed (fail-fast)"
    assert body["scores"] is None and datetime.fromisoformat(body["occurred_at"]).tzinfo is not None

    # a changed timestamp or body fails the receiver's check: the signature covers both
    first = rx.requests[0]
    assert rx.verify({**first.headers, "x-segarena-timestamp": str(int(first.headers["x-segarena-timestamp"]) - 1)},
                     first.body) == (False, True)
    assert rx.verify(first.headers, first.body.replace(b"fail-fast", b"fail-slow"))[0] is False

    # the delivery log, as organizers read it
    log = c.get("/api/admin/challenges/cvpr24/deliveries", params={"channel": "webhook"},
                headers=auth(w.token_org)).json()
    assert len(log) == 1
    d = log[0]
    assert d["state"] == "delivered" and d["attempts"] == 3 and d["last_status"] == 200 and d["last_error"] == ""
    assert d["webhook_id"] == hook["id"] and d["recipient"] == rx.url and d["kind"] == "run.failed"
    assert str(d["id"]) in ids
    assert [a["status"] for a in d["log"]] == [500, 500, 200]
    assert d["log"][0]["error"].startswith("HTTP 500") and "receiver is down" in d["log"][0]["error"]
    # exponential backoff: 0.2 s after the first failure, 0.4 s (the cap) after the second
    waits = [(datetime.fromisoformat(a["retry_at"]) - datetime.fromisoformat(a["at"])).total_seconds()
             for a in d["log"][:2]]
    assert waits == pytest.approx([0.2, 0.4], abs=0.01)
    gaps = [b.at - a.at for a, b in zip(rx.requests, rx.requests[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps
    assert hook["secret"] not in json.dumps(log)
    # participants cannot read it
    assert c.get("/api/admin/challenges/cvpr24/deliveries", headers=auth(w.token_a)).status_code == 403

    # e-mails went to both members of team A, also logged
    mails = c.get("/api/admin/challenges/cvpr24/deliveries", params={"channel": "email"},
                  headers=auth(w.token_org)).json()
    assert sorted(m["recipient"] for m in mails) == ["alice@example.org", "anna@example.org"]
    assert all(m["state"] == "delivered" and m["attempts"] == 1 for m in mails)


def test_retries_stop_at_the_cap_and_the_delivery_fails(sqlite_nsettings, receivers):
    s = sqlite_nsettings
    s.notify_max_attempts = 3
    client, w, _sid, rid = make_arena(s)
    rx = receivers(script=[503] * 10)
    rx.secret = add_hook(client, w.token_org, rx.url)["secret"]
    fail_run(s, rid, "no case was run")
    pump(s, lambda: deliveries(s, channel="webhook")[0].state == "failed")
    time.sleep(1.0)  # the point: past any backoff (0.2-0.4 s), so a further attempt would be due now
    from api.notifications.dispatcher import dispatch

    dispatch(s)
    d = deliveries(s, channel="webhook")[0]
    assert d.attempts == 3 and len(rx.requests) == 3, "no attempt after the last one"
    assert d.last_status == 503 and [e["status"] for e in d.log] == [503, 503, 503]
    assert "retry_at" not in d.log[-1]


def test_email_content_opt_out_and_no_secrets(arena, smtp_server, receivers):
    s, c, w = arena.settings, arena.client, arena.world
    _port, box = smtp_server
    rx = receivers()
    secret = add_hook(c, w.token_org, rx.url)["secret"]
    rx.secret = secret
    # alice opts out through the API; anna keeps e-mail
    r = c.put("/api/me/notifications", json={"email_notifications": False}, headers=auth(w.token_a))
    assert r.status_code == 200 and r.json()["email_notifications"] is False and r.json()["smtp_configured"]
    assert c.get("/api/me/notifications", headers=auth(w.token_a)).json() == {
        "email": "alice@example.org", "email_notifications": False, "smtp_configured": True,
        "kinds": ["run.finished", "run.failed", "run.stuck", "submission.excluded", "budget.warning"]}

    succeed_run(s, arena.run_id)
    pump(s, lambda: len(box.messages) >= 1 and len(rx.requests) >= 1)
    time.sleep(0.3)  # the point: past the backoff, so the dispatch below would send anything still pending
    from api.notifications.dispatcher import dispatch

    dispatch(s)
    assert box.to("alice@example.org") == [], "alice opted out"
    [msg] = box.to("anna@example.org")
    assert len(box.messages) == 1
    subject = msg["Subject"]
    assert "CVPR 2024 MedSAM on Laptop" in subject and "Main" in subject
    assert f"#{arena.submission_id}" in subject and "my model v2" in subject and "run finished" in subject
    assert msg["From"] == "SegArena <noreply@segarena.test>" and msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_content()
    assert "Hello anna" in text and "cvpr24" in text and "Track:     Main (main)" in text
    assert "Reason: 1 of 2 cases failed" in text
    # overall DSC: the crashed case is charged 0, so (0.8125 + 0) / 2
    assert "DSC 0.4062 " in text, "the track's feedback (summary) shows the team its overall scores"
    assert "segarena notifications --email off" in text and f"segarena status {arena.submission_id}" in text
    raw = msg.as_string()
    for secret_value in (secret, w.token_a, w.token_a2, w.token_b, w.token_org, "whsec_", "sa_"):
        assert secret_value not in raw
    body = rx.requests[0].json
    assert body["type"] == "run.finished" and body["reason"] == "1 of 2 cases failed"
    assert body["scores"]["dsc"] == pytest.approx(0.40625) and body["details"] == {"cases": 2, "failed": 1}
    # opting back in through the CLI's route, then out again, is recorded in the audit trail
    audit = c.get("/api/admin/audit", params={"action": "member.notifications"}, headers=auth(w.token_org)).json()
    assert audit and audit[0]["details"] == {"email_notifications": False}


def test_email_hides_scores_under_feedback_none_and_resists_header_injection(sqlite_nsettings, smtp_server):
    s = sqlite_nsettings
    _port, box = smtp_server
    client, _w, sid, rid = make_arena(s, label="evil\r\nBcc: victim@example.org\r\nX-Injected: 1", feedback="none")
    succeed_run(s, rid)
    pump(s, lambda: len(box.messages) == 2)
    for _from, rcpt, msg in box.messages:
        assert rcpt in (["alice@example.org"], ["anna@example.org"]), rcpt
        assert msg["Bcc"] is None and msg["X-Injected"] is None
        assert "\n" not in msg["Subject"] and f"#{sid}" in msg["Subject"]
        assert "DSC" not in msg.get_content(), "feedback none: the state only"
    client.__exit__(None, None, None)


def test_stuck_run_after_the_reaper_requeues_a_shard(arena, receivers, smtp_server):
    s, c, w = arena.settings, arena.client, arena.world
    _port, box = smtp_server
    rx = receivers()
    rx.secret = add_hook(c, w.token_org, rx.url, events=["run.stuck"])["secret"]
    # an execution host handing a shard back after its own infrastructure error is not "stuck"
    from api.db import session_scope
    from api.execution.shards import requeue_shard
    from api.models import Shard
    from tests.notifications.events import stale_shard

    own = stale_shard(s, arena.run_id, worker="cpu-1", age_s=1, index=0)
    with session_scope(s.database_url) as sess:
        assert requeue_shard(sess, s, sess.get(Shard, own), reason="docker daemon restarted", actor="worker:cpu-1")
    shard_id = reaper_requeues(s, arena.run_id)
    pump(s, lambda: len(rx.requests) >= 1 and len(box.messages) >= 2)
    time.sleep(0.3)  # the point: past the backoff, so the dispatch below would send anything still pending
    from api.notifications.dispatcher import dispatch

    dispatch(s)
    assert len(rx.requests) == 1
    body = rx.requests[0].json
    assert rx.requests[0].valid_signature and body["type"] == "run.stuck"
    assert body["run"]["id"] == arena.run_id and body["run"]["state"] == "running"
    assert "no heartbeat for" in body["reason"] and "gpu-box-7" in body["reason"]
    assert body["details"] == {"shard": 3, "deliveries": 1}
    del shard_id
    msgs = box.to("anna@example.org")
    assert len(msgs) == 1 and "run delayed (requeued)" in msgs[0]["Subject"]
    assert "put back in the queue" in msgs[0].get_content()


def test_exclusion_through_the_api_notifies_and_webhook_filter(arena, receivers, smtp_server):
    s, c, w = arena.settings, arena.client, arena.world
    _port, box = smtp_server
    only_failures = receivers()
    only_failures.secret = add_hook(c, w.token_org, only_failures.url, events=["run.failed"])["secret"]
    everything = receivers()
    everything.secret = add_hook(c, w.token_org, everything.url)["secret"]
    r = c.post(f"/api/admin/submissions/{arena.submission_id}/exclude",
               json={"excluded": True, "reason": "used the test labels"}, headers=auth(w.token_org))
    assert r.status_code == 200, r.text
    pump(s, lambda: len(everything.requests) >= 1 and len(box.messages) >= 2)
    time.sleep(0.2)  # the point: past the backoff, so the dispatch below would send anything still pending
    from api.notifications.dispatcher import dispatch

    dispatch(s)
    assert only_failures.requests == [], "this webhook subscribed to run.failed only"
    body = everything.requests[0].json
    assert body["type"] == "submission.excluded" and body["reason"] == "used the test labels"
    assert body["run"] is None and body["submission"]["excluded"] is True
    for addr in ("alice@example.org", "anna@example.org"):
        [msg] = box.to(addr)
        assert "excluded from ranking" in msg["Subject"] and "Reason: used the test labels" in msg.get_content()


def test_no_duplicate_delivery_with_two_dispatchers(pg_nsettings, receivers, smtp_server):
    """Two dispatchers (threads with their own DB sessions) race over the same events on PostgreSQL: every event
    reaches each target exactly once."""
    from api.db import session_scope
    from api.models import Member, NotificationDelivery, NotificationEvent
    from api.notifications.dispatcher import deliver, dispatch

    s = pg_nsettings
    _port, box = smtp_server
    client, w, sid, rid = make_arena(s)
    rx = receivers(delay_s=0.3)  # a slow receiver widens the race window
    rx.secret = add_hook(client, w.token_org, rx.url)["secret"]
    fail_run(s, rid, "every case failed; first: exit code 1")
    r = client.post(f"/api/admin/submissions/{sid}/exclude", json={"excluded": True, "reason": "duplicate entry"},
                    headers=auth(w.token_org))
    assert r.status_code == 200
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            for _ in range(6):
                dispatch(s)
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    pump(s, lambda: all(d.state == "delivered" for d in deliveries(s)))
    kinds = sorted(r.json["type"] for r in rx.requests)
    assert kinds == ["run.failed", "submission.excluded"], kinds
    assert sorted(a for _f, rcpt, _m in box.messages for a in rcpt) == [
        "alice@example.org", "alice@example.org", "anna@example.org", "anna@example.org"]
    with session_scope(s.database_url) as sess:
        assert sess.scalar(select(func.count()).select_from(NotificationEvent)) == 2
        assert sess.scalar(select(func.count()).select_from(NotificationDelivery)) == 6
        assert sess.get(Member, w.member_a) is not None
    # the same delivery attempted by two dispatchers at once: one claims it, the other skips
    from api.models import AuditEvent

    with session_scope(s.database_url) as sess:
        ev = sess.scalar(select(AuditEvent.id).where(AuditEvent.action == "run.failed"))
        sess.add(NotificationDelivery(event_id=ev, kind="run.failed", channel="webhook", target="webhook:manual",
                                      webhook_id=deliveries(s, channel="webhook")[0].webhook_id,
                                      challenge_id=deliveries(s)[0].challenge_id, recipient=rx.url,
                                      payload={"manual": True}))
    manual = deliveries(s, target="webhook:manual")[0].id
    before = len(rx.requests)
    results: list[str] = []
    barrier2 = threading.Barrier(2)

    def one() -> None:
        barrier2.wait()
        results.append(deliver(s, manual))

    pair = [threading.Thread(target=one) for _ in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join(30)
    assert sorted(results) == ["delivered", "skipped"] and len(rx.requests) == before + 1
    client.__exit__(None, None, None)


def test_hanging_receiver_blocks_nothing(sqlite_nsettings, receivers):
    from api.notifications.dispatcher import dispatch

    s = sqlite_nsettings
    s.webhook_timeout_s, s.notify_max_attempts = 1.0, 2
    client, w, _sid, rid = make_arena(s)
    hung = receivers(hang=True)
    hung.secret = add_hook(client, w.token_org, hung.url)["secret"]
    good = receivers()
    good.secret = add_hook(client, w.token_org, good.url)["secret"]
    fail_run(s, rid, "no case was run")
    started = time.monotonic()
    report = dispatch(s)
    took = time.monotonic() - started
    assert took < 4.0, f"one pass took {took:.1f} s with a hanging receiver (timeout 1 s)"
    assert len(good.requests) == 1 and good.requests[0].valid_signature
    by_hook = {d.webhook_id: d for d in deliveries(s, channel="webhook")}
    bad = next(d for d in by_hook.values() if d.recipient == hung.url)
    assert bad.state == "pending" and bad.attempts == 1
    assert "no complete answer within 1 s" in bad.last_error
    assert sorted(report.outcomes.values()).count("delivered") >= 1
    # the run's state was written long before, by the scorer: notifications never touch it
    r = client.get(f"/api/admin/submissions/{_sid}", headers=auth(w.token_org)).json()
    assert r["state"] == "failed"
    client.__exit__(None, None, None)


@pytest.mark.parametrize("url,why", [
    ("ftp://example.org/hook", "only http:// and https://"),
    ("file:///etc/passwd", "only http:// and https://"),
    ("http://user:pw@example.org/hook", "user name or password"),
    ("http:///nohost", "no host"),
    ("http://127.0.0.1:9/hook", "non-public address"),
    ("http://localhost:9/hook", "non-public address"),
    ("http://10.1.2.3/hook", "non-public address"),
    ("http://169.254.169.254/latest/meta-data", "non-public address"),
    ("http://[::1]:9/hook", "non-public address"),
    ("http://[::ffff:127.0.0.1]/hook", "non-public address"),
    ("https://example.org:99999/hook", "port"),
])
def test_webhook_urls_refused(sqlite_nsettings, url, why):
    s = sqlite_nsettings
    s.webhook_allow_private = False
    client, w, _sid, _rid = make_arena(s)
    r = client.post("/api/admin/challenges/cvpr24/webhooks", json={"url": url}, headers=auth(w.token_org))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_webhook_url" and why in r.json()["message"], r.json()
    client.__exit__(None, None, None)


def test_private_address_checked_again_at_delivery(sqlite_nsettings, receivers):
    """A webhook added while internal addresses were allowed gets nothing once they are not: the address is
    checked at every attempt (and the connection goes to the checked address)."""
    s = sqlite_nsettings
    client, w, _sid, rid = make_arena(s)
    rx = receivers()
    rx.secret = add_hook(client, w.token_org, rx.url)["secret"]
    s.webhook_allow_private = False
    fail_run(s, rid, "no case was run")
    from api.notifications.dispatcher import dispatch

    dispatch(s)
    [d] = deliveries(s, channel="webhook")
    assert rx.requests == [] and d.state == "pending" and "non-public address" in d.last_error
    client.__exit__(None, None, None)


def test_name_resolving_to_a_private_address_is_refused_at_delivery(sqlite_nsettings, receivers):
    """No DNS lookup when a webhook is added; at delivery the name is resolved and each address checked: this
    machine's host name resolves (/etc/hosts) to a loopback address, so nothing is sent."""
    import ipaddress
    import socket

    from tests.conftest import IN_CI

    s = sqlite_nsettings
    s.webhook_allow_private = False
    client, w, _sid, rid = make_arena(s)
    rx = receivers()
    name = socket.gethostname()
    addrs = {i[4][0] for i in socket.getaddrinfo(name, 80)}
    if any(ipaddress.ip_address(a.split("%")[0]).is_global for a in addrs):
        # a public address would be refused too, but a bug would then send traffic off this machine
        message = f"{name} resolves to a public address here ({addrs}); the test needs a non-public one"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    hook = add_hook(client, w.token_org, rx.url.replace("127.0.0.1", name))
    rx.secret = hook["secret"]
    fail_run(s, rid, "no case was run")
    from api.notifications.dispatcher import dispatch

    dispatch(s)
    [d] = deliveries(s, channel="webhook")
    assert rx.requests == [] and "non-public address" in d.last_error and name in d.last_error
    s.webhook_allow_private = True  # the same name is fine once internal receivers are allowed
    time.sleep(0.3)  # the point: past the retry's backoff, so one dispatch pass retries it
    dispatch(s)
    assert len(rx.requests) == 1 and rx.requests[0].valid_signature
    assert rx.requests[0].headers["host"].startswith(name), "the Host header names the host, not the address"
    client.__exit__(None, None, None)


def test_webhook_admin_routes_authz_and_removal(sqlite_nsettings, receivers):
    s = sqlite_nsettings
    client, w, _sid, rid = make_arena(s)
    rx = receivers(script=[500] * 10)
    url = "/api/admin/challenges/cvpr24/webhooks"
    for token, code in ((None, 401), (w.token_a, 403)):
        assert client.post(url, json={"url": rx.url}, headers=auth(token)).status_code == code
        assert client.get(url, headers=auth(token)).status_code == code
        assert client.delete(f"{url}/1", headers=auth(token)).status_code == code
    assert client.post("/api/admin/challenges/nope/webhooks", json={"url": rx.url},
                       headers=auth(w.token_org)).status_code == 404
    bad = client.post(url, json={"url": rx.url, "events": ["run.exploded"]}, headers=auth(w.token_org))
    assert bad.status_code == 422
    hook = add_hook(client, w.token_org, rx.url)
    rx.secret = hook["secret"]
    fail_run(s, rid, "no case was run")
    from api.notifications.dispatcher import dispatch

    dispatch(s)
    assert len(rx.requests) == 1  # failed once, retry pending
    removed = client.delete(f"{url}/{hook['id']}", headers=auth(w.token_org))
    assert removed.status_code == 200 and removed.json()["removed_at"]
    assert client.delete(f"{url}/{hook['id']}", headers=auth(w.token_org)).status_code == 404
    time.sleep(0.5)  # the point: past the retry's backoff, so the retry would be due had the hook stayed
    dispatch(s)
    assert len(rx.requests) == 1, "nothing more is sent to a removed webhook"
    [d] = deliveries(s, channel="webhook")
    assert d.state == "cancelled" and d.attempts == 1
    assert client.get(url, headers=auth(w.token_org)).json() == []
    assert [h["id"] for h in client.get(url, params={"removed": True}, headers=auth(w.token_org)).json()] == [hook["id"]]
    audit = client.get("/api/admin/audit", params={"action": "webhook.create"}, headers=auth(w.token_org)).json()
    assert audit and hook["secret"] not in json.dumps(audit)
    # a member's own address: checked, then used
    assert client.put("/api/me/notifications", json={"email": "not an address"},
                      headers=auth(w.token_b)).status_code == 422
    r = client.put("/api/me/notifications", json={"email": "bob@lab.example.org"}, headers=auth(w.token_b))
    assert r.status_code == 200 and r.json()["email"] == "bob@lab.example.org"
    client.__exit__(None, None, None)


def test_starttls_is_required_when_configured(sqlite_nsettings, smtp_server):
    """SEGARENA_SMTP_TLS=starttls against a server that does not offer STARTTLS: nothing is sent in plain text."""
    s = sqlite_nsettings
    s.smtp_tls = "starttls"
    _port, box = smtp_server
    client, _w, _sid, rid = make_arena(s)
    fail_run(s, rid, "no case was run")
    from api.notifications.dispatcher import dispatch

    dispatch(s)
    mails = deliveries(s, channel="email")
    assert len(mails) == 2 and box.messages == []
    assert all(d.state == "pending" and "does not offer STARTTLS" in d.last_error for d in mails)
    client.__exit__(None, None, None)


def test_no_smtp_no_email_and_events_dispatched_once(sqlite_nsettings, receivers):
    s = sqlite_nsettings
    s.smtp_host = ""
    client, w, _sid, rid = make_arena(s)
    rx = receivers()
    rx.secret = add_hook(client, w.token_org, rx.url)["secret"]
    fail_run(s, rid, "no case was run")
    from api.notifications.dispatcher import dispatch, fan_out

    first = dispatch(s)
    assert first.events == 1 and first.created == 1
    assert fan_out(s) == (0, 0), "an event is fanned out once"
    assert deliveries(s, channel="email") == []
    assert client.get("/api/me/notifications", headers=auth(w.token_a)).json()["smtp_configured"] is False
    # an event older than the look-back window is not notified any more
    assert fan_out(s, now=datetime.now().astimezone() + timedelta(hours=25)) == (0, 0)
    client.__exit__(None, None, None)


def test_scorer_beat_schedules_the_dispatcher(settings):
    from api.execution.celery import make_trusted_celery

    app = make_trusted_celery(settings)
    entry = app.conf.beat_schedule["notify"]
    assert entry["task"] == "segarena.notify" and entry["schedule"] == settings.notify_interval_s
    assert entry["options"]["expires"] == settings.notify_interval_s
    assert "segarena.notify" in app.tasks


def test_organizer_page_shows_webhooks_and_the_delivery_log(sqlite_nsettings, receivers):
    from fastapi.testclient import TestClient

    from api.notifications.dispatcher import dispatch
    from tests.api_helpers import shared_app

    s = sqlite_nsettings
    api_client, w, sid, rid = make_arena(s)
    rx = receivers(script=[502])
    hook = add_hook(api_client, w.token_org, rx.url, events=["run.failed"])
    rx.secret = hook["secret"]
    fail_run(s, rid, "every case failed; first: <script>alert(1)</script>")
    dispatch(s)
    with TestClient(shared_app(s, migrate=True)) as pages:
        page = pages.get("/admin/challenges/cvpr24/notifications", headers=auth(w.token_org))
        assert page.status_code == 200, page.text
        html = page.text
        assert rx.url in html and "run.failed" in html and hook["secret"] not in html
        assert "HTTP 502" in html and "pending" in html and "alice@example.org" in html
        assert "<script>alert(1)</script>" not in html, "participant text is escaped"
        failed_only = pages.get("/admin/challenges/cvpr24/notifications", params={"state": "failed"},
                                headers=auth(w.token_org)).text
        assert rx.url not in failed_only.split("Delivery log")[1]
        assert pages.get("/admin/challenges/cvpr24/notifications", headers=auth(w.token_a)).status_code == 403
        assert pages.get("/admin/challenges/cvpr24/notifications").status_code == 401
        assert pages.get("/admin/challenges/nope/notifications", headers=auth(w.token_org)).status_code == 404
    api_client.__exit__(None, None, None)
    del sid


def test_smtp_login_and_the_password_never_shown(sqlite_nsettings):
    """SMTP with a login (aiosmtpd with AUTH): the right password delivers; a wrong one fails the attempt with the
    server's answer, and the password appears neither in the delivery log nor in the API."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
    from pydantic import SecretStr

    from api.notifications.dispatcher import dispatch
    from tests.cli_helpers import free_port
    from tests.notifications.conftest import Mailbox

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"mailer", b"pw-0k")
        return AuthResult(success=ok, handled=False)

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    try:
        s = sqlite_nsettings
        s.smtp_port, s.smtp_user, s.smtp_password = controller.port, "mailer", SecretStr("Wr0ng-pa55word")
        client, w, _sid, rid = make_arena(s)
        fail_run(s, rid, "no case was run")
        dispatch(s)
        mails = deliveries(s, channel="email")
        assert len(mails) == 2 and box.messages == []
        assert all("SMTPAuthenticationError" in d.last_error and "Wr0ng-pa55word" not in d.last_error for d in mails)
        log = client.get("/api/admin/challenges/cvpr24/deliveries", headers=auth(w.token_org)).text
        assert "SMTPAuthenticationError" in log and "Wr0ng-pa55word" not in log
        s.smtp_password = SecretStr("pw-0k")
        time.sleep(0.3)  # the point: past the retry's backoff, so one dispatch pass retries it
        dispatch(s)
        assert sorted(a for _f, rcpt, _m in box.messages for a in rcpt) == ["alice@example.org", "anna@example.org"]
        assert all(d.state == "delivered" and d.attempts == 2 for d in deliveries(s, channel="email"))
        client.__exit__(None, None, None)
    finally:
        controller.stop()


def test_https_receiver_certificate_is_verified(sqlite_nsettings, receivers, tmp_path):
    """An https webhook whose certificate is not trusted (self-signed) gets nothing: TLS is verified."""
    import ssl
    import subprocess

    from api.notifications.dispatcher import dispatch

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    s = sqlite_nsettings
    client, w, _sid, rid = make_arena(s)
    rx = receivers()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    rx.server.socket = ctx.wrap_socket(rx.server.socket, server_side=True)
    rx.secret = add_hook(client, w.token_org, rx.url.replace("http://", "https://"))["secret"]
    fail_run(s, rid, "no case was run")
    dispatch(s)
    [d] = deliveries(s, channel="webhook")
    assert rx.requests == [] and d.state == "pending" and "CERTIFICATE_VERIFY_FAILED" in d.last_error, d.last_error
    client.__exit__(None, None, None)
