"""Seed a realistic demo board straight into the database (tests, the benchmark, screenshots).

``seed_demo(session, teams=50, cases=100)`` makes one challenge with a main, a booster and a
reproducibility track; every team has a few main submissions (with runs and per-case results over
nine modalities), a booster entry, and one team reproduces the winner. Deterministic for a seed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, UTC
from typing import Any

import numpy as np
from sqlalchemy import insert
from sqlalchemy.orm import Session

from api.models import (
    CaseResult,
    CaseStatus,
    Challenge,
    Run,
    RunState,
    Submission,
    SubmissionState,
    Team,
    Track,
    TrackKind,
)
from data_manifests.schema import MODALITIES as _MODALITIES
from data_manifests.schema import SIZE_CLASSES, VOLUME_MODALITIES
from evaluator.failures import charge_failures

__all__ = ["seed_demo", "add_submission", "MODALITIES"]

MODALITIES = _MODALITIES[:9]  # the reference challenge's nine (data_manifests.schema)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _case_ids(n: int) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for i in range(n):
        mod = MODALITIES[i % len(MODALITIES)]
        dim = 3 if mod in VOLUME_MODALITIES else 2
        size = SIZE_CLASSES[(i // len(MODALITIES)) % 3]
        out.append((f"{dim}DBox_{mod}_{i:04d}", mod, size))
    return out


def add_submission(session: Session, *, track: Track, team: Team, cases: list[tuple[str, str, str]],
                   dsc: np.ndarray, nsd: np.ndarray, runtime: np.ndarray, failed: np.ndarray | None = None,
                   label: str = "", created_at: datetime | None = None, is_baseline: bool = False,
                   excluded: bool = False, exclusion_reason: str = "", reproduces_id: int | None = None,
                   state: SubmissionState = SubmissionState.succeeded, attempts: int = 1,
                   per_class: list[dict] | None = None) -> Submission:
    """One submission with ``attempts`` runs; the last run carries the given per-case results."""
    failed = np.zeros(len(cases), bool) if failed is None else failed
    limit = float(track.case_timeout_s)
    charged = charge_failures(dsc, nsd, runtime, ~failed, limit)  # the stored totals, as the scorer stores them
    mean = lambda a: float(a.mean()) if len(a) else None  # noqa: E731
    digest = hashlib.sha256(f"{team.id}-{label}-{created_at}-{track.id}".encode()).hexdigest()
    sub = Submission(
        track_id=track.id, team_id=team.id, label=label, state=state, archive_path=f"archives/{digest}.tar.gz",
        archive_sha256=digest, archive_bytes=123456, image_id="sha256:" + digest, image_tag=f"{team.name}:latest",
        is_baseline=is_baseline, excluded=excluded, exclusion_reason=exclusion_reason, reproduces_id=reproduces_id,
        dsc=mean(charged.dsc), nsd=mean(charged.nsd), runtime_s=mean(charged.runtime_s),
        metric_profile=track.metric_profile, created_at=created_at or T0,
        finished_at=(created_at or T0) + timedelta(minutes=30),
    )
    session.add(sub)
    session.flush()
    run = None
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        run = Run(submission_id=sub.id, attempt=attempt, state=RunState.succeeded if last else RunState.infra_failed,
                  reason="" if last else "worker lost", metric_profile=track.metric_profile, testset=track.testset,
                  case_timeout_s=limit,
                  cases_total=len(cases), worker_host="worker-1", docker_version="24.0.7", cpu_model="demo CPU",
                  log_tail="loading image…\nrunning 100 cases\ndone\n" if last else "worker lost\n")
        session.add(run)
        session.flush()
        if not last:  # an abandoned attempt with bogus results that must never be counted
            session.execute(insert(CaseResult), [
                {"run_id": run.id, "case_id": cid, "modality": mod, "size_class": size, "status": CaseStatus.ok,
                 "runtime_s": 0.01, "dsc": 1.0, "nsd": 1.0, "per_class": {}}
                for cid, mod, size in cases])
    assert run is not None
    rows = []
    for j, (cid, mod, size) in enumerate(cases):
        if failed[j]:
            rows.append({"run_id": run.id, "case_id": cid, "modality": mod, "size_class": size,
                         "status": CaseStatus.timeout, "reason": f"case {cid}: exceeded the {limit:g} s time limit",
                         "runtime_s": limit, "dsc": 0.0, "nsd": 0.0, "per_class": {},
                         "exit_code": 137, "stderr_tail": "Killed\n"})
        else:
            d, s = float(dsc[j]), float(nsd[j])
            rows.append({"run_id": run.id, "case_id": cid, "modality": mod, "size_class": size,
                         "status": CaseStatus.ok, "runtime_s": float(runtime[j]), "dsc": d, "nsd": s,
                         "cpu_s": float(runtime[j]) * 0.9, "peak_memory_bytes": int(400e6 + 10e6 * (j % 30)),
                         "exit_code": 0, "stdout_tail": f"{cid}: done\n",
                         "per_class": per_class[j] if per_class is not None else {"1": {"dsc": d, "nsd": s}}})
    if rows:
        session.execute(insert(CaseResult), rows)
    return sub


def seed_demo(session: Session, *, teams: int = 12, cases: int = 45, seed: int = 0, slug: str = "demo",
              booster: bool = True, repro: bool = True) -> dict[str, Any]:
    """Create the demo challenge and its tracks; returns ids and the case list."""
    rng = np.random.default_rng(seed)
    ch = Challenge(slug=slug, title="Segment Anything in Medical Images on Laptop (demo)",
                   description="Lightweight promptable segmentation across nine modalities, CPU only.", demo=True)
    session.add(ch)
    session.flush()
    main = Track(challenge_id=ch.id, slug="main", title="Main track", kind=TrackKind.main, case_timeout_s=60, testset="demo",
                 description="Boxes in, masks out; runtime per case counts.")
    session.add(main)
    tracks = {"main": main}
    if booster:
        tracks["booster"] = Track(challenge_id=ch.id, slug="booster", title="Performance booster", kind=TrackKind.booster,
                                  case_timeout_s=60, testset="demo", description="Improved models after the challenge.")
    if repro:
        tracks["repro"] = Track(challenge_id=ch.id, slug="repro", title="Reproducibility", kind=TrackKind.reproducibility,
                                case_timeout_s=60, testset="demo", description="Independent retraining of published methods.")
    session.add_all([t for k, t in tracks.items() if k != "main"])
    session.flush()
    case_list = _case_ids(cases)
    size_difficulty = {"small": 0.12, "medium": 0.05, "large": 0.0}
    difficulty = rng.uniform(0.0, 0.25, cases) + np.array([size_difficulty[s] for *_, s in case_list])
    team_rows = []
    subs: dict[str, list[int]] = {"main": [], "booster": [], "repro": []}
    for i in range(teams):
        prefix = "" if slug == "demo" else f"{slug}-"  # team names are unique across the database
        team = Team(name=prefix + (f"team-{i:02d}" if i else "MedficientSAM"), affiliation=f"Lab {i}")
        session.add(team)
        session.flush()
        team_rows.append(team)
        quality = rng.uniform(0.72, 0.95)
        speed = rng.lognormal(0.5, 0.8)
        for k in range(2):
            dsc = np.clip(quality - difficulty + rng.normal(0, 0.04, cases) - 0.02 * (1 - k), 0, 1)
            nsd = np.clip(dsc + rng.normal(0.01, 0.03, cases), 0, 1)
            rt = speed * rng.lognormal(0, 0.3, cases)
            failed = rng.uniform(0, 1, cases) < 0.03
            s = add_submission(session, track=main, team=team, cases=case_list, dsc=dsc, nsd=nsd, runtime=rt,
                               failed=failed, label=f"v{k + 1}", created_at=T0 + timedelta(days=k, hours=i),
                               attempts=2 if (i == 1 and k == 1) else 1)
            subs["main"].append(s.id)
        if booster and i % 3 != 2:
            dsc = np.clip(quality + 0.03 - difficulty + rng.normal(0, 0.03, cases), 0, 1)
            nsd = np.clip(dsc + rng.normal(0.01, 0.03, cases), 0, 1)
            rt = speed / rng.uniform(1.5, 6) * rng.lognormal(0, 0.3, cases)
            s = add_submission(session, track=tracks["booster"], team=team, cases=case_list, dsc=dsc, nsd=nsd,
                               runtime=rt, label="boosted", created_at=T0 + timedelta(days=30, hours=i))
            subs["booster"].append(s.id)
    base_team = Team(name=("" if slug == "demo" else f"{slug}-") + "Organizers", affiliation="SegArena")
    session.add(base_team)
    session.flush()
    dsc = np.clip(0.8 - difficulty + rng.normal(0, 0.04, cases), 0, 1)
    s = add_submission(session, track=main, team=base_team, cases=case_list, dsc=dsc, nsd=np.clip(dsc - 0.02, 0, 1),
                       runtime=np.full(cases, 5.1), label="LiteMedSAM baseline", is_baseline=True,
                       created_at=T0 - timedelta(days=1))
    subs["main"].append(s.id)
    if repro and teams >= 2:
        # team 1 reproduces team 0's main entry (the row its public board lists): close but not identical
        from sqlalchemy import select

        from api.leaderboard import public_submission_ids

        session.flush()
        listed = public_submission_ids(session, main)
        team_of = {s.id: s.team_id for s in session.scalars(select(Submission).where(Submission.id.in_(subs["main"])))}
        orig_id = next(i for i in subs["main"] if i in listed and team_of[i] == team_rows[0].id)
        orig = session.get_one(Submission, orig_id)

        oc = {c.case_id: c for c in session.scalars(select(CaseResult).where(CaseResult.run_id == orig.runs[-1].id))}
        d = np.array([oc[c].dsc for c, *_ in case_list]) + rng.normal(-0.002, 0.003, cases)
        n = np.array([oc[c].nsd for c, *_ in case_list]) + rng.normal(-0.002, 0.003, cases)
        rt = np.array([oc[c].runtime_s for c, *_ in case_list]) * 1.2
        failed = np.array([oc[c].status != CaseStatus.ok for c, *_ in case_list])
        s = add_submission(session, track=tracks["repro"], team=team_rows[1], cases=case_list, dsc=np.clip(d, 0, 1),
                           nsd=np.clip(n, 0, 1), runtime=rt, failed=failed, label="retrained MedficientSAM",
                           reproduces_id=orig_id, created_at=T0 + timedelta(days=40))
        subs["repro"].append(s.id)
        s = add_submission(session, track=tracks["repro"], team=team_rows[-1], cases=case_list,
                           dsc=np.clip(d - 0.05, 0, 1), nsd=np.clip(n - 0.06, 0, 1), runtime=rt * 2,
                           failed=failed, label="retrained (fewer epochs)", reproduces_id=orig_id,
                           created_at=T0 + timedelta(days=41))
        subs["repro"].append(s.id)
    session.flush()
    return {"challenge": ch.slug, "challenge_id": ch.id, "tracks": {k: t.id for k, t in tracks.items()},
            "cases": case_list, "submissions": subs, "team_ids": [t.id for t in team_rows],
            "baseline_team_id": base_team.id}
