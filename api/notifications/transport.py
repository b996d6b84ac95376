"""Sending: signed webhook POSTs (pinned to a checked address, bounded in time) and SMTP e-mail.

Webhook URLs are configured by organizers and fetched by the trusted scorer, which sits next to the database and
the storage: by default a URL whose host is (or resolves to) a non-public address is refused, when the webhook is
added and again at every delivery (the connection goes to the address that was checked, so a DNS answer that
changes in between cannot redirect it). ``SEGARENA_WEBHOOK_ALLOW_PRIVATE=true`` allows internal receivers.
Redirects are not followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DeliveryError", "check_url", "resolve", "sign", "post_webhook", "send_mail", "smtp_port",
           "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "EVENT_HEADER", "DELIVERY_HEADER", "USER_AGENT"]

SIGNATURE_HEADER = "X-SegArena-Signature"
TIMESTAMP_HEADER = "X-SegArena-Timestamp"
EVENT_HEADER = "X-SegArena-Event"
DELIVERY_HEADER = "X-SegArena-Delivery"
USER_AGENT = "SegArena-Webhook/1"
_EXCERPT = 1024
_PRIVATE = ("the host {host!r} is or resolves to a non-public address ({addrs}); webhooks are sent from the trusted "
            "scorer, so internal addresses are refused unless the server sets SEGARENA_WEBHOOK_ALLOW_PRIVATE=true")


class DeliveryError(Exception):
    """A delivery attempt failed; the message says why (never a secret)."""


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool = True) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL, or ValueError saying what is wrong: http(s) only, a host, no
    user:password (it would be shown in the delivery log), no fragment; unless ``allow_private``, no literal
    non-public address and no ``localhost`` name. No DNS lookup here (:func:`resolve` does that, at delivery)."""
    if len(url) > 2000:
        raise ValueError("the URL is longer than 2000 characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("the URL contains spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http:// and https:// URLs are allowed (got {parts.scheme or 'no scheme'!r})")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not contain a user name or password (they would be shown in the delivery "
                         "log); authenticate the requests with the webhook's signature instead")
    if parts.fragment:
        raise ValueError("the URL must not have a #fragment")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("the URL's port is not a number between 1 and 65535") from None
    if not allow_private:
        try:
            literal = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            literal = None
        if (literal is not None and not _public(literal)) or host == "localhost" or host.endswith(".localhost"):
            raise ValueError(_PRIVATE.format(host=host, addrs=host))
    return parts.scheme, host, port


def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses of ``host``; ValueError if it does not resolve, or (unless ``allow_private``) if any address
    is loopback, private, link-local, shared, reserved or multicast."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"the host {host!r} does not resolve ({exc})") from None
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addrs:
        raise ValueError(f"the host {host!r} has no address")
    if not allow_private:
        bad = [a for a in addrs if not _public(ipaddress.ip_address(a.split("%")[0]))]
        if bad:
            raise ValueError(_PRIVATE.format(host=host, addrs=", ".join(bad)))
    return addrs


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``: the value of X-SegArena-Signature."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post_webhook(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
                 allow_private: bool) -> tuple[int, str]:
    """POST ``body`` to ``url``: (HTTP status, the first KiB of the answer). Raises :class:`DeliveryError` when no
    answer came within ``timeout`` seconds in all, or the address is refused."""
    try:
        scheme, host, port = check_url(url, allow_private=allow_private)
        address = resolve(host, port, allow_private=allow_private)[0]
    except ValueError as exc:
        raise DeliveryError(str(exc)) from None
    cls = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    conn = cls(host, port, address, timeout)
    aborted = threading.Event()

    def abort() -> None:  # the total deadline: a receiver trickling its answer byte by byte is cut off
        aborted.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(timeout, abort)
    timer.daemon = True
    timer.start()
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", "User-Agent": USER_AGENT,
                                                       **headers})
        resp = conn.getresponse()
        excerpt = resp.read(_EXCERPT).decode("utf-8", "replace")
        return resp.status, excerpt
    except (OSError, http.client.HTTPException) as exc:
        if aborted.is_set() or isinstance(exc, TimeoutError):
            raise DeliveryError(f"no complete answer within {timeout:g} s (SEGARENA_WEBHOOK_TIMEOUT_S)") from None
        what = exc.__class__.__name__
        raise DeliveryError(f"{what}: {exc}" if str(exc) else what) from None
    finally:
        timer.cancel()
        conn.close()


def smtp_port(settings: Any) -> int:
    if settings.smtp_port:
        return int(settings.smtp_port)
    return {"tls": 465, "starttls": 587}.get(settings.smtp_tls, 25)


def send_mail(settings: Any, to: str, subject: str, text: str) -> str:
    """Send one plain-text e-mail through the configured SMTP server; returns its Message-ID. Raises
    :class:`DeliveryError` naming what failed (the password never appears in it)."""
    password = settings.smtp_password.get_secret_value()
    msg = EmailMessage()
    msg["From"] = settings.smtp_sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    domain = parseaddr(settings.smtp_sender)[1].rpartition("@")[2] or "segarena.local"
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg.set_content(text)
    host, port, mode, timeout = settings.smtp_host, smtp_port(settings), settings.smtp_tls, settings.smtp_timeout_s
    started = time.monotonic()
    try:
        smtp: smtplib.SMTP
        if mode == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if mode == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"the SMTP server {host}:{port} does not offer STARTTLS; refusing to send in "
                                        "plain text (SEGARENA_SMTP_TLS=none only for a relay on a trusted network)")
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, password)
            smtp.send_message(msg)
    except DeliveryError:
        raise
    except (OSError, smtplib.SMTPException) as exc:
        detail = str(exc) or exc.__class__.__name__
        if password:
            detail = detail.replace(password, "***")
        raise DeliveryError(f"SMTP {host}:{port} ({mode}) after {time.monotonic() - started:.1f} s: "
                            f"{exc.__class__.__name__}: {detail}"[:1000]) from None
    return str(msg["Message-ID"])
