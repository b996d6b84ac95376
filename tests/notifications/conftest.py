"""Real receivers on this machine: an SMTP server (aiosmtpd) and a threaded HTTP server on 127.0.0.1 that
verifies every webhook's HMAC signature and timestamp itself, plus a seeded challenge with a run in flight."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.api_helpers import World, seed


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    valid_signature: bool
    fresh: bool
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers the statuses in ``script`` in order (then 200), after ``delay_s``; records every request."""

    secret: str = ""
    script: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    server: Any = None

    def verify(self, headers: dict[str, str], body: bytes) -> tuple[bool, bool]:
        ts = headers.get("x-segarena-timestamp", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        valid = bool(self.secret) and hmac.compare_digest(expected, headers.get("x-segarena-signature", ""))
        fresh = ts.isdigit() and abs(time.time() - int(ts)) <= 300  # the replay window a receiver should apply
        return valid, fresh


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            valid, fresh = rx.verify(headers, body)
            with rx.lock:
                rx.requests.append(Received(self.path, headers, body, valid, fresh, time.monotonic()))
                status = rx.script.pop(0) if rx.script else 200
            if rx.hang:
                time.sleep(30)
                return
            time.sleep(rx.delay_s)
            payload = b'{"error": "receiver is down"}' if status >= 300 else b"ok"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def receivers():
    """A factory of receivers; every server is shut down at the end."""
    made: list[ThreadingHTTPServer] = []

    def make(**kw: Any) -> Receiver:
        rx = Receiver(**kw)
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rx))
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        rx.server, rx.url = srv, f"http://127.0.0.1:{srv.server_address[1]}/hooks/segarena"
        made.append(srv)
        return rx

    yield make
    for srv in made:
        srv.shutdown()
        srv.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for _, rcpt, m in self.messages if address in rcpt]


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on 127.0.0.1: (port, mailbox)."""
    from aiosmtpd.controller import Controller

    from tests.cli_helpers import free_port

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, box
    controller.stop()


def _configure(s: Any, smtp_port: int) -> Any:
    s.webhook_allow_private = True  # the receivers are on 127.0.0.1
    s.smtp_host, s.smtp_port, s.smtp_tls = "127.0.0.1", smtp_port, "none"
    s.smtp_sender = "SegArena <noreply@segarena.test>"
    s.notify_backoff_s, s.notify_backoff_max_s, s.notify_max_attempts = 0.2, 0.4, 4
    s.webhook_timeout_s, s.smtp_timeout_s = 5.0, 5.0
    return s


@pytest.fixture(params=["sqlite", "postgres"])
def nsettings(request, settings, smtp_server):
    """Settings with SMTP pointing at the test server, loopback webhooks allowed, short backoffs; on SQLite and on
    a fresh PostgreSQL database."""
    if request.param == "postgres":
        settings.database_url = request.getfixturevalue("postgres_url")
    return _configure(settings, smtp_server[0])


@pytest.fixture
def pg_nsettings(settings, smtp_server, postgres_url):
    settings.database_url = postgres_url
    return _configure(settings, smtp_server[0])


@pytest.fixture
def sqlite_nsettings(settings, smtp_server):
    return _configure(settings, smtp_server[0])


@dataclass
class Arena:
    settings: Any
    client: Any
    world: World
    submission_id: int = 0
    run_id: int = 0


def make_arena(settings: Any, *, label: str = "my model v2", feedback: str = "summary") -> tuple[Any, World, int, int]:
    """The app (migrated), the seeded world and one running submission of team A (alice's) with its run."""
    from fastapi.testclient import TestClient

    from tests.api_helpers import shared_app
    from api.db import session_scope
    from api.models import Feedback, Run, RunState, Submission, SubmissionState, Track

    app = shared_app(settings, migrate=True)
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    w = seed(settings.database_url)
    with session_scope(settings.database_url) as s:
        track = s.get(Track, w.tracks["main"])
        track.feedback = Feedback(feedback)
        sub = Submission(track_id=track.id, team_id=w.team_a, member_id=w.member_a, label=label,
                         state=SubmissionState.running, archive_path="x.tar", archive_sha256="0" * 64,
                         archive_bytes=1, image_id="sha256:" + "1" * 64)
        s.add(sub)
        s.flush()
        run = Run(submission_id=sub.id, attempt=1, state=RunState.running, queue="cpu", cases_total=2,
                  testset="tiny")
        s.add(run)
        s.flush()
        return client, w, sub.id, run.id


@pytest.fixture
def arena(nsettings):
    client, w, sid, rid = make_arena(nsettings)
    yield Arena(nsettings, client, w, sid, rid)
    client.__exit__(None, None, None)
