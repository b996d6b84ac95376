"""Which audit events notify, and what a notification says (webhook body, e-mail subject and text).

The outbox is the audit log itself: every state change already writes an :class:`~api.models.AuditEvent` in the
transaction that makes it (``api.audit.record``; run state changes through ``api.lifecycle.transition``). The
dispatcher (:mod:`api.notifications.dispatcher`) reads new events of the actions below:

======================  ==========================================================================================
notification kind       audit event
======================  ==========================================================================================
``run.finished``        ``run.succeeded`` (the run ended with scores; some cases may have failed: ``reason``)
``run.failed``          ``run.failed`` (``reason``: why, e.g. every case failed, fail-fast, infrastructure)
``run.stuck``           ``shard.requeued`` by the trusted reaper (``trusted:reaper``): a worker stopped heartbeating
                        and part of the run was put back in the queue (``reason``: for how long)
``submission.excluded`` ``submission.exclude`` (an organizer excluded it from ranking; ``reason``: why)
``budget.warning``      ``budget.warning`` (api/accounting: the team's compute on the track reached 70, 90 or 100 % of
                        a budget when one of its runs ended; ``level``, ``resource``, ``used_s``, ``budget_s``)
======================  ==========================================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from api.models import AuditEvent, Challenge, Feedback, Member, Run, Submission, Team, Track

__all__ = ["KINDS", "ACTIONS", "REAPER_ACTOR", "SCHEMA", "Context", "kind_of", "context_of", "webhook_body",
           "email_message"]

KINDS: tuple[str, ...] = ("run.finished", "run.failed", "run.stuck", "submission.excluded", "budget.warning")
#: audit action -> notification kind
ACTIONS: dict[str, str] = {"run.succeeded": "run.finished", "run.failed": "run.failed",
                           "shard.requeued": "run.stuck", "submission.exclude": "submission.excluded",
                           "budget.warning": "budget.warning"}
REAPER_ACTOR = "trusted:reaper"
SCHEMA = "segarena.notification/1"
_TITLES = {"run.finished": "run finished", "run.failed": "run failed", "run.stuck": "run delayed (requeued)",
           "submission.excluded": "submission excluded from ranking", "budget.warning": "compute budget warning"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def kind_of(event: AuditEvent) -> str | None:
    """The notification kind of ``event``, or None when it notifies nobody (e.g. a shard an execution host handed
    back itself after an infrastructure error is not 'stuck')."""
    kind = ACTIONS.get(event.action)
    if kind == "run.stuck" and not (event.actor or "").startswith(REAPER_ACTOR):
        return None
    return kind


@dataclass
class Context:
    """Everything a notification of one audit event names."""

    kind: str
    event: AuditEvent
    challenge: Challenge
    track: Track
    team: Team
    submission: Submission
    run: Run | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def context_of(session: Session, event: AuditEvent, kind: str) -> Context | None:
    """Resolve the event's run or submission to its submission, track, challenge and team (None if gone)."""
    details = dict(event.details or {})
    run: Run | None = None
    if event.target_type == "run":
        run_id = _int(event.target_id)
        run = session.get(Run, run_id) if run_id else None
        sub = session.get(Submission, run.submission_id) if run else None
    elif event.target_type == "submission":
        sub_id = _int(event.target_id)
        sub = session.get(Submission, sub_id) if sub_id else None
    else:
        return None
    if sub is None:
        return None
    track = session.get(Track, sub.track_id)
    team = session.get(Team, sub.team_id)
    if track is None or team is None:
        return None
    challenge = session.get(Challenge, track.challenge_id)
    if challenge is None:
        return None
    reason = str(details.get("reason") or "")
    keep = {"run.finished": ("cases", "failed"), "run.failed": ("cases", "failed"),
            "run.stuck": ("index", "deliveries"), "submission.excluded": (),
            "budget.warning": ("resource", "level", "used_s", "budget_s", "percent")}[kind]
    extra = {k: details[k] for k in keep if k in details}
    if kind == "run.stuck" and "index" in extra:
        extra = {"shard": extra["index"], **({"deliveries": extra["deliveries"]} if "deliveries" in extra else {})}
    return Context(kind=kind, event=event, challenge=challenge, track=track, team=team, submission=sub, run=run,
                   reason=reason, details=extra)


def _iso(value: Any) -> str | None:
    from api.params import as_utc

    aware = as_utc(value)
    return aware.isoformat() if aware is not None else None


def webhook_body(ctx: Context) -> dict[str, Any]:
    """The JSON body of a webhook delivery (docs/notifications.md documents the schema)."""
    sub, run = ctx.submission, ctx.run
    scores = None
    if ctx.kind == "run.finished":
        scores = {"dsc": sub.dsc, "nsd": sub.nsd, "runtime_s": sub.runtime_s}
    return {
        "schema": SCHEMA,
        "event_id": ctx.event.id,
        "type": ctx.kind,
        "occurred_at": _iso(ctx.event.at),
        "challenge": {"slug": ctx.challenge.slug, "title": ctx.challenge.title},
        "track": {"slug": ctx.track.slug, "title": ctx.track.title, "kind": ctx.track.kind.value},
        "team": {"id": ctx.team.id, "name": ctx.team.name},
        "submission": {"id": sub.id, "label": sub.label, "state": sub.state.value, "excluded": bool(sub.excluded)},
        "run": ({"id": run.id, "attempt": run.attempt, "state": run.state.value} if run is not None else None),
        "reason": ctx.reason,
        "scores": scores,
        "details": ctx.details,
    }


def _one_line(text: str, limit: int = 120) -> str:
    """Header-safe: no control characters or line breaks (no header injection), bounded."""
    text = _CONTROL.sub(" ", text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def email_message(ctx: Context, member: Member, *, base_url: str) -> tuple[str, str]:
    """(subject, plain-text body) of the e-mail to ``member`` about ``ctx``. Names the challenge, track, submission
    and reason; scores only where the track's feedback policy shows them to the team. Nothing secret."""
    sub, run, title = ctx.submission, ctx.run, _TITLES[ctx.kind]
    label = f' "{_one_line(sub.label, 60)}"' if sub.label else ""
    subject = _one_line(f"[SegArena] {ctx.challenge.title} / {ctx.track.title}: submission #{sub.id}{label} {title}",
                        200)
    lines = [f"Hello {_one_line(member.name, 100)},", "",
             f"{title[0].upper()}{title[1:]}: submission #{sub.id}{label} of team {ctx.team.name}.", "",
             f"Challenge: {ctx.challenge.title} ({ctx.challenge.slug})",
             f"Track:     {ctx.track.title} ({ctx.track.slug})",
             f"Submission: #{sub.id}{label}"]
    if run is not None:
        lines.append(f"Run:       attempt {run.attempt} (run {run.id})")
    if ctx.kind == "run.stuck":
        lines += ["", "The execution host running part of your run stopped responding; that part was put back in "
                      "the queue and will run again on another host. You need to do nothing."]
    if ctx.kind == "budget.warning":
        lines += ["", f"Your team's compute on this track reached {ctx.details.get('level')} % of its "
                      f"{ctx.details.get('resource')} budget; see it with: segarena whoami"]
    if ctx.reason:
        lines += ["", f"Reason: {ctx.reason}"]
    if ctx.kind == "run.finished" and ctx.track.feedback != Feedback.none and sub.dsc is not None:
        lines += ["", f"DSC {sub.dsc:.4f}  NSD {(sub.nsd or 0):.4f}  runtime {(sub.runtime_s or 0):.1f} s"]
    lines += ["", f"Details: segarena status {sub.id}   (server: {base_url})", "",
              "--", f"You receive this because you are a member of team {ctx.team.name}.",
              "To stop these e-mails: segarena notifications --email off"]
    return subject, "\n".join(lines) + "\n"
