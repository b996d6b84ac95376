"""Joining a challenge from the command line: ``segarena signup request|claim|join-code``, ``segarena accept-terms``,
``segarena quota`` and the organizers' ``segarena admin signups list|approve|refuse`` (docs/participants.md).

The HTTP client only: no server code is imported. Registered on the root and ``admin`` apps by :mod:`segarena.cli`.
"""

from __future__ import annotations

from typing import Any

import typer

from segarena.client import CliError
from segarena.dates import when
from segarena.participant import open_client, out

__all__ = ["register", "signup_app", "signups_admin_app"]

signup_app = typer.Typer(help="Ask to take part in a challenge, claim your token once approved, your team's join code.",
                         no_args_is_help=True)
signups_admin_app = typer.Typer(help="Sign-up requests: list, approve, refuse (organizers).", no_args_is_help=True)


@signup_app.command("request")
def request(
    name: str = typer.Option(..., "--name", help="Your name."),
    email: str = typer.Option(..., "--email", help="Your e-mail address."),
    team: str = typer.Option("", "--team", help="Create this new team."),
    join_code: str = typer.Option("", "--join-code", help="Or join an existing team with its join code (a member "
                                  "reads it with: segarena signup join-code)."),
    affiliation: str = typer.Option("", "--affiliation", help="Your lab, company or university."),
) -> None:
    """Ask to take part in the challenge (no token needed); prints your one-time claim code."""
    if bool(team) == bool(join_code):
        raise CliError("give either --team NAME (a new team) or --join-code CODE (an existing team)", exit_code=2)
    body = {"name": name, "email": email, "affiliation": affiliation, "team_name": team, "join_code": join_code}
    with open_client(need_token=False) as client:
        res = client.post(f"/api/challenges/{client.config.challenge}/signups", json=body)
    out.print(f"sign-up request {res['id']} for challenge {res['challenge']} (team {res['team']}): {res['state']}",
              markup=False)
    out.print(f"claim code (shown only now, keep it secret): {res['claim_code']}", markup=False)
    out.print(f"once approved: segarena signup claim  (paste the code), or open {res['claim_url']}", markup=False)


@signup_app.command("claim")
def claim(code: str = typer.Argument(None, help="The claim code (asked for when left out, so it stays out of your "
                                     "shell history)."),
          save: bool = typer.Option(False, "--save", help="Store the token in the config file (mode 0600).")) -> None:
    """Show your sign-up request's state; once approved, get your API token (shown once)."""
    from segarena.client import save_config

    if not code:
        code = typer.prompt("claim code", hide_input=True)
    with open_client(need_token=False) as client:
        res = client.post("/api/signups/claim", json={"claim_code": code.strip()})
    out.print(f"{res['state']}: {res['message']}", markup=False)
    token = res.get("token")
    if not token:
        raise typer.Exit(0 if res["state"] == "pending" else 3)
    out.print(f"member {res['member_id']} of team {res['team']}", markup=False)
    if save:
        path = save_config(token=token, challenge=res.get("challenge") or None)
        out.print(f"token saved to {path}", markup=False)
    else:
        out.print(f"token (shown only now, keep it secret): {token}", markup=False)
        out.print("store it: segarena configure --token TOKEN", markup=False)


@signup_app.command("join-code")
def join_code(rotate: bool = typer.Option(False, "--rotate", help="Replace it (the old code stops working).")) -> None:
    """Your team's join code: a newcomer signs up with it to ask to join your team."""
    with open_client() as client:
        res = client.post("/api/me/team/join-code/rotate") if rotate else client.get("/api/me/team/join-code")
    out.print(f"team {res['team']} ({res['members']} members): join code {res['join_code']}", markup=False)
    out.print(res["message"], markup=False)


def accept_terms(yes: bool = typer.Option(False, "--yes", "-y", help="Accept without asking.")) -> None:
    """Read the challenge's terms and accept them (needed before your first submission when it has terms)."""
    with open_client() as client:
        slug = client.config.challenge
        terms = client.get(f"/api/challenges/{slug}/terms")
        if not terms.get("required"):
            out.print(f"challenge {slug} has no terms to accept", markup=False)
            return
        if terms.get("accepted_at"):
            out.print(f"you accepted the terms of {slug} on {when(terms['accepted_at'])}", markup=False)
            return
        out.print(f"terms of challenge {slug}:\n\n{terms['terms']}\n", markup=False)
        if not yes and not typer.confirm("Do you accept these terms?", default=False):
            raise CliError("not accepted: you cannot submit to this challenge until you accept its terms", exit_code=3)
        res = client.post(f"/api/challenges/{slug}/terms/accept", json={"sha256": terms["sha256"]})
    out.print(f"{res['message']} ({when(res['accepted_at'])})", markup=False)


def quota(every: bool = typer.Option(False, "--all-challenges", help="Every challenge, not only the current one.")
          ) -> None:
    """Your team's quota per track: used in the last 24 h, open uploads, left, and when the next slot frees."""
    from rich.table import Table

    with open_client() as client:
        params = {} if every else {"challenge": client.config.challenge}
        me = client.get("/api/me/participation", params=params)
    if not me.get("team"):
        out.print("you are not a member of a team: no quota", markup=False)
        return
    table = Table("challenge", "track", "per 24 h", "used", "uploading", "left", "next slot frees", title=f"team {me['team']}",
                  box=None)
    for q in me.get("quotas") or []:
        table.add_row(q["challenge"], q["track"] + ("" if q.get("is_open") else " (closed)"), str(q["quota_per_day"]),
                      str(q["used"]), str(q["open_uploads"]), str(q["left"]), when(q.get("next_slot_at"), empty="-"))
    out.print(table)
    for c in me.get("challenges") or []:
        if c.get("terms_required") and not c.get("terms_accepted_at"):
            out.print(f"challenge {c['challenge']}: accept its terms before submitting (segarena accept-terms)",
                      markup=False)


def _signup_row(s: dict[str, Any]) -> list[str]:
    team = s.get("team") or ""
    team += " (new)" if s.get("team_name") and s.get("state") == "pending" else f" ({s.get('team_members', 0)} members)"
    note = s.get("reason") or ""
    if s.get("existing_member_ids"):
        note = (note + " " if note else "") + f"e-mail already used by member(s) {s['existing_member_ids']}"
    if s.get("state") == "approved":
        note = (note + " " if note else "") + (f"claimed {when(s['claimed_at'])}" if s.get("claimed_at")
                                               else f"claim by {when(s.get('claim_expires_at'))}")
    return [str(s.get("id")), str(s.get("challenge")), str(s.get("state")), str(s.get("name")), str(s.get("email")),
            str(s.get("affiliation") or ""), team, when(s.get("created_at")), note]


@signups_admin_app.command("list")
def signups_list(state: str = typer.Option("pending", "--state", help="pending, approved, refused or all."),
                 every: bool = typer.Option(False, "--all-challenges", help="Every challenge, not only the current one.")
                 ) -> None:
    """Sign-up requests, oldest first."""
    from rich.table import Table

    params: dict[str, str] = {} if state == "all" else {"state": state}
    with open_client() as client:
        if not every:
            params["challenge"] = client.config.challenge
        rows = client.get("/api/admin/signups", params=params)
    if not rows:
        out.print(f"no {'' if state == 'all' else state + ' '}sign-up requests", markup=False)
        return
    table = Table("id", "challenge", "state", "name", "e-mail", "affiliation", "team", "requested", "note", box=None)
    for s in rows:
        table.add_row(*_signup_row(s))
    out.print(table)


@signups_admin_app.command("approve")
def signups_approve(signup_id: int = typer.Argument(..., help="A sign-up request id.")) -> None:
    """Approve a request: the member (and a new team) are created; the requester claims the token with its code."""
    with open_client() as client:
        s = client.post(f"/api/admin/signups/{signup_id}/approve")
    out.print(f"sign-up {s['id']} approved: member {s['member_id']} ({s['name']}) of team {s['team']}", markup=False)
    out.print(f"the requester claims the token with their claim code by {when(s.get('claim_expires_at'))} "
              f"(if it is lost: segarena admin token new {s['member_id']})", markup=False)


@signups_admin_app.command("refuse")
def signups_refuse(signup_id: int = typer.Argument(..., help="A sign-up request id."),
                   reason: str = typer.Option(..., "--reason", help="Why (the requester reads it).")) -> None:
    """Refuse a request with a reason."""
    with open_client() as client:
        s = client.post(f"/api/admin/signups/{signup_id}/refuse", json={"reason": reason})
    out.print(f"sign-up {s['id']} refused: {s['reason']}", markup=False)


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """``segarena signup ...``, ``segarena accept-terms``, ``segarena quota`` and ``segarena admin signups ...``."""
    app.add_typer(signup_app, name="signup")
    app.command("accept-terms")(accept_terms)
    app.command("quota")(quota)
    admin_app.add_typer(signups_admin_app, name="signups")
