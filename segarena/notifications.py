"""Notification commands: ``segarena notifications`` (a member's own e-mail setting) and
``segarena admin webhook add|list|remove|deliveries`` (organizers). Client-side only: no server code imported,
and nothing heavy at import time (the CLI's --help stays fast)."""

from __future__ import annotations

import json
from typing import Any

import typer

from segarena.dates import when

__all__ = ["register", "webhook_app"]

KINDS = ("run.finished", "run.failed", "run.stuck", "submission.excluded", "budget.warning")
webhook_app = typer.Typer(help="Webhooks of the challenge (SEGARENA_CHALLENGE / --challenge): signed POSTs on run "
                          "finished, failed, stuck (requeued) and submission excluded.", no_args_is_help=True)


def _client() -> Any:
    from segarena.participant import open_client

    return open_client()


def _challenge() -> str:
    from segarena.client import load_config
    from segarena.participant import OPTIONS

    return load_config(**OPTIONS).challenge


class _Plain:
    """Prints server-supplied text as is: no Rich markup ('[run.failed]' stays), terminal control cleaned."""

    def print(self, text: str) -> None:
        from segarena.participant import out

        out.print(text, markup=False, highlight=False)


def _out() -> _Plain:
    return _Plain()


def notifications(email: str | None = typer.Option(None, "--email", help="on or off: e-mail notifications about "
                                                       "your team's runs (finished, failed, stuck, excluded)."),
                  address: str | None = typer.Option(None, "--address", help="Your e-mail address ('' removes it)."),
                  as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON.")) -> None:
    """Show or change your notification settings (GET/PUT /api/me/notifications)."""
    from segarena.client import CliError

    body: dict[str, Any] = {}
    if email is not None:
        value = email.strip().lower()
        if value not in ("on", "off"):
            raise CliError(f"--email takes on or off (got {email!r})", exit_code=2)
        body["email_notifications"] = value == "on"
    if address is not None:
        body["email"] = address
    with _client() as client:
        prefs = client.request("PUT", "/api/me/notifications", json=body) if body else client.get("/api/me/notifications")
    out = _out()
    if as_json:
        out.print(json.dumps(prefs, indent=1))
        return
    state = "on" if prefs.get("email_notifications") else "off"
    out.print(f"e-mail notifications: {state}")
    out.print(f"address: {prefs.get('email') or '(none: set one with --address)'}")
    if not prefs.get("smtp_configured"):
        out.print("note: this server sends no e-mail (no SMTP server configured)")
    elif prefs.get("email_notifications") and not prefs.get("email"):
        out.print("note: without an address you receive nothing")


@webhook_app.command("add")
def webhook_add(url: str = typer.Argument(..., help="http(s) URL of your receiver."),
                event: list[str] = typer.Option([], "--event", "-e", help=f"Only these kinds (repeatable): "
                                                f"{', '.join(KINDS)}; default: all."),
                description: str = typer.Option("", help="What it is for.")) -> None:
    """Add a webhook; prints its signing secret, once."""
    from segarena.client import CliError

    bad = [e for e in event if e not in KINDS]
    if bad:
        raise CliError(f"unknown event kind {bad[0]!r}; kinds: {', '.join(KINDS)}", exit_code=2)
    challenge = _challenge()
    with _client() as client:
        hook = client.post(f"/api/admin/challenges/{challenge}/webhooks",
                           json={"url": url, "events": event, "description": description})
    out = _out()
    out.print(f"webhook {hook['id']} of challenge {challenge}: {hook['url']} ({', '.join(hook['events'])})")
    out.print(f"secret: {hook['secret']}")
    out.print("Store the secret with your receiver now: it is not shown again. Verify each request: "
              "X-SegArena-Signature == 'sha256=' + hex(HMAC-SHA256(secret, X-SegArena-Timestamp + '.' + body)).")


@webhook_app.command("list")
def webhook_list(removed: bool = typer.Option(False, help="Also removed webhooks."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """The challenge's webhooks (never their secrets)."""
    challenge = _challenge()
    with _client() as client:
        hooks = client.get(f"/api/admin/challenges/{challenge}/webhooks", params={"removed": removed})
    out = _out()
    if as_json:
        out.print(json.dumps(hooks, indent=1))
        return
    if not hooks:
        out.print(f"challenge {challenge} has no webhook (segarena admin webhook add URL)")
    for h in hooks:
        gone = f"  removed {when(h['removed_at'])}" if h.get("removed_at") else ""
        out.print(f"{h['id']:>4}  {h['url']}  [{', '.join(h['events'])}]  {h.get('description', '')}{gone}")


@webhook_app.command("remove")
def webhook_remove(webhook_id: int = typer.Argument(..., help="A webhook id (segarena admin webhook list).")) -> None:
    """Remove a webhook: nothing more is sent to it; its delivery log stays."""
    challenge = _challenge()
    with _client() as client:
        hook = client.request("DELETE", f"/api/admin/challenges/{challenge}/webhooks/{webhook_id}")
    _out().print(f"webhook {hook['id']} removed ({hook['url']})")


@webhook_app.command("deliveries")
def webhook_deliveries(webhook: int | None = typer.Option(None, "--webhook", help="Only this webhook."),
                       channel: str | None = typer.Option(None, help="webhook or email."),
                       state: str | None = typer.Option(None, help="pending, delivered, failed or cancelled."),
                       limit: int = typer.Option(50, help="How many, newest first."),
                       as_json: bool = typer.Option(False, "--json", help="Everything, with every attempt.")) -> None:
    """The delivery log: each notification, its state and attempts (status, error, when)."""
    challenge = _challenge()
    params: dict[str, Any] = {"limit": limit}
    for key, value in (("webhook_id", webhook), ("channel", channel), ("state", state)):
        if value is not None:
            params[key] = value
    with _client() as client:
        rows = client.get(f"/api/admin/challenges/{challenge}/deliveries", params=params)
    out = _out()
    if as_json:
        out.print(json.dumps(rows, indent=1))
        return
    if not rows:
        out.print("no deliveries")
    for d in rows:
        last = f"  last: {d['last_status'] or ''} {d['last_error']}".rstrip() if d["last_error"] or d["last_status"] else ""
        at = when(d.get("delivered_at") or (d.get("next_attempt_at") if d["state"] == "pending" else ""))
        out.print(f"{d['id']:>5}  {d['kind']:<19} {d['channel']:<7} {d['recipient']}  {d['state']} after "
                  f"{d['attempts']} attempt(s) {at}{last}")


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """``segarena notifications`` on ``app``, ``segarena admin webhook ...`` on ``admin_app``."""
    app.command("notifications")(notifications)
    admin_app.add_typer(webhook_app, name="webhook")
