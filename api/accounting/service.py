"""Compute accounting per team and track, budgets, their warnings and the refusal past a budget.

What is counted, per team and track, over every attempt of every submission (docs/accounting.md):

- ``cpu_s``: container CPU-seconds, the sum of the case results' ``cpu_s`` (the worker reads the container's cgroup
  CPU usage when the case ends; a case without a measurement counts 0).
- ``wall_s``: wall-seconds a case held an execution host, the case results' ``wall_s`` (download of the input,
  container start-up and run; the single-host path records none: its ``runtime_s`` counts instead). Not the
  charged runtime of the ranking: a timed-out case's ``runtime_s`` is the time limit, its ``wall_s`` what it took.
- ``gpu_s``: GPU-seconds, the ``wall_s`` of cases of runs on a GPU-kind queue (``SEGARENA_QUEUES``) times the GPUs
  the container was given (the ``device_requests`` the run recorded; else the track's ``gpus``). 0 on CPU queues.

Budgets (track settings ``budget_cpu_s`` and ``budget_gpu_s``, per team; null: none) count the team's own runs
only: a re-run an organizer asked for (``requested_by = rerun:<organizer id>``, single or bulk) is reported apart
(``rerun_*``) and never charged to the team. When a run ends (:func:`record_budget_warnings`, called by the scorer
in the transaction that finishes the run) each threshold of :data:`THRESHOLDS` the team's usage has reached gets
one ``budget.warning`` audit event (``target_type="run"``: the notification outbox delivers it to the challenge's
webhooks and the team's e-mail), at most once per (team, track, resource, level, budget): raising a budget warns
again at the new levels. A team whose usage reached a budget may not submit to the track (:func:`check_budget`,
403 ``budget_exhausted``) until an organizer raises or removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.audit import record
from api.errors import ApiError
from api.models import AuditEvent, CaseResult, Challenge, Run, Submission, Team, Track

__all__ = ["THRESHOLDS", "RESOURCES", "WARNING_ACTION", "Usage", "usage", "team_usage", "check_budget",
           "record_budget_warnings", "gpu_queues", "gpus_of", "RERUN_PREFIX", "team_tracks_usage", "budget_message"]

log = logging.getLogger(__name__)

#: warning levels, percent of a budget
THRESHOLDS: tuple[int, ...] = (70, 90, 100)
#: resource -> (track column of its budget, words for messages)
RESOURCES: dict[str, tuple[str, str]] = {"cpu": ("budget_cpu_s", "CPU-seconds"), "gpu": ("budget_gpu_s", "GPU-seconds")}
WARNING_ACTION = "budget.warning"
#: ``Run.requested_by`` of an organizer's re-run (api/submissions/service.py rerun_submission)
RERUN_PREFIX = "rerun:"


@dataclass
class Usage:
    """One team's compute on one track (seconds), with the track's budgets."""

    team_id: int
    team: str
    track_id: int
    track: str
    challenge: str
    cpu_s: float = 0.0  # the team's own runs: what budgets count
    gpu_s: float = 0.0
    wall_s: float = 0.0
    cases: int = 0
    runs: int = 0
    rerun_cpu_s: float = 0.0  # organizer re-runs: reported, not charged
    rerun_gpu_s: float = 0.0
    rerun_wall_s: float = 0.0
    rerun_cases: int = 0
    budget_cpu_s: float | None = None
    budget_gpu_s: float | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def used(self, resource: str) -> float:
        return self.cpu_s if resource == "cpu" else self.gpu_s

    def budget(self, resource: str) -> float | None:
        return self.budget_cpu_s if resource == "cpu" else self.budget_gpu_s

    def percent(self, resource: str) -> float | None:
        budget = self.budget(resource)
        return None if not budget else 100.0 * self.used(resource) / budget

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "team_id": self.team_id, "team": self.team, "challenge": self.challenge, "track": self.track,
            "cpu_s": round(self.cpu_s, 3), "gpu_s": round(self.gpu_s, 3), "wall_s": round(self.wall_s, 3),
            "cases": self.cases, "runs": self.runs,
            "rerun_cpu_s": round(self.rerun_cpu_s, 3), "rerun_gpu_s": round(self.rerun_gpu_s, 3),
            "rerun_wall_s": round(self.rerun_wall_s, 3), "rerun_cases": self.rerun_cases,
            "budget_cpu_s": self.budget_cpu_s, "budget_gpu_s": self.budget_gpu_s,
        }
        for res in RESOURCES:
            pct = self.percent(res)
            out[f"{res}_percent"] = None if pct is None else round(pct, 2)
        out["exhausted"] = [res for res in RESOURCES if (self.percent(res) or 0.0) >= 100.0]
        out["warnings"] = self.warnings
        return out


def gpu_queues(settings: Any) -> set[str]:
    """Names of the GPU-kind queues (SEGARENA_QUEUES)."""
    try:
        return {name for name, kind in settings.declared_queues.items() if kind == "gpu"}
    except Exception:  # settings without queues (a bare test double): the conventional name
        return {"gpu"}


def gpus_of(run_queue: str, container_params: dict[str, Any] | None, track_gpus: int, gpu_q: set[str]) -> int:
    """GPUs a run's containers were given: 0 off GPU queues; else the recorded device requests, else the track's."""
    if run_queue not in gpu_q:
        return 0
    n = 0
    for req in (container_params or {}).get("device_requests") or []:
        if isinstance(req, dict):
            ids = req.get("device_ids") or []
            n += len(ids) if isinstance(ids, list) and ids else max(0, int(req.get("count") or 0))
    return n or max(0, int(track_gpus or 0))


def usage(session: Session, track: Track, *, settings: Any, team_ids: Iterable[int] | None = None,
          include_idle: bool = False) -> list[Usage]:
    """Per-team usage of ``track`` (of ``team_ids``, or every team with a submission there), sorted by team name.
    With ``include_idle``, teams of ``team_ids`` without any case results get a zero row too."""
    ids = None if team_ids is None else list(team_ids)
    gpu_q = gpu_queues(settings)
    wall = func.coalesce(CaseResult.wall_s, CaseResult.runtime_s)
    q = (select(Submission.team_id, Run.id, Run.queue, Run.container_params, Run.requested_by,
                func.coalesce(func.sum(CaseResult.cpu_s), 0.0), func.coalesce(func.sum(wall), 0.0),
                func.count(CaseResult.id))
         .select_from(Run).join(Submission, Submission.id == Run.submission_id)
         .outerjoin(CaseResult, CaseResult.run_id == Run.id)
         .where(Submission.track_id == track.id)
         .group_by(Run.id, Submission.team_id))  # the run's columns depend on its primary key (no JSON equality)
    if ids is not None:
        q = q.where(Submission.team_id.in_(ids))
    challenge = session.get(Challenge, track.challenge_id)
    rows: dict[int, Usage] = {}

    def row_of(team_id: int) -> Usage:
        if team_id not in rows:
            team = session.get(Team, team_id)
            rows[team_id] = Usage(team_id=team_id, team=team.name if team else f"team {team_id}", track_id=track.id,
                                  track=track.slug, challenge=challenge.slug if challenge else "",
                                  budget_cpu_s=track.budget_cpu_s, budget_gpu_s=track.budget_gpu_s)
        return rows[team_id]

    result = cast("list[tuple[int, int, str, dict[str, Any] | None, str | None, float, float, int]]",
                  session.execute(q).all())
    for team_id, _run_id, queue, params, requested_by, cpu, wall_s, cases in result:
        u = row_of(int(team_id))
        gpu = float(wall_s) * gpus_of(queue, params, track.gpus, gpu_q)
        if (requested_by or "").startswith(RERUN_PREFIX):
            u.rerun_cpu_s += float(cpu)
            u.rerun_wall_s += float(wall_s)
            u.rerun_gpu_s += gpu
            u.rerun_cases += int(cases)
        else:
            u.cpu_s += float(cpu)
            u.wall_s += float(wall_s)
            u.gpu_s += gpu
            u.cases += int(cases)
        u.runs += 1
    if include_idle and ids is not None:
        for team_id in ids:
            row_of(int(team_id))
    warned = _warnings(session, track.id, set(rows))
    for team_id, u in rows.items():
        u.warnings = warned.get(team_id, [])
    return sorted(rows.values(), key=lambda u: (u.team.lower(), u.team_id))


def team_usage(session: Session, track: Track, team_id: int, *, settings: Any) -> Usage:
    """One team's usage of ``track`` (a zero row when it has run nothing there)."""
    return usage(session, track, settings=settings, team_ids=[team_id], include_idle=True)[0]


def team_tracks_usage(session: Session, team_id: int, *, settings: Any) -> list[Usage]:
    """A team's usage on every track it ran on or that has a budget (challenge slug, then track order)."""
    used = set(session.scalars(select(Submission.track_id).where(Submission.team_id == team_id)))
    tracks = session.scalars(select(Track).join(Challenge).order_by(Challenge.slug, Track.id)).all()
    return [team_usage(session, t, team_id, settings=settings) for t in tracks
            if t.id in used or t.budget_cpu_s or t.budget_gpu_s]


def _warnings(session: Session, track_id: int, team_ids: set[int]) -> dict[int, list[dict[str, Any]]]:
    """Recorded budget warnings of ``track_id``: team id -> [{resource, level, budget_s, used_s, at}]."""
    out: dict[int, list[dict[str, Any]]] = {}
    if not team_ids:
        return out
    for ev in session.scalars(select(AuditEvent).where(AuditEvent.action == WARNING_ACTION).order_by(AuditEvent.id)):
        d = ev.details or {}
        if d.get("track_id") != track_id or d.get("team_id") not in team_ids:
            continue
        out.setdefault(int(d["team_id"]), []).append(
            {"resource": d.get("resource"), "level": d.get("level"), "budget_s": d.get("budget_s"),
             "used_s": d.get("used_s"), "at": ev.at.isoformat() if ev.at else None})
    return out


def _fmt_s(x: float) -> str:
    return f"{x:,.1f}"


def budget_message(u: Usage, resource: str) -> str:
    words = RESOURCES[resource][1]
    budget = u.budget(resource) or 0.0
    return (f"team {u.team} has used {_fmt_s(u.used(resource))} of its budget of {_fmt_s(budget)} {words} "
            f"({u.percent(resource) or 0.0:.1f} %) on track {u.challenge}/{u.track} (track setting "
            f"{RESOURCES[resource][0]})")


def check_budget(session: Session, track: Track, team_id: int, *, settings: Any) -> None:
    """Refuse (403 ``budget_exhausted``) a new submission of a team whose usage reached one of the track's budgets;
    the message names the budget, the usage and what to do."""
    if not track.budget_cpu_s and not track.budget_gpu_s:
        return
    u = team_usage(session, track, team_id, settings=settings)
    for resource in RESOURCES:
        pct = u.percent(resource)
        if pct is not None and pct >= 100.0:
            raise ApiError(403, "budget_exhausted",
                           f"{budget_message(u, resource)}: the budget is used up, so new submissions to this track "
                           "are refused; ask the organizers to raise it (segarena admin track TRACK, "
                           f"{RESOURCES[resource][0]}) if you need more", resource=resource,
                           used_s=round(u.used(resource), 3), budget_s=u.budget(resource))


def record_budget_warnings(session: Session, run: Run, *, settings: Any) -> list[AuditEvent]:
    """After ``run`` ended (same transaction, the caller commits): one ``budget.warning`` event per threshold the
    team's usage of the run's track has reached and that was not recorded yet for that budget. Serialized per team
    on PostgreSQL (row lock on the team), so two runs ending at once record a level once."""
    sub = session.get(Submission, run.submission_id)
    if sub is None:
        return []
    track = session.get(Track, sub.track_id)
    if track is None or (not track.budget_cpu_s and not track.budget_gpu_s):
        return []
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Team.id).where(Team.id == sub.team_id).with_for_update())
    session.flush()
    u = team_usage(session, track, sub.team_id, settings=settings)
    done = {(w["resource"], w["level"], w["budget_s"]) for w in u.warnings}
    made: list[AuditEvent] = []
    for resource in RESOURCES:
        pct, budget = u.percent(resource), u.budget(resource)
        if pct is None or budget is None:
            continue
        for level in THRESHOLDS:
            if pct + 1e-9 < level or (resource, level, budget) in done:
                continue
            reason = (f"{budget_message(u, resource)}: {level} % reached"
                      + ("; new submissions to this track are refused until an organizer raises the budget"
                         if level >= 100 else ""))
            made.append(record(session, actor=None, actor_label="trusted:accounting", action=WARNING_ACTION,
                               target_type="run", target_id=run.id, submission_id=sub.id, team_id=sub.team_id,
                               track_id=track.id, resource=resource, level=level, budget_s=budget,
                               used_s=round(u.used(resource), 3), percent=round(pct, 2), reason=reason))
            log.info("budget warning: team %s track %s %s %d %% (%.1f of %.1f s)", sub.team_id, track.id, resource,
                     level, u.used(resource), budget)
    return made
