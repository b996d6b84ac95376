"""A compute budget warning (api/accounting, ``budget.warning``) reaches a real webhook receiver on this machine,
HMAC-signed, and the team's e-mail through a real SMTP server: the run ends in the scorer (``stop_run``), which
records the warning in the same transaction; the outbox delivers it."""

from __future__ import annotations

from tests.api_helpers import auth
from tests.notifications.conftest import make_arena
from tests.notifications.test_notifications import add_hook, pump

from api.db import session_scope
from api.models import CaseResult, CaseStatus, Track


def test_budget_warning_reaches_the_webhook_and_the_team(sqlite_nsettings, receivers, smtp_server):
    s = sqlite_nsettings
    _port, box = smtp_server
    client, w, sub_id, run_id = make_arena(s)
    try:
        rx = receivers()
        rx.secret = add_hook(client, w.token_org, rx.url, events=["budget.warning"])["secret"]
        with session_scope(s.database_url) as db:
            db.get(Track, w.tracks["main"]).budget_cpu_s = 4.0
            for i, cpu in enumerate((1.5, 1.5)):  # 3.0 of 4.0 CPU-seconds: 75 %
                db.add(CaseResult(run_id=run_id, case_id=f"case{i}", status=CaseStatus.crash, cpu_s=cpu, wall_s=2.0,
                                  runtime_s=60.0, reason="crashed"))
        from api.execution.scoring import stop_run

        with session_scope(s.database_url) as db:  # the scorer ends the run (every case recorded)
            assert stop_run(db, s, run_id)
        def warned_by_mail() -> list:
            return [m for m in box.to("alice@example.org") if "compute budget warning" in m["Subject"]]

        pump(s, lambda: len(rx.requests) >= 1 and bool(warned_by_mail()))  # (the run.failed mail goes too)
        [req] = rx.requests
        assert req.valid_signature and req.fresh
        body = req.json
        assert body["type"] == "budget.warning" and body["team"]["name"] == "Team A"
        assert body["run"]["id"] == run_id and body["submission"]["id"] == sub_id
        assert body["details"] == {"resource": "cpu", "level": 70, "used_s": 3.0, "budget_s": 4.0, "percent": 75.0}
        assert "3.0 of its budget of 4.0 CPU-seconds (75.0 %)" in body["reason"] and "70 % reached" in body["reason"]
        [msg] = warned_by_mail()
        assert "70 % of its cpu budget" in msg.get_content() and "Reason: team Team A has used 3.0" in msg.get_content()
        log = client.get("/api/admin/challenges/cvpr24/deliveries", params={"kind": "budget.warning"},
                         headers=auth(w.token_org))
        assert log.status_code == 200 and any(d["state"] == "delivered" for d in log.json()), log.text
    finally:
        client.__exit__(None, None, None)
