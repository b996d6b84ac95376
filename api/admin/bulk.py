"""Bulk re-run of a track (organizers): every team's latest or best submission again, as new attempts.

``POST /api/challenges/{challenge}/tracks/{track}/rerun`` with ``{"which": "latest"|"best", "dry_run": true}``
plans and lists; ``dry_run: false`` queues. One plan (:func:`plan_rerun`) serves both, so a dry run lists exactly
what the real one then queues; the real call may pass ``confirm`` (the submission ids the dry run listed, as the
CLI does after asking) and is refused (409 ``plan_changed``) when the plan has changed since.

- ``latest``: per team (and, for an organizer team, per baseline/non-baseline), the newest submission that was not
  cancelled, created before the board's freeze; ``best``: per team the submission the board's ``best`` row policy
  picks (highest DSC, then NSD, then runtime) among succeeded, non-excluded ones (:mod:`api.leaderboard.service`).
- Skipped, listed with the reason: a submission with an attempt still active, an archive deleted by retention, an
  excluded submission (``latest``).
- Each queued item is :func:`api.submissions.service.rerun_submission` (a new attempt through
  :func:`api.lifecycle.new_attempt`, ``submission.rerun`` audited, shards sent). Fair order across teams stays the
  shard claim's (``api.execution.shards._candidates``: the team whose latest shard was claimed least recently first):
  the new attempts keep their teams, so a bulk re-run interleaves with other teams' runs instead of going ahead
  of them; the plan is queued round-robin by team in the meantime.
- Audit: one ``track.rerun`` event (target the track) with ``which``, ``dry_run``, the queued and the skipped ids.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.audit import record
from api.deps import OrganizerDep, SessionDep, SettingsDep
from api.errors import ApiError
from api.lifecycle import ACTIVE_RUN_STATES, latest_runs
from api.models import Member, RowPolicy, Run, Submission, SubmissionState, Team, Track
from api.params import SlugPath, as_utc

__all__ = ["RerunRequest", "Planned", "plan_rerun", "rerun_track", "WHICH", "router"]

log = logging.getLogger(__name__)

WHICH = ("latest", "best")
MAX_CONFIRM = 10000


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    which: Literal["latest", "best"] = Field(description="latest: each team's newest submission that was not "
                                             "cancelled; best: each team's best-scoring succeeded one.")
    dry_run: bool = Field(default=True, description="true (the default): list what would run and queue nothing.")
    confirm: list[int] | None = Field(default=None, max_length=MAX_CONFIRM,
                                      description="The submission ids a dry run listed: the real run is refused "
                                                  "(409 plan_changed) unless it would queue exactly these.")


@dataclass
class Planned:
    submission_id: int
    team_id: int
    team: str
    label: str
    state: str
    created_at: str | None
    dsc: float | None
    nsd: float | None
    attempt: int  # the latest attempt so far (the re-run is attempt + 1)
    action: str  # "rerun" or "skip"
    reason: str = ""
    run_id: int | None = None  # the new attempt's run (real run only)
    new_attempt: int | None = None
    note: str | None = None  # the enqueue note, when the broker was unreachable (the reaper sends it later)


def _candidates(session: Session, track: Track, which: str) -> list[Submission]:
    from api.leaderboard.service import _candidates as board_candidates
    from api.leaderboard.service import _pick, freeze_cutoff

    if which == "best":
        return [s for s, _ in _pick(board_candidates(session, track, organizer=False), RowPolicy.best)]
    q = select(Submission).where(Submission.track_id == track.id, Submission.state != SubmissionState.cancelled)
    cutoff = freeze_cutoff(track)
    if cutoff is not None:
        q = q.where(Submission.created_at < cutoff)
    newest: dict[tuple[int, bool], Submission] = {}
    for sub in session.scalars(q.order_by(Submission.created_at, Submission.id)):
        newest[(sub.team_id, bool(sub.is_baseline))] = sub
    return list(newest.values())


def _round_robin(subs: list[Submission]) -> list[Submission]:
    """Interleave teams (oldest submission first within a team), teams by name order of their first item."""
    by_team: dict[int, list[Submission]] = {}
    for sub in sorted(subs, key=lambda s: (as_utc(s.created_at), s.id)):
        by_team.setdefault(sub.team_id, []).append(sub)
    out: list[Submission] = []
    queues = list(by_team.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def _iso(dt: datetime | None) -> str | None:
    aware = as_utc(dt)
    return aware.isoformat(timespec="seconds") if aware is not None else None


def plan_rerun(session: Session, track: Track, which: str) -> list[Planned]:
    """What a bulk re-run of ``track`` would do, item by item (queued order), skips with their reasons."""
    if which not in WHICH:
        raise ApiError(422, "invalid_request", f"which: {which!r} is not one of {', '.join(WHICH)}")
    subs = _round_robin(_candidates(session, track, which))
    ids = [s.id for s in subs]
    runs = latest_runs(session, ids)
    active = set(session.scalars(select(Run.submission_id).where(Run.submission_id.in_(ids),
                                                                 Run.state.in_(ACTIVE_RUN_STATES)))) if ids else set()
    names = dict(session.execute(select(Team.id, Team.name).where(Team.id.in_({s.team_id for s in subs}))).all()) \
        if subs else {}
    out: list[Planned] = []
    for sub in subs:
        run = runs.get(sub.id)
        reason = ""
        if sub.id in active:
            reason = (f"attempt {run.attempt if run else '?'} is still {run.state.value if run else 'active'}; wait "
                      "for it to finish (or cancel it)")
        elif sub.archive_deleted_at is not None:
            reason = (f"its image archive was deleted at {_iso(sub.archive_deleted_at)} (retention); the team must "
                      "upload the image again")
        elif sub.excluded:
            reason = f"excluded from ranking ({sub.exclusion_reason or 'no reason given'}); re-run it on its own if needed"
        out.append(Planned(submission_id=sub.id, team_id=sub.team_id, team=str(names.get(sub.team_id, sub.team_id)),
                           label=sub.label, state=sub.state.value, created_at=_iso(sub.created_at), dsc=sub.dsc,
                           nsd=sub.nsd, attempt=run.attempt if run else 0, action="skip" if reason else "rerun",
                           reason=reason))
    return out


def rerun_track(*, session: Session, settings: Any, actor: Member, track: Track, which: str, dry_run: bool,
                confirm: list[int] | None = None) -> dict[str, Any]:
    """Plan (and unless ``dry_run``, queue) a bulk re-run of ``track``; the answer of the API route."""
    from api.submissions.service import rerun_submission

    items = plan_rerun(session, track, which)
    planned_ids = [p.submission_id for p in items if p.action == "rerun"]
    if not dry_run and confirm is not None and sorted(confirm) != sorted(planned_ids):
        extra = sorted(set(planned_ids) - set(confirm))
        gone = sorted(set(confirm) - set(planned_ids))
        raise ApiError(409, "plan_changed",
                       f"the re-run of track {track.slug!r} would now queue submissions {planned_ids}, not the "
                       f"confirmed {sorted(confirm)} (new: {extra or 'none'}, no longer: {gone or 'none'}); "
                       "run the dry run again and confirm its list", planned=planned_ids)
    track_id, slug = track.id, track.slug
    if not dry_run:
        for p in items:
            if p.action != "rerun":
                continue
            try:
                sub, note = rerun_submission(session=session, settings=settings, actor=actor,
                                             submission_id=p.submission_id)
            except ApiError as exc:  # it changed since the plan (a run started, an archive expired)
                session.rollback()
                p.action, p.reason = "skip", exc.message
                continue
            run = latest_runs(session, [sub.id]).get(sub.id)
            p.run_id, p.new_attempt, p.note = (run.id if run else None), (run.attempt if run else None), note
    queued = [p for p in items if p.action == "rerun"]
    skipped = [p for p in items if p.action == "skip"]
    record(session, actor=actor, action="track.rerun", target_type="track", target_id=track_id, which=which,
           dry_run=dry_run, queued=[p.submission_id for p in queued],
           skipped=[{"submission_id": p.submission_id, "reason": p.reason[:300]} for p in skipped])
    session.commit()
    log.info("track %s re-run (%s, dry run %s): %d queued, %d skipped", track_id, which, dry_run, len(queued),
             len(skipped))
    return {"track": slug, "which": which, "dry_run": dry_run, "queued": [asdict(p) for p in queued],
            "skipped": [asdict(p) for p in skipped]}


# --------------------------------------------------------------------------------------------- route
router = APIRouter(prefix="/api/challenges", tags=["organizers"])


@router.post("/{challenge}/tracks/{track}/rerun",
             summary="Re-run every team's latest or best submission of a track as new attempts (dry run by default)")
def rerun_track_route(challenge: SlugPath, track: SlugPath, body: RerunRequest, organizer: OrganizerDep,
                      session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    from api.challenges.service import get_track

    row = get_track(session=session, challenge=challenge, track=track)
    return rerun_track(session=session, settings=settings, actor=organizer, track=row, which=body.which,
                       dry_run=body.dry_run, confirm=body.confirm)
