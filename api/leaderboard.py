"""The leaderboard read model: database rows → the table a track's leaderboard shows (read-only).

One function builds a whole board, :func:`build_board`; every consumer (HTML page, JSON API, CSV
export) renders that one dict, so they always show the same columns and values.

Rules (../shared/DESIGN.md, CHALLENGE_FACTS.md):

* Only succeeded submissions are listed; a track's ``row_policy`` picks one row per team
  (``best``: highest mean DSC, then NSD, then fastest; ``latest``: newest). Baselines get their own
  rows, marked and unranked. Excluded submissions are left out; organizers see them (unranked) with
  the exclusion reason.
* Frozen: only submissions created before the freeze time count (``frozen_at``, or ``closes_at`` when
  the track's visibility is ``frozen`` and ``frozen_at`` is unset).
* Scores come from each submission's latest run (highest attempt), case by case. A failed or missing
  case scores DSC 0, NSD 0 and runtime = the track's case time limit in the aggregates, and the
  worst rank in rank-then-aggregate.
* booster rows add the change against the team's main-track row (ΔDSC, ΔNSD, speed-up ×);
  reproducibility rows compare each reproduction with the submission it reproduces, case by case.

Caching: :func:`board_version` is a cheap fingerprint (a few indexed aggregate queries) that changes
whenever a submission of the challenge changes (state, scores, exclusion…), a run is added, or a track's
settings change; :func:`invalidate` bumps an
in-process generation counter (call it from anything in this process that changes results).
"""

from __future__ import annotations

import functools
import json
import math
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.models import (
    CaseResult,
    CaseStatus,
    Challenge,
    Role,
    Run,
    RowPolicy,
    Submission,
    SubmissionState,
    Team,
    Track,
    TrackKind,
    Visibility,
)
from evaluator import ranking as rk
from evaluator.reproducibility import compare as repro_compare

__all__ = [
    "invalidate", "generation", "find_track", "freeze_cutoff", "board_version", "build_board",
    "stability", "case_matrix", "SIZE_CLASSES", "modality_order",
    "public_submission_ids", "publicly_visible", "may_see_submission",
]

SIZE_CLASSES = ("small", "medium", "large")
_CANONICAL = ("CT", "MR", "PET", "US", "X-Ray", "Endoscopy", "Fundus", "Microscopy", "OCT",
              "Dermoscopy", "Mammography")

_gen_lock = threading.Lock()
_generation: dict[int | None, int] = {None: 0}


def invalidate(track_id: int | None = None) -> None:
    """Mark cached boards stale in this process (one track, or all with ``None``)."""
    with _gen_lock:
        _generation[None] += 1
        if track_id is not None:
            _generation[track_id] = _generation.get(track_id, 0) + 1


def generation() -> int:
    """The in-process invalidation counter (part of every cache key)."""
    return _generation[None]


def modality_order(mods: set[str]) -> list[str]:
    """Canonical modality order (the challenge's tables), unknown ones last, sorted."""
    return [m for m in _CANONICAL if m in mods] + sorted(mods - set(_CANONICAL))


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _iso(dt: datetime | None) -> str | None:
    dt = _utc(dt)
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z") if dt else None


def find_track(session: Session, challenge_slug: str, track_slug: str) -> Track | None:
    """The track ``track_slug`` of challenge ``challenge_slug`` (None if either is unknown)."""
    return session.scalar(
        select(Track).join(Challenge, Track.challenge_id == Challenge.id)
        .where(Challenge.slug == challenge_slug, Track.slug == track_slug)
    )


def freeze_cutoff(track: Track) -> datetime | None:
    """Submissions created at or after this instant are not shown (None: the board is live)."""
    if track.frozen_at is not None:
        return _utc(track.frozen_at)
    if track.visibility == Visibility.frozen and track.closes_at is not None:
        return _utc(track.closes_at)
    return None


def board_version(session: Session, track: Track) -> tuple:
    """A cheap fingerprint of everything the board of ``track`` depends on."""
    track_ids = select(Track.id).where(Track.challenge_id == track.challenge_id).scalar_subquery()
    n, last = session.execute(
        select(func.count(Submission.id), func.max(Submission.updated_at)).where(Submission.track_id.in_(track_ids))
    ).one()
    # a new attempt (re-run, retry) changes which run counts; case results of a running attempt do not
    # matter until its submission changes state, so they are not part of the fingerprint
    max_run = session.scalar(select(func.max(Run.id)))
    tracks = session.execute(
        select(Track.id, Track.visibility, Track.frozen_at, Track.closes_at, Track.row_policy, Track.ranking_scheme,
               Track.metric_profile, Track.case_timeout_s, Track.repro_margin_dsc, Track.repro_margin_nsd,
               Track.title, Track.description, Track.kind, Track.feedback)
        .where(Track.challenge_id == track.challenge_id).order_by(Track.id)
    ).all()
    return (n, str(last), max_run, tuple(tuple(str(v) for v in t) for t in tracks),
            _generation.get(track.id, 0))


# --------------------------------------------------------------------------- manifest size classes


@functools.lru_cache(maxsize=32)
def _manifest_labels(testset: str) -> dict[str, dict[str, str]] | None:
    """``case id → {label value → size class}`` from the test set's manifest, when one is on disk."""
    try:
        from data_manifests.manifest import load_manifest
    except ImportError:  # pragma: no cover - data_manifests is part of the project
        return None
    candidates = [Path(testset)]
    sets = Path(__file__).resolve().parents[1] / "data_manifests" / "sets"
    if testset and "/" not in testset:
        candidates += [sets / f"{testset}.json", sets / testset / "manifest.json"]
    for p in candidates:
        try:
            if p.is_file():
                m = load_manifest(p, verify=False)
                return {c.id: {str(lab.value): lab.size_class for lab in c.labels} for c in m.cases}
        except Exception:  # noqa: BLE001 - an unreadable manifest just means "no label classes"
            continue
    return None


# --------------------------------------------------------------------------- loading


@dataclass
class _Case:
    modality: str
    size_class: str
    ok: bool
    dsc: float
    nsd: float
    runtime_s: float
    per_class: dict[str, Any]


def _latest_runs(session: Session, sub_ids: list[int]) -> dict[int, int]:
    """``submission id → id of its latest run (highest attempt)``."""
    out: dict[int, tuple[int, int]] = {}
    for chunk in _chunks(sub_ids):
        for sid, rid, attempt in session.execute(
            select(Run.submission_id, Run.id, Run.attempt).where(Run.submission_id.in_(chunk))
        ):
            if sid not in out or attempt > out[sid][1]:
                out[sid] = (rid, attempt)
    return {sid: v[0] for sid, v in out.items()}


def _num(x: Any) -> float:
    """A stored metric as a float; NULL or NaN (the cvpr24 profile's empty-label quirk) counts as 0."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(v) else v


def _defined(x: Any) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def _label_scores(per_class: dict[str, Any]) -> dict[str, Any]:
    """``label → {dsc, nsd}`` from a stored ``per_class``: the worker stores ``CaseScore.to_dict()``
    (labels under its ``"per_class"`` key); a bare ``{label: {dsc, nsd}}`` mapping is accepted too."""
    inner = per_class.get("per_class") if isinstance(per_class, dict) else None
    return inner if isinstance(inner, dict) else (per_class if isinstance(per_class, dict) else {})


def _chunks(ids: list[int], n: int = 500):
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


def _load_cases(session: Session, sub_ids: list[int]) -> dict[int, dict[str, _Case]]:
    """``submission id → case id → result`` of each submission's latest run."""
    runs = _latest_runs(session, sub_ids)
    by_run = {rid: sid for sid, rid in runs.items()}
    out: dict[int, dict[str, _Case]] = {sid: {} for sid in sub_ids}
    rids = list(by_run)
    for chunk in _chunks(rids):
        rows = session.execute(
            select(CaseResult.run_id, CaseResult.case_id, CaseResult.modality, CaseResult.size_class,
                   CaseResult.status, CaseResult.dsc, CaseResult.nsd, CaseResult.runtime_s, CaseResult.per_class)
            .where(CaseResult.run_id.in_(chunk))
        )
        for rid, cid, mod, size, status, dsc, nsd, rt, per_class in rows:
            ok = status == CaseStatus.ok or status == "ok"
            out[by_run[rid]][cid] = _Case(mod or "", size or "", ok, _num(dsc), _num(nsd), _num(rt),
                                          per_class if isinstance(per_class, dict) else {})
    return out


def _candidates(session: Session, track: Track, *, organizer: bool) -> list[tuple[Submission, str]]:
    """Succeeded submissions of the track before the freeze, each with the team name."""
    q = (select(Submission, Team.name).join(Team, Submission.team_id == Team.id)
         .where(Submission.track_id == track.id, Submission.state == SubmissionState.succeeded))
    cutoff = freeze_cutoff(track)
    if cutoff is not None:
        q = q.where(Submission.created_at < cutoff)
    if not organizer:
        q = q.where(Submission.excluded.is_(False))
    return [(s, name) for s, name in session.execute(q.order_by(Submission.created_at, Submission.id))]


def public_submission_ids(session: Session, track: Track) -> set[int]:
    """Ids of the submissions that the public board of ``track`` lists (ranked, baseline rows): THE rule of
    what anyone may see of a submission without owning it. Empty for a hidden track; leaves out excluded,
    post-freeze, unfinished, failed and (row policy) superseded submissions."""
    if track.visibility == Visibility.hidden:
        return set()
    return {s.id for s, _ in _pick(_candidates(session, track, organizer=False), track.row_policy)}


def publicly_visible(session: Session, sub: Submission) -> bool:
    """True when ``sub`` is a row of its track's public board (see :func:`public_submission_ids`)."""
    track = sub.track if sub.track is not None else session.get(Track, sub.track_id)
    return sub.id in public_submission_ids(session, track)


def may_see_submission(session: Session, sub: Submission, member: Any | None) -> bool:
    """Organizers and the owning team always; anyone else only a submission on a public board."""
    if member is not None and (getattr(member, "role", None) == Role.organizer or
                               (member.team_id is not None and member.team_id == sub.team_id)):
        return True
    return publicly_visible(session, sub)


def _pick(subs: list[tuple[Submission, str]], policy: RowPolicy) -> list[tuple[Submission, str]]:
    """One row per (team, baseline) by the row policy; excluded submissions each get their own row."""
    groups: dict[tuple[int, bool], list[tuple[Submission, str]]] = {}
    excluded = []
    for s, name in subs:
        if s.excluded:
            excluded.append((s, name))
        else:
            groups.setdefault((s.team_id, bool(s.is_baseline)), []).append((s, name))

    def best_key(item):
        s = item[0]
        return (s.dsc if s.dsc is not None else -1.0, s.nsd if s.nsd is not None else -1.0,
                -(s.runtime_s if s.runtime_s is not None else math.inf), _utc(s.created_at), s.id)

    def latest_key(item):
        return (_utc(item[0].created_at), item[0].id)

    key = latest_key if policy == RowPolicy.latest else best_key
    chosen = [max(g, key=key) for g in groups.values()]
    return chosen + excluded


# --------------------------------------------------------------------------- aggregation


def case_matrix(cases_by_entry: list[dict[str, _Case]], case_ids: list[str], *, time_limit: float,
                failed_as_nan: bool) -> dict[str, np.ndarray]:
    """``{"dsc", "nsd", "runtime_s"} → (n_entries, n_cases)``; failed/missing → NaN or the worst value."""
    n, k = len(cases_by_entry), len(case_ids)
    out = {m: np.full((n, k), np.nan) for m in ("dsc", "nsd", "runtime_s")}
    for i, cases in enumerate(cases_by_entry):
        for j, cid in enumerate(case_ids):
            c = cases.get(cid)
            if c is not None and c.ok:
                out["dsc"][i, j], out["nsd"][i, j], out["runtime_s"][i, j] = c.dsc, c.nsd, c.runtime_s
            elif not failed_as_nan:
                out["dsc"][i, j], out["nsd"][i, j], out["runtime_s"][i, j] = 0.0, 0.0, time_limit
    return out


def _r(x: float | None, nd: int = 3) -> float | None:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return round(float(x), nd)


def _entry_stats(cases: dict[str, _Case], case_ids: list[str], case_mod: dict[str, str], mods: list[str],
                 label_classes: dict[str, dict[str, str]] | None, case_size: dict[str, str],
                 time_limit: float) -> dict[str, Any]:
    """Overall, per-modality and per-size-class aggregates of one entry (failures at worst values)."""
    row: dict[str, Any] = {}
    vals = {"dsc": [], "nsd": [], "runtime_s": []}
    per_mod: dict[str, dict[str, list[float]]] = {m: {"dsc": [], "nsd": [], "runtime_s": []} for m in mods}
    per_size: dict[str, dict[str, list[float]]] = {s: {"dsc": [], "nsd": []} for s in SIZE_CLASSES}
    n_ok = 0
    for cid in case_ids:
        c = cases.get(cid)
        ok = c is not None and c.ok
        n_ok += ok
        d, s, t = (c.dsc, c.nsd, c.runtime_s) if ok else (0.0, 0.0, time_limit)
        for key, v in (("dsc", d), ("nsd", s), ("runtime_s", t)):
            vals[key].append(v)
            per_mod[case_mod[cid]][key].append(v)
        if label_classes is not None and cid in label_classes:
            labels = _label_scores(c.per_class) if ok else {}
            for lab, cls in label_classes[cid].items():
                if cls not in per_size:
                    continue
                if not ok:
                    per_size[cls]["dsc"].append(0.0)
                    per_size[cls]["nsd"].append(0.0)
                    continue
                pc = labels.get(lab) or {}
                # an undefined class score (absent from both masks: None/NaN) is left out, as the case mean does
                if _defined(pc.get("dsc")):
                    per_size[cls]["dsc"].append(float(pc["dsc"]))
                if _defined(pc.get("nsd")):
                    per_size[cls]["nsd"].append(float(pc["nsd"]))
        else:
            cls = case_size.get(cid, "")
            if cls in per_size:
                per_size[cls]["dsc"].append(d)
                per_size[cls]["nsd"].append(s)
    mean = lambda xs: (sum(xs) / len(xs)) if xs else None  # noqa: E731
    row["dsc"] = _r(mean(vals["dsc"]))
    row["nsd"] = _r(mean(vals["nsd"]))
    row["runtime_s"] = _r(mean(vals["runtime_s"]), 2)
    row["cases_ok"] = n_ok
    row["cases_total"] = len(case_ids)
    for m in mods:
        row[f"{m}:dsc"] = _r(mean(per_mod[m]["dsc"]))
        row[f"{m}:nsd"] = _r(mean(per_mod[m]["nsd"]))
        row[f"{m}:runtime_s"] = _r(mean(per_mod[m]["runtime_s"]), 2)
    for s in SIZE_CLASSES:
        row[f"size:{s}:dsc"] = _r(mean(per_size[s]["dsc"]))
        row[f"size:{s}:nsd"] = _r(mean(per_size[s]["nsd"]))
    return row


def _col(key: str, label: str, kind: str, *, group: str = "", modality: str = "", title: str = "") -> dict:
    return {"key": key, "label": label, "type": kind, "group": group, "modality": modality, "title": title or label}


@dataclass
class _Loaded:
    entries: list[tuple[Submission, str]]
    cases: dict[int, dict[str, _Case]]
    case_ids: list[str]
    case_mod: dict[str, str]
    case_size: dict[str, str]
    mods: list[str]
    n_submissions: int = 0  # the scored submissions the board counted (before the row policy picks)


def _load(session: Session, track: Track, *, organizer: bool) -> _Loaded:
    candidates = _candidates(session, track, organizer=organizer)
    entries = _pick(candidates, track.row_policy)
    cases = _load_cases(session, [s.id for s, _ in entries])
    case_mod: dict[str, str] = {}
    case_size: dict[str, str] = {}
    for per in cases.values():
        for cid, c in per.items():
            if c.modality or cid not in case_mod:
                case_mod[cid] = c.modality or case_mod.get(cid) or _mod_from_id(cid)
            if c.size_class:
                case_size[cid] = c.size_class
    case_ids = sorted(case_mod)
    mods = modality_order(set(case_mod.values()))
    return _Loaded(entries, cases, case_ids, case_mod, case_size, mods, len(candidates))


def _mod_from_id(cid: str) -> str:
    parts = cid.split("_")
    return parts[1] if len(parts) >= 3 else "other"


def _common_columns(mods: list[str], has_size: bool) -> list[dict]:
    cols = [
        _col("dsc", "DSC", "score", group="overall", title="mean Dice over all cases (failed = 0)"),
        _col("nsd", "NSD", "score", group="overall", title="mean normalized surface Dice (failed = 0)"),
        _col("runtime_s", "Runtime (s)", "runtime", group="overall", title="mean runtime per case in seconds (failed = time limit)"),
        _col("cases_ok", "Cases OK", "int", group="overall", title="cases that ran and produced a valid output"),
    ]
    for m in mods:
        cols += [
            _col(f"{m}:dsc", "DSC", "score", group="modality", modality=m, title=f"{m}: mean DSC"),
            _col(f"{m}:nsd", "NSD", "score", group="modality", modality=m, title=f"{m}: mean NSD"),
            _col(f"{m}:runtime_s", "Time (s)", "runtime", group="modality", modality=m, title=f"{m}: mean runtime per case (s)"),
        ]
    if has_size:
        for s in SIZE_CLASSES:
            cols += [
                _col(f"size:{s}:dsc", "DSC", "score", group="size", modality=f"size:{s}", title=f"{s} structures: mean DSC"),
                _col(f"size:{s}:nsd", "NSD", "score", group="size", modality=f"size:{s}", title=f"{s} structures: mean NSD"),
            ]
    return cols


def _track_info(track: Track, challenge: Challenge) -> dict[str, Any]:
    cutoff = freeze_cutoff(track)
    scheme = track.ranking_scheme if track.ranking_scheme in rk.SCHEMES else rk.DEFAULT_SCHEME
    return {
        "challenge": challenge.slug, "challenge_title": challenge.title, "track": track.slug,
        "title": track.title, "kind": track.kind.value if hasattr(track.kind, "value") else str(track.kind),
        "description": track.description, "scheme": scheme, "scheme_label": rk.SCHEMES[scheme],
        "metric_profile": track.metric_profile, "row_policy": getattr(track.row_policy, "value", str(track.row_policy)),
        "visibility": getattr(track.visibility, "value", str(track.visibility)),
        "hidden": track.visibility == Visibility.hidden, "frozen": cutoff is not None,
        "frozen_at": _iso(cutoff), "closes_at": _iso(track.closes_at), "case_timeout_s": track.case_timeout_s,
        "repro_margin_dsc": track.repro_margin_dsc, "repro_margin_nsd": track.repro_margin_nsd,
    }


def build_board(session: Session, track: Track, *, organizer: bool = False) -> dict[str, Any]:
    """The complete leaderboard of ``track``: track info, columns and rows (JSON-ready)."""
    challenge = session.get(Challenge, track.challenge_id)
    info = _track_info(track, challenge)
    kind = info["kind"]
    loaded = _load(session, track, organizer=organizer)
    time_limit = float(track.case_timeout_s)
    label_classes = _manifest_labels(track.testset or "")
    if label_classes is not None:  # only a manifest that describes these cases counts
        label_classes = {cid: v for cid, v in label_classes.items() if cid in loaded.case_mod} or None
    has_size = bool(label_classes) or bool(loaded.case_size)
    rows: list[dict[str, Any]] = []
    for s, team in loaded.entries:
        row = {
            "rank": None, "team": team, "team_id": s.team_id, "submission_id": s.id, "label": s.label,
            "baseline": bool(s.is_baseline), "excluded": bool(s.excluded), "submitted_at": _iso(s.created_at),
            "entry": "excluded" if s.excluded else ("baseline" if s.is_baseline else ""),
        }
        if organizer:
            row["exclusion_reason"] = s.exclusion_reason if s.excluded else ""
        row.update(_entry_stats(loaded.cases.get(s.id, {}), loaded.case_ids, loaded.case_mod, loaded.mods,
                                label_classes, loaded.case_size, time_limit))
        rows.append(row)

    columns = [_col("rank", "Rank", "int", group="id", title="final rank (baselines and excluded entries are unranked)"),
               _col("team", "Team", "text", group="id"), _col("label", "Submission", "text", group="id"),
               _col("entry", "Entry", "text", group="id", title="baseline rows and excluded rows are not ranked")]
    if kind == TrackKind.reproducibility.value:
        columns = columns[1:]  # not ranked: no rank column
        columns.append(_col("reproduces", "Reproduces", "text", group="id", title="the submission this one reproduces"))
        columns += _common_columns(loaded.mods, has_size)
        columns += _repro_columns()
        _add_repro(session, track, rows, loaded, time_limit, organizer=organizer)
        scheme_used = None
    else:
        columns.append(_col("score", "Mean rank", "score", group="overall",
                            title="the ranking scheme's score (lower is better)"))
        columns += _common_columns(loaded.mods, has_size)
        _rank_rows(rows, loaded, info["scheme"], time_limit)
        scheme_used = info["scheme"]
        if kind == TrackKind.booster.value:
            columns += [
                _col("delta_dsc", "ΔDSC", "delta", group="booster", title="DSC change against the team's main-track entry"),
                _col("delta_nsd", "ΔNSD", "delta", group="booster", title="NSD change against the team's main-track entry"),
                _col("speedup", "Speed-up ×", "ratio", group="booster", title="main-track runtime ÷ booster runtime"),
            ]
            _add_booster(session, track, rows, organizer=organizer)
    if organizer:
        columns.append(_col("exclusion_reason", "Excluded because", "text", group="id"))
    info["ranked"] = scheme_used is not None
    rows.sort(key=lambda r: (r["excluded"], r["rank"] is None, r["rank"] or 0,
                             -(r["dsc"] or 0.0), r["submission_id"]))
    for r in rows:
        for c in columns:
            r.setdefault(c["key"], None)
    return {**info, "audience": "organizer" if organizer else "public", "modalities": loaded.mods,
            "size_classes": list(SIZE_CLASSES) if has_size else [],
            "size_source": "manifest labels" if label_classes else ("case size class" if has_size else None),
            "n_cases": len(loaded.case_ids), "n_submissions": loaded.n_submissions, "columns": columns, "rows": rows}


def _rank_rows(rows: list[dict], loaded: _Loaded, scheme: str, time_limit: float) -> None:
    ranked = [i for i, (s, _) in enumerate(loaded.entries) if not s.is_baseline and not s.excluded]
    if not ranked:
        return
    mat = case_matrix([loaded.cases.get(loaded.entries[i][0].id, {}) for i in ranked], loaded.case_ids,
                      time_limit=time_limit, failed_as_nan=True)
    res = rk.rank_entries(mat, scheme=scheme, metrics=rk.with_time_limit(rk.DEFAULT_METRICS, time_limit))
    for pos, i in enumerate(ranked):
        rows[i]["rank"] = int(res.rank[pos])
        rows[i]["score"] = _r(res.score[pos])


def _add_booster(session: Session, track: Track, rows: list[dict], *, organizer: bool) -> None:
    main = session.scalar(select(Track).where(Track.challenge_id == track.challenge_id, Track.kind == TrackKind.main)
                          .order_by(Track.id))
    if main is None or (main.visibility == Visibility.hidden and not organizer):
        return  # a hidden main track's scores must not leak through the deltas
    main_board = build_board(session, main, organizer=False)
    by_team = {r["team_id"]: r for r in main_board["rows"] if not r["baseline"] and not r["excluded"]}
    for r in rows:
        m = by_team.get(r["team_id"]) if not r["baseline"] else None
        if m is None:
            continue
        r["main_submission_id"] = m["submission_id"]
        r["delta_dsc"] = _r(r["dsc"] - m["dsc"]) if r["dsc"] is not None and m["dsc"] is not None else None
        r["delta_nsd"] = _r(r["nsd"] - m["nsd"]) if r["nsd"] is not None and m["nsd"] is not None else None
        r["speedup"] = _r(m["runtime_s"] / r["runtime_s"], 2) if r["runtime_s"] and m["runtime_s"] else None


def _repro_columns() -> list[dict]:
    return [
        _col("delta_dsc", "ΔDSC", "delta", group="repro", title="mean DSC change (reproduction − original)"),
        _col("delta_dsc_ci", "ΔDSC 95% CI", "text", group="repro", title="95% bootstrap interval of the mean ΔDSC"),
        _col("delta_nsd", "ΔNSD", "delta", group="repro", title="mean NSD change (reproduction − original)"),
        _col("delta_nsd_ci", "ΔNSD 95% CI", "text", group="repro", title="95% bootstrap interval of the mean ΔNSD"),
        _col("runtime_ratio", "Runtime ratio", "ratio", group="repro", title="total runtime: reproduction ÷ original"),
        _col("verdict", "Verdict", "text", group="repro",
             title="reproduced when both intervals lie within the track's margins"),
    ]


def _add_repro(session: Session, track: Track, rows: list[dict], loaded: _Loaded, time_limit: float, *,
               organizer: bool = False) -> None:
    subs = {s.id: s for s, _ in loaded.entries}
    orig_ids = sorted({s.reproduces_id for s in subs.values() if s.reproduces_id})
    originals = {s.id: (s, name) for s, name in session.execute(
        select(Submission, Team.name).join(Team, Submission.team_id == Team.id).where(Submission.id.in_(orig_ids)))
    } if orig_ids else {}
    if not organizer:  # the public sees an original (and its per-case scores) only where its own board shows it
        shown: dict[int, set[int]] = {}
        for oid, (o, _) in list(originals.items()):
            if o.track_id not in shown:
                shown[o.track_id] = public_submission_ids(session, session.get(Track, o.track_id))
            if oid not in shown[o.track_id]:
                del originals[oid]
    orig_cases = _load_cases(session, list(originals)) if originals else {}
    from api.submissions.feedback import per_case_public

    tracks = {track.id: track}
    for o, _ in originals.values():
        tracks.setdefault(o.track_id, session.get(Track, o.track_id))
    for r in rows:
        s = subs[r["submission_id"]]
        r["details"] = None
        if s.reproduces_id is None or s.reproduces_id not in originals:
            r["reproduces"] = "—"
            r["verdict"] = "no original"
            continue
        o, oname = originals[s.reproduces_id]
        r["reproduces"] = f"{oname} · {o.label or 'submission'} (#{o.id})"
        r["reproduces_id"] = o.id
        oc = orig_cases.get(o.id, {})
        rc = loaded.cases.get(s.id, {})
        ids = sorted(set(oc) | set(rc))
        to_t = lambda c: (c.dsc, c.nsd, c.runtime_s) if c.ok else (math.nan, math.nan, math.nan)  # noqa: E731
        res = repro_compare({k: to_t(v) for k, v in oc.items()}, {k: to_t(v) for k, v in rc.items()},
                            time_limit_s=time_limit, margin_dsc=track.repro_margin_dsc,
                            margin_nsd=track.repro_margin_nsd, case_ids=ids, seed=s.id)
        r["delta_dsc"] = _r(res.delta_dsc.mean)
        r["delta_nsd"] = _r(res.delta_nsd.mean)
        r["delta_dsc_ci"] = f"[{res.delta_dsc.low:+.3f}, {res.delta_dsc.high:+.3f}]"
        r["delta_nsd_ci"] = f"[{res.delta_nsd.low:+.3f}, {res.delta_nsd.high:+.3f}]"
        r["runtime_ratio"] = _r(res.runtime_ratio, 2)
        r["verdict"] = res.verdict
        r["details"] = {
            "margin_dsc": res.margin_dsc, "margin_nsd": res.margin_nsd, "notes": res.notes,
            "delta_dsc": {k: _r(v, 4) for k, v in res.delta_dsc.to_dict().items()},
            "delta_nsd": {k: _r(v, 4) for k, v in res.delta_nsd.to_dict().items()},
            "cases": [{"case_id": c["case_id"], "modality": loaded.case_mod.get(c["case_id"]) or _mod_from_id(c["case_id"]),
                       "dsc_orig": _r(c["dsc_orig"]), "dsc_repro": _r(c["dsc_repro"]), "delta_dsc": _r(c["delta_dsc"]),
                       "nsd_orig": _r(c["nsd_orig"]), "nsd_repro": _r(c["nsd_repro"]), "delta_nsd": _r(c["delta_nsd"]),
                       "runtime_orig": _r(c["runtime_orig"], 2), "runtime_repro": _r(c["runtime_repro"], 2),
                       "runtime_ratio": _r(c["runtime_ratio"], 2)} for c in res.cases]
            if organizer or per_case_public(track, tracks[o.track_id]) else [],  # the tracks' feedback policy
        }


# --------------------------------------------------------------------------- organizer statistics


def stability(session: Session, track: Track, *, n_boot: int = 1000, metric: str = "dsc",
              alpha: float = 0.05, seed: int = 0, significance: bool = True) -> dict[str, Any]:
    """Bootstrap ranking stability and the significance map of the ranked entries (organizers)."""
    loaded = _load(session, track, organizer=False)
    scheme = track.ranking_scheme if track.ranking_scheme in rk.SCHEMES else rk.DEFAULT_SCHEME
    time_limit = float(track.case_timeout_s)
    ranked = [(s, name) for s, name in loaded.entries if not s.is_baseline and not s.excluded]
    names = [f"{name} · {s.label}" if s.label else name for s, name in ranked]
    metrics = rk.with_time_limit(rk.DEFAULT_METRICS, time_limit)
    by_name = {m.name: m for m in metrics}
    if metric not in by_name:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(by_name)}")
    mat = case_matrix([loaded.cases.get(s.id, {}) for s, _ in ranked], loaded.case_ids,
                      time_limit=time_limit, failed_as_nan=True)
    out: dict[str, Any] = {"scheme": scheme, "scheme_label": rk.SCHEMES[scheme], "n_cases": len(loaded.case_ids),
                           "submission_ids": [s.id for s, _ in ranked]}
    if len(ranked) < 2 or not loaded.case_ids:
        out.update(bootstrap=None, significance=None, message="needs at least two ranked entries with cases")
        return out
    st = rk.bootstrap_stability(mat, scheme=scheme, metrics=metrics, n_boot=n_boot, seed=seed)
    order = np.argsort(st.full_rank, kind="stable")
    b = st.to_dict(names)
    b["entries"] = [b["entries"][i] for i in order]
    if not significance:
        out.update(bootstrap=b, significance=None)
        return out
    s = rk.significance_map(mat, metric=by_name[metric], alpha=alpha).to_dict(names)
    idx = [int(i) for i in order]
    for key in ("pvalues", "adjusted", "significant"):
        s[key] = [[s[key][i][j] for j in idx] for i in idx]
    s["names"] = [names[i] for i in idx]
    out.update(bootstrap=b, significance=s)
    return out


def to_json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON (NaN never appears: the read model writes None)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
