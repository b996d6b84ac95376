"""The data of a track's challenge report (organizers): one JSON-ready dict, rendered offline by the CLI.

What a challenge paper reports (BIAS reporting guideline, Maier-Hein et al. 2020; challengeR, Wiesenfarth et al.
2021), as far as the platform knows it:

* the track: kind, prompt, metric profile, ranking scheme (with its description), row policy, time limit per case and
  the container's resources, opening/closing/freeze dates (BIAS: challenge design, assessment method);
* the test set from its manifest: id, version, description, cases per modality and size class, dimensionality, label
  structures, generator (BIAS: data sets);
* the ranking with its scheme: the public board's rows (rank, team, label, DSC, NSD, runtime, cases ok), baselines
  unranked; the organizers' excluded rows with their reason;
* ranking stability: case bootstrap (seeded, ``n_boot`` ≥ 1000 resamples), Kendall's τ to the full ranking and each
  entry's rank distribution (the blob plot) — :func:`evaluator.ranking.bootstrap_stability`;
* significance maps for DSC and NSD: one-sided paired Wilcoxon signed-rank tests of every ordered pair, Holm-corrected
  — :func:`evaluator.ranking.significance_map`;
* per-modality and per-size-class tables (every aggregate charged by :func:`evaluator.failures.charge_failures`:
  a failed case scores DSC 0, NSD 0 and runtime = the case time limit of its run);
* runtime and peak-memory distributions per ranked entry (cases that ended ``ok``), failures by reason (case status and
  run reason over every latest attempt on the track, not only the board's rows), submissions over time (per day and
  final state) and the number of teams.

Everything is read through :mod:`api.leaderboard.service` (the board and the stability statistics are the ones the
organizers' pages show) plus a few read-only queries here.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.leaderboard import service as lb
from api.leaderboard.board import SIZE_CLASSES, Row
from api.lifecycle import latest_attempt_subquery
from api.models import CaseResult, CaseStatus, Run, Submission, SubmissionState, Team, Track
from api.params import as_utc

__all__ = ["build_report", "REPORT_VERSION"]

log = logging.getLogger(__name__)

REPORT_VERSION = 1
_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _iso(dt: datetime | None) -> str | None:
    dt = as_utc(dt)
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z") if dt else None


def _name(row: Row) -> str:
    return f"{row.team} · {row.label}" if row.label else row.team


def _track(track: Track) -> dict[str, Any]:
    return {
        "slug": track.slug, "title": track.title, "kind": track.kind.value, "description": track.description or "",
        "prompt": getattr(track, "prompt", None) or "box", "metric_profile": track.metric_profile,
        "ranking_scheme": track.ranking_scheme, "row_policy": track.row_policy.value,
        "visibility": track.visibility.value, "case_timeout_s": track.case_timeout_s,
        "quota_per_day": getattr(track, "quota_per_day", None),
        "total_timeout_s": getattr(track, "total_timeout_s", None), "cpus": getattr(track, "cpus", None),
        "memory_mb": getattr(track, "memory_mb", None), "gpus": getattr(track, "gpus", None),
        "opens_at": _iso(track.opens_at), "closes_at": _iso(track.closes_at), "frozen_at": _iso(track.frozen_at),
        "testset": track.testset or "",
    }


def _testset(name: str) -> dict[str, Any] | None:
    """The test set's description from its manifest (None when it cannot be read: the report says so)."""
    from data_manifests import ManifestError, check_testset

    try:
        m = check_testset(name)
    except ManifestError as exc:
        log.info("report: test set %r unreadable: %s", name, exc)
        return None
    mods = Counter(c.modality for c in m.cases)
    sizes = Counter(c.size_class for c in m.cases)
    dims = Counter(f"{c.dim}D" for c in m.cases)
    structures = Counter(lab.size_class for c in m.cases for lab in c.labels)
    per_mod = {mod: {"cases": n, **{s: sum(1 for c in m.cases if c.modality == mod and c.size_class == s)
                                    for s in SIZE_CLASSES}} for mod, n in sorted(mods.items())}
    gen = m.generator
    return {
        "id": m.id, "version": m.version, "description": m.description, "metric_profile": m.metric_profile,
        "tolerance_mm": m.tolerance, "n_cases": len(m.cases), "dims": dict(dims), "modalities": per_mod,
        "size_classes": {s: sizes.get(s, 0) for s in SIZE_CLASSES},
        "structures": {"total": sum(len(c.labels) for c in m.cases),
                       **{s: structures.get(s, 0) for s in SIZE_CLASSES}},
        "generator": ({"name": gen.name, "version": gen.version, "size": gen.size, "seed": gen.seed} if gen else None),
        "notes": list(m.notes),
    }


def _ranking(board: Any) -> list[dict[str, Any]]:
    out = []
    for row in board.rows:
        out.append({
            "submission_id": row.submission_id, "name": _name(row), "team": row.team, "label": row.label,
            "rank": row.rank, "score": row.score, "baseline": row.baseline, "excluded": row.excluded,
            "exclusion_reason": row.exclusion_reason, "submitted_at": row.submitted_at,
            "dsc": row.overall.get("dsc"), "nsd": row.overall.get("nsd"), "runtime_s": row.overall.get("runtime_s"),
            "cases_ok": row.cases_ok, "cases_total": row.cases_total,
            "by_modality": row.by_modality, "by_size": row.by_size,
            **({"delta_dsc": row.delta_dsc, "delta_nsd": row.delta_nsd, "speedup": row.speedup}
               if row.main_submission_id is not None else {}),
            **({"verdict": row.verdict, "reproduces": row.reproduces} if row.verdict is not None else {}),
        })
    return out


def _quantiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    q = np.quantile(np.asarray(xs, dtype=np.float64), _QUANTILES)
    return {"n": len(xs), "min": float(q[0]), "q1": float(q[1]), "median": float(q[2]), "q3": float(q[3]),
            "max": float(q[4]), "mean": float(np.mean(xs))}


def _latest_run_ids(session: Session, sub_ids: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for i in range(0, len(sub_ids), 500):
        chunk = sub_ids[i:i + 500]
        latest = latest_attempt_subquery(chunk)
        for sid, rid in session.execute(
            select(Run.submission_id, Run.id)
            .join(latest, (Run.submission_id == latest.c.submission_id) & (Run.attempt == latest.c.attempt))
        ):
            out[sid] = rid
    return out


def _distributions(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runtime (s) and peak memory (MiB) of the ok cases of each listed entry's latest run."""
    ids = [r["submission_id"] for r in rows]
    runs = _latest_run_ids(session, ids)
    by_run: dict[int, tuple[list[float], list[float]]] = {rid: ([], []) for rid in runs.values()}
    for i in range(0, len(by_run), 500):
        chunk = list(by_run)[i:i + 500]
        for rid, rt, mem in session.execute(
            select(CaseResult.run_id, CaseResult.runtime_s, CaseResult.peak_memory_bytes)
            .where(CaseResult.run_id.in_(chunk), CaseResult.status == CaseStatus.ok)
        ):
            if rt is not None:
                by_run[rid][0].append(float(rt))
            if mem is not None:
                by_run[rid][1].append(float(mem) / 2**20)
    out = []
    for r in rows:
        times, mibs = by_run.get(runs.get(r["submission_id"], -1), ([], []))
        out.append({"name": r["name"], "submission_id": r["submission_id"], "runtime_s": _quantiles(times),
                    "memory_mib": _quantiles(mibs)})
    return out


def _failures(session: Session, track: Track) -> dict[str, Any]:
    """Failed cases by status (and the commonest reasons) and failed runs by reason, over the latest attempt of
    every submission of the track (whether or not it is on the board)."""
    sub_ids = list(session.scalars(select(Submission.id).where(Submission.track_id == track.id)))
    runs = _latest_run_ids(session, sub_ids)
    rids = list(runs.values())
    by_status: Counter[str] = Counter()
    reasons: Counter[tuple[str, str]] = Counter()
    total = 0
    for i in range(0, len(rids), 500):
        chunk = rids[i:i + 500]
        for status, reason, n in session.execute(
            select(CaseResult.status, CaseResult.reason, func.count())
            .where(CaseResult.run_id.in_(chunk)).group_by(CaseResult.status, CaseResult.reason)
        ):
            total += n
            if status == CaseStatus.ok:
                continue
            by_status[status.value] += n
            reasons[(status.value, (reason or "").strip().splitlines()[0][:160] if reason else "")] += n
    run_reasons: Counter[str] = Counter()
    for i in range(0, len(rids), 500):
        for state, reason in session.execute(select(Run.state, Run.reason).where(Run.id.in_(rids[i:i + 500]))):
            if state.value in ("failed", "infra_failed"):
                run_reasons[((reason or state.value).strip().splitlines() or [state.value])[0][:160]] += 1
    return {
        "cases_recorded": total,
        "cases_failed": sum(by_status.values()),
        "by_status": dict(by_status.most_common()),
        "top_reasons": [{"status": s, "reason": why, "cases": n} for (s, why), n in reasons.most_common(10)],
        "runs_failed": [{"reason": why, "runs": n} for why, n in run_reasons.most_common(10)],
    }


def _over_time(session: Session, track: Track) -> dict[str, Any]:
    rows = session.execute(select(Submission.created_at, Submission.state, Submission.team_id)
                           .where(Submission.track_id == track.id).order_by(Submission.created_at)).all()
    names = dict(session.execute(select(Team.id, Team.name).where(Team.id.in_({t for _, _, t in rows}))).all()) \
        if rows else {}
    per_team: dict[int, Counter[str]] = {}
    for _, state, team_id in rows:
        per_team.setdefault(team_id, Counter())[state.value] += 1
    days: dict[str, Counter[str]] = {}
    for created, state, _ in rows:
        day = (as_utc(created) or datetime.now(UTC)).date().isoformat()
        days.setdefault(day, Counter())[state.value] += 1
    states = [s.value for s in SubmissionState]
    return {
        "n_submissions": len(rows), "n_teams": len({t for _, _, t in rows}),
        "by_state": {s: sum(c.get(s, 0) for c in days.values()) for s in states if any(c.get(s) for c in days.values())},
        "days": [{"day": d, "total": sum(c.values()), **{s: c.get(s, 0) for s in states}}
                 for d, c in sorted(days.items())],
        "first": _iso(rows[0][0]) if rows else None, "last": _iso(rows[-1][0]) if rows else None,
        "per_team": sorted(({"team": names.get(t, str(t)), "submissions": sum(c.values()),
                             "succeeded": c.get("succeeded", 0)} for t, c in per_team.items()),
                           key=lambda x: (-x["submissions"], x["team"])),
    }


def build_report(session: Session, track: Track, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> dict[str, Any]:
    """The report of ``track`` (see the module docstring); deterministic for a database state and ``seed``."""
    challenge = track.challenge
    public = lb.build_board(session, track, organizer=False)
    organizer = lb.build_board(session, track, organizer=True)
    ranking = _ranking(public)
    excluded = [r for r in _ranking(organizer) if r["excluded"]]
    stab = lb.stability(session, track, n_boot=n_boot, metric="dsc", alpha=alpha, seed=seed)
    sig_nsd = (lb.stability(session, track, n_boot=10, metric="nsd", alpha=alpha, seed=seed)["significance"]
               if stab.get("bootstrap") else None)
    return {
        "report_version": REPORT_VERSION,
        "generated_at": _iso(datetime.now(UTC)),
        "challenge": {"slug": challenge.slug, "title": challenge.title, "description": challenge.description or ""},
        "track": _track(track),
        "scheme": {"name": public.info.scheme, "label": public.info.scheme_label},
        "failure_rule": "a case that did not end ok scores DSC 0, NSD 0 and runtime = the case time limit of its run "
                        "(evaluator.failures.charge_failures); in rank-then-aggregate it takes the worst rank",
        "testset": _testset(track.testset or ""),
        "n_cases": public.n_cases, "modalities": public.modalities,
        "size_classes": public.size_classes, "size_source": public.size_source,
        "ranking": ranking, "excluded": excluded,
        "stability": stab.get("bootstrap"), "significance": {"dsc": stab.get("significance"), "nsd": sig_nsd},
        "stability_message": stab.get("message"),
        "alpha": alpha, "n_boot": n_boot, "seed": seed,
        "distributions": _distributions(session, [r for r in ranking if not r["excluded"]]),
        "failures": _failures(session, track),
        "submissions": _over_time(session, track),
    }
