"""Sign-up, approval, the one-time token claim, team join codes, challenge terms, team-size limits, quota left.

Token hand-over (docs/participants.md): the requester gets a random claim code once, in the answer to the sign-up
request; only its SHA-256 is stored. Approval creates the member (and the team, if new) but no token: nobody, the
organizer included, ever sees the participant's token except the participant. The first claim after approval
(within ``SEGARENA_SIGNUP_CLAIM_DAYS``) mints the member's first API token with the platform's token machinery
(:mod:`api.auth.tokens`: random, shown once, stored as SHA-256) and returns it; the claim code is spent by a
conditional update, so two concurrent claims cannot both get a token.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.audit import record
from api.auth.tokens import hash_token, new_token
from api.challenges.service import get_challenge, is_open
from api.errors import ApiError
from api.models import (
    ApiToken,
    Challenge,
    Member,
    Role,
    Signup,
    SignupState,
    Team,
    TermsAcceptance,
    Track,
    Visibility,
    utcnow,
)
from api.params import as_utc
from api.participants import schemas
from api.settings import Settings

__all__ = ["terms_sha256", "participation", "update_participation", "register", "claim", "list_signups",
           "signup_view", "approve", "refuse", "join_code", "terms_for", "accept_terms", "require_terms",
           "team_size", "track_quotas", "my_participation", "CLAIM_PAGE"]

log = logging.getLogger(__name__)

CLAIM_PAGE = "/signup/claim"
CLAIM_PREFIX = "sac_"
_REGISTER_LOCK = threading.Lock()  # the per-address count and the insert, atomic within this process


def terms_sha256(text: str) -> str:
    """What an acceptance records: the SHA-256 of the terms text (UTF-8)."""
    return hashlib.sha256((text or "").encode()).hexdigest()


def _rowcount(result: Any) -> int:
    """Rows a conditional UPDATE changed (0: someone else changed the row first)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _claim_hash(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


def _hint_url(settings: Settings, path: str) -> str:
    return settings.public_base_url.rstrip("/") + path


# --------------------------------------------------------------------------- challenge settings


def participation(challenge: Challenge) -> schemas.Participation:
    """A challenge's participation settings as everyone may read them."""
    return schemas.Participation(challenge=challenge.slug, signup_open=bool(challenge.signup_open),
                                 terms_required=bool((challenge.terms or "").strip()),
                                 terms_sha256=terms_sha256(challenge.terms or ""), max_team_size=challenge.max_team_size)


def update_participation(*, session: Session, actor: Member, challenge: str,
                         body: schemas.ParticipationUpdate) -> Challenge:
    """Change whether sign-up is open, the terms and the team-size limit (organizers; null max_team_size: none)."""
    row = get_challenge(session=session, slug=challenge)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("signup_open") is None:
        changes.pop("signup_open", None)
    if "terms" in changes and changes["terms"] is None:
        changes["terms"] = ""
    before = {k: getattr(row, k) for k in changes}
    for k, v in changes.items():
        setattr(row, k, v.strip() if k == "terms" and isinstance(v, str) else v)
    record(session, actor=actor, action="challenge.participation", target_type="challenge", target_id=row.id,
           changes={k: (terms_sha256(v) if k == "terms" else v) for k, v in changes.items()},
           before={k: (terms_sha256(v) if k == "terms" else v) for k, v in before.items()})
    session.commit()
    return row


def team_size(session: Session, team_id: int) -> int:
    """Members of a team (execution-host identities never belong to teams)."""
    return int(session.scalar(select(func.count()).select_from(Member)
                              .where(Member.team_id == team_id, Member.role != Role.worker)) or 0)


def _check_team_size(session: Session, challenge: Challenge, team: Team, *, adding: int = 1) -> None:
    limit = challenge.max_team_size
    if limit is None:
        return
    have = team_size(session, team.id)
    if have + adding > limit:
        raise ApiError(409, "team_full",
                       f"team {team.name!r} has {have} member{'s' if have != 1 else ''} and challenge "
                       f"{challenge.slug!r} allows at most {limit} per team (max_team_size); join another team, "
                       "create a new one, or ask the organizers", team_id=team.id, members=have, max_team_size=limit)


# --------------------------------------------------------------------------- sign-up (anonymous)


def _team_name_taken(session: Session, name: str) -> bool:
    low = name.lower()
    if session.scalar(select(Team.id).where(func.lower(Team.name) == low)) is not None:
        return True
    return session.scalar(select(Signup.id).where(Signup.state == SignupState.pending,
                                                  func.lower(Signup.team_name) == low)) is not None


def register(*, session: Session, settings: Settings, challenge: str, body: schemas.SignupCreate,
             client: str) -> schemas.SignupCreated:
    """Record an anonymous sign-up request (rate-limited per address) and return its claim code, once."""
    ch = get_challenge(session=session, slug=challenge)
    if not ch.signup_open:
        raise ApiError(403, "signup_closed", f"challenge {ch.slug!r} takes no sign-up requests at the moment; "
                       "ask its organizers to add you")
    now = utcnow()
    with _REGISTER_LOCK:
        limit = settings.signup_per_hour
        recent = list(session.scalars(select(Signup.created_at).where(
            Signup.client == client, Signup.created_at >= now - timedelta(hours=1)).order_by(Signup.created_at)))
        if limit == 0 or len(recent) >= limit:
            retry = (as_utc(recent[0]) + timedelta(hours=1)) if recent and limit else now + timedelta(hours=1)
            raise ApiError(429, "rate_limited",
                           f"too many sign-up requests from your address: at most {limit} per hour "
                           "(SEGARENA_SIGNUP_PER_HOUR); try again after "
                           f"{retry.isoformat(timespec='seconds')}", retry_at=retry.isoformat(timespec="seconds"))
        pending = session.scalar(select(func.count()).select_from(Signup).where(
            Signup.challenge_id == ch.id, Signup.state == SignupState.pending)) or 0
        if pending >= settings.signup_max_pending:
            raise ApiError(429, "rate_limited", f"challenge {ch.slug!r} has {pending} sign-up requests waiting for "
                           "the organizers' decision, the most it holds; try again later")
        if session.scalar(select(Signup.id).where(Signup.challenge_id == ch.id, Signup.state == SignupState.pending,
                                                  func.lower(Signup.email) == body.email.lower())) is not None:
            raise ApiError(409, "conflict", f"a sign-up request for {body.email} is already waiting for the "
                           f"organizers of {ch.slug!r}; use the claim code you got then to see its state")
        team: Team | None = None
        if body.join_code:
            team = session.scalar(select(Team).where(Team.join_code == body.join_code))
            if team is None:
                raise ApiError(422, "invalid_request", "join_code: no team has this join code (codes change when a "
                               "member rotates them); ask a member of your team for the current one")
            _check_team_size(session, ch, team)
            label = team.name
        else:
            if _team_name_taken(session, body.team_name):
                raise ApiError(409, "conflict", f"team_name: a team named {body.team_name!r} exists or is being "
                               "requested; choose another name, or ask that team's members for its join code")
            label = body.team_name
        code = CLAIM_PREFIX + secrets.token_urlsafe(32)
        row = Signup(challenge_id=ch.id, name=body.name, email=body.email, affiliation=body.affiliation,
                     team_name="" if team else body.team_name, team_id=team.id if team else None,
                     state=SignupState.pending, claim_hash=_claim_hash(code), client=client, created_at=now)
        session.add(row)
        session.flush()
        record(session, actor=None, actor_label=f"anonymous:{client}", action="signup.create", target_type="signup",
               target_id=row.id, challenge_id=ch.id, team_id=row.team_id, team_name=row.team_name)
        session.commit()
    log.info("sign-up request %s for %s from %s", row.id, ch.slug, client)
    return schemas.SignupCreated(
        id=row.id, challenge=ch.slug, state=row.state, team=label, claim_code=code,
        claim_url=_hint_url(settings, f"{CLAIM_PAGE}#code={code}"),
        message=("your request waits for the organizers' decision. Keep the claim code: it is shown only now. Once "
                 "approved, exchange it once for your API token: on the claim page, or `segarena signup claim CODE`, "
                 f"within {settings.signup_claim_days:g} days of the approval"))


def claim(*, session: Session, settings: Settings, code: str) -> schemas.ClaimResult:
    """The state of the sign-up request behind ``code``; after approval, the first call mints and returns the
    member's API token (once)."""
    row = session.scalar(select(Signup).where(Signup.claim_hash == _claim_hash(code)))
    if row is None:
        raise ApiError(404, "not_found", "no sign-up request has this claim code; check that you copied all of it "
                       "(it starts with sac_)")
    ch = session.get(Challenge, row.challenge_id)
    team = session.get(Team, row.team_id) if row.team_id else None
    base = dict(challenge=ch.slug if ch else "", team=team.name if team else row.team_name, state=row.state)
    if row.state == SignupState.pending:
        return schemas.ClaimResult(**base, message="waiting for the organizers' decision; come back later")
    if row.state == SignupState.refused:
        return schemas.ClaimResult(**base, reason=row.reason,
                                   message="the organizers refused this request" + (f": {row.reason}" if row.reason else ""))
    now = utcnow()
    ids = dict(member_id=row.member_id, team_id=row.team_id)
    if row.claimed_at is not None:
        when = as_utc(row.claimed_at).isoformat(timespec="seconds")
        raise ApiError(410, "already_claimed",
                       f"the token of this sign-up was already claimed at {when}; "
                       "it is shown only once. If that was not you, ask the organizers to revoke it and issue you a "
                       "new one", **ids)
    expires = as_utc(row.claim_expires_at)
    if expires is not None and now >= expires:
        raise ApiError(410, "claim_expired",
                       f"this claim code expired at {expires.isoformat(timespec='seconds')} "
                       f"({settings.signup_claim_days:g} days after the approval); ask the organizers for a token "
                       f"(segarena admin token new {row.member_id})", **ids)
    member = session.get(Member, row.member_id) if row.member_id else None
    if member is None:
        raise ApiError(410, "claim_expired", "the member of this sign-up no longer exists; ask the organizers")
    spent = session.execute(update(Signup).where(Signup.id == row.id, Signup.claimed_at.is_(None),
                                                 Signup.state == SignupState.approved).values(claimed_at=now))
    if _rowcount(spent) != 1:
        session.rollback()
        raise ApiError(410, "already_claimed", "the token of this sign-up was already claimed; it is shown only once",
                       **ids)
    token = new_token()
    tok = ApiToken(member_id=member.id, token_hash=hash_token(token), prefix=token[:8], label="sign-up claim")
    session.add(tok)
    session.flush()
    session.execute(update(Signup).where(Signup.id == row.id).values(token_id=tok.id))
    record(session, actor=member, action="signup.claim", target_type="signup", target_id=row.id, token_id=tok.id)
    session.commit()
    return schemas.ClaimResult(**base, member_id=member.id, team_id=member.team_id, token=token, token_id=tok.id,
                               message="approved: this is your API token, shown only now. Store it (segarena "
                                       "configure --token ...) and sign in to the pages with it")


# --------------------------------------------------------------------------- organizers


def signup_view(session: Session, row: Signup) -> schemas.SignupOrganizerView:
    ch = session.get(Challenge, row.challenge_id)
    team = session.get(Team, row.team_id) if row.team_id else None
    existing = list(session.scalars(select(Member.id).where(func.lower(Member.email) == row.email.lower(),
                                                            Member.id != (row.member_id or 0))))
    return schemas.SignupOrganizerView(
        id=row.id, challenge=ch.slug if ch else "", name=row.name, email=row.email, affiliation=row.affiliation,
        team_name=row.team_name, team_id=row.team_id, team=team.name if team else row.team_name,
        team_members=team_size(session, team.id) if team else 0, state=row.state, reason=row.reason,
        client=row.client, created_at=as_utc(row.created_at), decided_at=as_utc(row.decided_at),
        decided_by=row.decided_by, member_id=row.member_id, claim_expires_at=as_utc(row.claim_expires_at),
        claimed_at=as_utc(row.claimed_at), existing_member_ids=existing)


def list_signups(*, session: Session, challenge: str | None = None, state: SignupState | None = None,
                 limit: int = 200) -> list[schemas.SignupOrganizerView]:
    """Sign-up requests, oldest pending first (organizers)."""
    stmt = select(Signup)
    if challenge is not None:
        stmt = stmt.where(Signup.challenge_id == get_challenge(session=session, slug=challenge).id)
    if state is not None:
        stmt = stmt.where(Signup.state == state)
    rows = session.scalars(stmt.order_by(Signup.id).limit(limit))
    return [signup_view(session, r) for r in rows]


def _pending(session: Session, signup_id: int) -> Signup:
    row = session.get(Signup, signup_id)
    if row is None:
        raise ApiError(404, "not_found", f"sign-up request {signup_id} does not exist; segarena admin signups list")
    if row.state != SignupState.pending:
        raise ApiError(409, "already_decided", f"sign-up request {signup_id} was already {row.state.value}"
                       + (f" by {row.decided_by}" if row.decided_by else ""), state=row.state.value)
    return row


def approve(*, session: Session, settings: Settings, actor: Member, signup_id: int) -> schemas.SignupOrganizerView:
    """Approve a pending request: create the team (if new) and the member; no token (the requester claims it)."""
    from api.submissions.service import team_lock

    row = _pending(session, signup_id)
    ch = session.get(Challenge, row.challenge_id)
    assert ch is not None  # the signup cascades with its challenge
    now = utcnow()
    try:
        if row.team_id is not None:
            team = session.get(Team, row.team_id)
            if team is None:
                raise ApiError(409, "conflict", "the team this request wants to join no longer exists; refuse it")
            with team_lock(session, settings, team.id):  # concurrent approvals into one team see each other
                _check_team_size(session, ch, team)
                member = _approve(session, settings, actor, row, team, now)
        else:
            if session.scalar(select(Team.id).where(func.lower(Team.name) == row.team_name.lower())) is not None:
                raise ApiError(409, "conflict", f"a team named {row.team_name!r} was created since this request; "
                               "refuse it with a reason (the requester can sign up again with another name)")
            team = Team(name=row.team_name, affiliation=row.affiliation, join_code=secrets.token_urlsafe(12))
            session.add(team)
            session.flush()
            record(session, actor=actor, action="team.create", target_type="team", target_id=team.id,
                   name=team.name, signup_id=row.id)
            member = _approve(session, settings, actor, row, team, now)
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "conflict", f"sign-up request {signup_id} changed while it was approved; look again "
                       "(segarena admin signups list)") from None
    log.info("sign-up %s approved: member %s of team %s", row.id, member.id, member.team_id)
    session.refresh(row)
    return signup_view(session, row)


def _approve(session: Session, settings: Settings, actor: Member, row: Signup, team: Team, now: datetime) -> Member:
    member = Member(team_id=team.id, name=row.name, email=row.email, role=Role.participant)
    session.add(member)
    session.flush()
    done = session.execute(update(Signup).where(Signup.id == row.id, Signup.state == SignupState.pending).values(
        state=SignupState.approved, decided_at=now, decided_by=f"{actor.name}#{actor.id}", member_id=member.id,
        team_id=team.id, claim_expires_at=now + timedelta(days=settings.signup_claim_days)))
    if _rowcount(done) != 1:
        session.rollback()
        raise ApiError(409, "already_decided", f"sign-up request {row.id} was decided meanwhile by someone else")
    record(session, actor=actor, action="member.create", target_type="member", target_id=member.id, team_id=team.id,
           role=Role.participant.value, signup_id=row.id)
    record(session, actor=actor, action="signup.approve", target_type="signup", target_id=row.id,
           member_id=member.id, team_id=team.id, challenge_id=row.challenge_id)
    session.commit()
    return member


def refuse(*, session: Session, actor: Member, signup_id: int, reason: str) -> schemas.SignupOrganizerView:
    """Refuse a pending request with a reason the requester sees when claiming."""
    row = _pending(session, signup_id)
    reason = reason.strip()
    if not reason:
        raise ApiError(422, "invalid_request", "reason: say why (the requester reads it)")
    done = session.execute(update(Signup).where(Signup.id == row.id, Signup.state == SignupState.pending).values(
        state=SignupState.refused, reason=reason, decided_at=utcnow(), decided_by=f"{actor.name}#{actor.id}"))
    if _rowcount(done) != 1:
        session.rollback()
        raise ApiError(409, "already_decided", f"sign-up request {signup_id} was decided meanwhile by someone else")
    record(session, actor=actor, action="signup.refuse", target_type="signup", target_id=row.id, reason=reason)
    session.commit()
    session.refresh(row)
    return signup_view(session, row)


# --------------------------------------------------------------------------- team join codes


def join_code(*, session: Session, member: Member, rotate: bool = False) -> schemas.JoinCode:
    """The caller's team's join code (made on first use); ``rotate`` replaces it (the old one stops working)."""
    if member.team_id is None:
        raise ApiError(403, "no_team", "you are not a member of a team; join codes belong to teams")
    team = session.get(Team, member.team_id)
    assert team is not None
    if rotate or not team.join_code:
        old = bool(team.join_code)
        team.join_code = secrets.token_urlsafe(12)
        if rotate:
            record(session, actor=member, action="team.join_code.rotate", target_type="team", target_id=team.id,
                   had_code=old)
        session.commit()
    return schemas.JoinCode(team_id=team.id, team=team.name, join_code=team.join_code or "",
                            members=team_size(session, team.id),
                            message=("a newcomer signs up with this code to ask to join your team; an organizer "
                                     "approves each request. Rotate it if it leaked (pending requests stay)"))


# --------------------------------------------------------------------------- terms


def _accepted_at(session: Session, member: Member, ch: Challenge) -> datetime | None:
    at = session.scalar(select(TermsAcceptance.accepted_at).where(
        TermsAcceptance.member_id == member.id, TermsAcceptance.challenge_id == ch.id,
        TermsAcceptance.terms_sha256 == terms_sha256(ch.terms or "")))
    return as_utc(at)


def terms_for(*, session: Session, challenge: str, member: Member | None) -> schemas.TermsPublic:
    """A challenge's terms, and whether ``member`` accepted them as they read now."""
    ch = get_challenge(session=session, slug=challenge)
    return schemas.TermsPublic(challenge=ch.slug, required=bool((ch.terms or "").strip()), terms=ch.terms or "",
                               sha256=terms_sha256(ch.terms or ""),
                               accepted_at=_accepted_at(session, member, ch) if member is not None else None)


def accept_terms(*, session: Session, member: Member, challenge: str, sha256: str | None = None) -> schemas.TermsAccepted:
    """Record that ``member`` accepts the challenge's terms as they read now (idempotent)."""
    ch = get_challenge(session=session, slug=challenge)
    if not (ch.terms or "").strip():
        raise ApiError(409, "no_terms", f"challenge {ch.slug!r} has no terms to accept; you can submit")
    digest = terms_sha256(ch.terms)
    if sha256 is not None and sha256 != digest:
        raise ApiError(409, "terms_changed", f"the terms of {ch.slug!r} changed since you read them; read them again "
                       f"(GET /api/challenges/{ch.slug}/terms) and accept the current text", sha256=digest)
    at = _accepted_at(session, member, ch)
    if at is None:
        at = utcnow()
        session.add(TermsAcceptance(member_id=member.id, challenge_id=ch.id, terms_sha256=digest, accepted_at=at))
        record(session, actor=member, action="terms.accept", target_type="challenge", target_id=ch.id, sha256=digest)
        try:
            session.commit()
        except IntegrityError:  # accepted concurrently: the same outcome
            session.rollback()
            at = _accepted_at(session, member, ch) or at
    return schemas.TermsAccepted(challenge=ch.slug, sha256=digest, accepted_at=at,
                                 message=f"you accepted the terms of {ch.slug!r}; you can submit")


def require_terms(session: Session, member: Member, challenge: Challenge) -> None:
    """403 ``terms_not_accepted`` naming how to accept, when the challenge has terms ``member`` has not accepted as
    they read now (organizers submit baselines without)."""
    if member.role == Role.organizer or not (challenge.terms or "").strip():
        return
    if _accepted_at(session, member, challenge) is not None:
        return
    earlier = session.scalar(select(func.count()).select_from(TermsAcceptance).where(
        TermsAcceptance.member_id == member.id, TermsAcceptance.challenge_id == challenge.id)) or 0
    what = ("changed since you accepted them; accept the current text" if earlier
            else "must be accepted before your first submission")
    raise ApiError(403, "terms_not_accepted",
                   f"the terms of challenge {challenge.slug!r} {what}: read them on the page "
                   f"/challenges/{challenge.slug}/terms and press Accept, or run `segarena accept-terms "
                   f"--challenge {challenge.slug}` (POST /api/challenges/{challenge.slug}/terms/accept)",
                   challenge=challenge.slug)


# --------------------------------------------------------------------------- quota left


def track_quotas(*, session: Session, settings: Settings, team_id: int,
                 challenge: str | None = None) -> list[schemas.TrackQuota]:
    """Per visible track: the team's quota, what counts toward it now, what is left and when the next slot frees."""
    from api.submissions.service import count_toward_quota, open_uploads

    now = utcnow()
    stmt = (select(Track, Challenge.slug).join(Challenge, Challenge.id == Track.challenge_id)
            .where(Track.visibility != Visibility.hidden).order_by(Challenge.slug, Track.id))
    if challenge is not None:
        stmt = stmt.where(Challenge.slug == challenge)
    out = []
    for track, slug in session.execute(stmt).all():
        counted = count_toward_quota(session, team_id=team_id, track_id=track.id, now=now,
                                     free_cancels=settings.max_free_cancels_per_day)
        pending = open_uploads(session, team_id=team_id, track_id=track.id, now=now,
                               stale_after_s=settings.upload_stale_after_s)
        frees = (as_utc(counted[0].created_at) + timedelta(days=1)) if counted else None
        out.append(schemas.TrackQuota(challenge=slug, track=track.slug, title=track.title,
                                      quota_per_day=track.quota_per_day, used=len(counted), open_uploads=len(pending),
                                      left=max(0, track.quota_per_day - len(counted) - len(pending)),
                                      next_slot_at=frees, is_open=is_open(track, now)))
    return out


def my_participation(*, session: Session, settings: Settings, member: Member,
                     challenge: str | None = None) -> schemas.MyParticipation:
    """What a signed-in participant needs: its team, per challenge the terms state and team limit, and quotas."""
    team = session.get(Team, member.team_id) if member.team_id else None
    stmt = select(Challenge).order_by(Challenge.slug)
    if challenge is not None:
        stmt = stmt.where(Challenge.slug == get_challenge(session=session, slug=challenge).slug)
    chs = []
    for ch in session.scalars(stmt):
        required = bool((ch.terms or "").strip())
        accepted = _accepted_at(session, member, ch) if required else None
        chs.append({"challenge": ch.slug, "title": ch.title, "terms_required": required,
                    "terms_accepted_at": accepted.isoformat() if accepted else None,
                    "max_team_size": ch.max_team_size, "team_members": team_size(session, team.id) if team else 0})
    quotas = track_quotas(session=session, settings=settings, team_id=team.id, challenge=challenge) if team else []
    return schemas.MyParticipation(member_id=member.id, team_id=team.id if team else None,
                                   team=team.name if team else None, challenges=chs, quotas=quotas)
