"""The leaderboard read model: database rows → the typed :class:`~api.leaderboard.board.Board` of a track.

:func:`build_board` builds a whole board; the JSON and CSV routes (``api.leaderboard.routes``) and the pages
(``leaderboard_web``) render that one object, so they always show the same columns and values. The pages read
everything else they show through this module too (:func:`challenge_cards`, :func:`submission_modalities`,
:func:`track_tabs`), never the models directly.

Rules (docs/leaderboard.md):

* Only succeeded submissions are listed; a track's ``row_policy`` picks one row per team
  (``best``: highest mean DSC, then NSD, then fastest; ``latest``: newest). Baselines get their own
  rows, marked and unranked. Excluded submissions are left out; organizers see them (unranked) with
  the exclusion reason.
* Frozen: only submissions created before the freeze time count (``frozen_at``, or ``closes_at`` when
  the track's visibility is ``frozen`` and ``frozen_at`` is unset).
* Scores come from each submission's latest run (highest attempt), case by case. A failed or missing case is
  charged by :func:`evaluator.failures.charge_failures`: DSC 0, NSD 0 and runtime = the case time limit of
  THAT RUN (``Run.case_timeout_s``; the track's current limit only for runs older than the column), in every
  mean and in aggregate-then-rank; it gets the worst rank in rank-then-aggregate. The board and the totals
  stored with the run (``evaluator.runs.summarize``) therefore agree, also after an organizer edits the track.
* booster rows add the change against the team's main-track row (ΔDSC, ΔNSD, speed-up ×);
  reproducibility rows compare each reproduction with the submission it reproduces, case by case.

:func:`board_version` is a cheap fingerprint (a few indexed aggregate queries) of everything a board depends on;
the cache (``api.leaderboard.cache``) keys its entries with it.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, null, select
from sqlalchemy.orm import Session

from api.challenges.track_settings import TIMING_LABELS
from api.leaderboard.board import (
    INTERACTIVE_METRICS,
    METRICS,
    SIZE_CLASSES,
    Board,
    Column,
    ReproCase,
    ReproDetails,
    Row,
    TrackInfo,
    iteration_columns,
    metric_columns,
    r,
)
from api.lifecycle import latest_attempt_subquery
from api.models import (
    CaseResult,
    CaseStatus,
    Challenge,
    Member,
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
from api.params import as_utc
from data_manifests.schema import modality_order
from evaluator import ranking as rk
from evaluator.failures import charge_failures, run_time_limit
from evaluator.reproducibility import compare as repro_compare
from evaluator.runs import score_or_nan, score_or_zero

__all__ = [
    "find_track", "freeze_cutoff", "board_version", "build_board", "stability", "modality_order",
    "public_submission_ids", "publicly_visible", "may_see_submission",
    "challenge_cards", "track_tabs", "submission_modalities", "ChallengeCard", "ModalityTotals",
    "visible_challenges", "find_challenge", "overview_version", "SubmissionDetail", "submission_detail",
    "RunDetail", "run_detail", "prompt_comparison",
]

log = logging.getLogger(__name__)

def _iso(dt: datetime | None) -> str | None:
    dt = as_utc(dt)
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
        return as_utc(track.frozen_at)
    if track.visibility == Visibility.frozen and track.closes_at is not None:
        return as_utc(track.closes_at)
    return None


def board_version(session: Session, track: Track) -> tuple[Any, ...]:
    """A cheap fingerprint of everything the board of ``track`` depends on (in this database)."""
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
    return (n, str(last), max_run, tuple(tuple(str(v) for v in t) for t in tracks))


# --------------------------------------------------------------------------- manifest size classes


@functools.lru_cache(maxsize=32)
def _manifest_labels(testset: str) -> dict[str, dict[str, str]] | None:
    """``case id → {label value → size class}`` from the test set's manifest (the one lookup rule:
    :func:`data_manifests.check_testset`), when it is readable."""
    from data_manifests import ManifestError, check_testset

    try:
        m = check_testset(testset)
    except ManifestError:  # an unreadable manifest just means "no label classes"
        log.debug("no size classes from test set %r", testset, exc_info=True)
        return None
    return {case.id: {str(lab.value): lab.size_class for lab in case.labels} for case in m.cases}


# --------------------------------------------------------------------------- loading


@dataclass
class CaseRecord:
    """One case of a run as the board reads it. ``dsc``/``nsd`` NaN on an ok case: undefined (cvpr24: a label
    absent from both masks; stored NULL), left out of means and per-case ranks (evaluator.ranking)."""

    modality: str
    size_class: str
    ok: bool
    dsc: float
    nsd: float
    runtime_s: float
    per_class: dict[str, Any] = field(default_factory=dict)
    # interactive tracks: the AUCs, the scores after each iteration, the class time budget marker
    dsc_auc: float = 0.0
    nsd_auc: float = 0.0
    iter_dsc: list[float] = field(default_factory=list)
    iter_nsd: list[float] = field(default_factory=list)
    over_budget: bool = False


@dataclass
class RunCases:
    """The cases of a submission's latest run and the time limit that run was executed under."""

    time_limit_s: float
    cases: dict[str, CaseRecord] = field(default_factory=dict)


def _chunks(ids: list[int], n: int = 500) -> Iterator[list[int]]:
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


def _latest_runs(session: Session, sub_ids: list[int]) -> dict[int, tuple[int, float | None]]:
    """``submission id → (id, case time limit) of its latest run`` (:func:`api.lifecycle.latest_attempt_subquery`)."""
    out: dict[int, tuple[int, float | None]] = {}
    for chunk in _chunks(sub_ids):
        latest = latest_attempt_subquery(chunk)
        for sid, rid, limit in session.execute(
            select(Run.submission_id, Run.id, Run.case_timeout_s)
            .join(latest, (Run.submission_id == latest.c.submission_id) & (Run.attempt == latest.c.attempt))
        ):
            out[sid] = (rid, limit)
    return out


def _defined(x: Any) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def _label_scores(per_class: dict[str, Any]) -> dict[str, Any]:
    """``label → {dsc, nsd}`` from a stored ``per_class``: the scorer stores ``CaseScore.to_dict()``
    (labels under its ``"per_class"`` key); a bare ``{label: {dsc, nsd}}`` mapping is accepted too."""
    inner = per_class.get("per_class")
    return inner if isinstance(inner, dict) else per_class


def _load_cases(session: Session, subs: list[Submission], track_of: dict[int, Track], *,
                with_per_class: bool = False) -> dict[int, RunCases]:
    """``submission id → its latest run's cases and time limit`` (``track_of``: track id → track). The JSON columns
    are read only where they are used (decoding them is most of a board's build time): ``per_class`` with
    ``with_per_class`` (structure-size columns from manifest labels), the iterations on interactive tracks."""
    interactive = any(t.kind == TrackKind.interactive for t in track_of.values())
    runs = _latest_runs(session, [s.id for s in subs])
    out = {s.id: RunCases(run_time_limit(runs.get(s.id, (0, None))[1], track_of[s.track_id].case_timeout_s))
           for s in subs}
    by_run = {rid: sid for sid, (rid, _) in runs.items()}
    for chunk in _chunks(list(by_run)):
        rows: Iterable[tuple[Any, ...]] = session.execute(
            select(CaseResult.run_id, CaseResult.case_id, CaseResult.modality, CaseResult.size_class,
                   CaseResult.status, CaseResult.dsc, CaseResult.nsd, CaseResult.runtime_s,
                   CaseResult.per_class if with_per_class else null(),
                   *((CaseResult.dsc_auc, CaseResult.nsd_auc, CaseResult.iterations, CaseResult.budget_exceeded)
                     if interactive else (null(), null(), null(), null())))
            .where(CaseResult.run_id.in_(chunk))
        )
        for rid, cid, mod, size, status, dsc, nsd, rt, per_class, dauc, nauc, stored_its, over in rows:
            its = stored_its if isinstance(stored_its, list) else []
            out[by_run[rid]].cases[cid] = CaseRecord(
                str(mod or ""), str(size or ""), status == CaseStatus.ok, score_or_nan(dsc), score_or_nan(nsd), score_or_zero(rt),
                per_class if isinstance(per_class, dict) else {}, score_or_zero(dauc), score_or_zero(nauc),
                [score_or_zero(e.get("dsc")) for e in its if isinstance(e, dict)],
                [score_or_zero(e.get("nsd")) for e in its if isinstance(e, dict)], bool(over))
    return out


Entry = tuple[Submission, str]  # a submission and its team's name


def _candidates(session: Session, track: Track, *, organizer: bool) -> list[Entry]:
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


def may_see_submission(session: Session, sub: Submission, member: Member | None) -> bool:
    """Organizers and the owning team always; anyone else only a submission on a public board."""
    if member is not None and (member.role == Role.organizer or
                               (member.team_id is not None and member.team_id == sub.team_id)):
        return True
    return publicly_visible(session, sub)


def _pick(subs: list[Entry], policy: RowPolicy) -> list[Entry]:
    """One row per (team, baseline) by the row policy; excluded submissions each get their own row."""
    groups: dict[tuple[int, bool], list[Entry]] = {}
    excluded = []
    for s, name in subs:
        if s.excluded:
            excluded.append((s, name))
        else:
            groups.setdefault((s.team_id, bool(s.is_baseline)), []).append((s, name))

    def best_key(item: Entry) -> tuple[Any, ...]:
        s = item[0]
        return (s.dsc if s.dsc is not None else -1.0, s.nsd if s.nsd is not None else -1.0,
                -(s.runtime_s if s.runtime_s is not None else math.inf), as_utc(s.created_at), s.id)

    def latest_key(item: Entry) -> tuple[Any, ...]:
        return (as_utc(item[0].created_at), item[0].id)

    key = latest_key if policy == RowPolicy.latest else best_key
    chosen = [max(g, key=key) for g in groups.values()]
    return chosen + excluded


@dataclass
class _Loaded:
    entries: list[Entry]
    cases: dict[int, RunCases]
    case_ids: list[str]
    case_mod: dict[str, str]
    case_size: dict[str, str]
    mods: list[str]
    n_submissions: int = 0  # the scored submissions the board counted (before the row policy picks)

    def run_of(self, sub: Submission) -> RunCases:
        return self.cases[sub.id]


def _mod_from_id(cid: str) -> str:
    parts = cid.split("_")
    return parts[1] if len(parts) >= 3 else "other"


def _load(session: Session, track: Track, *, organizer: bool) -> _Loaded:
    candidates = _candidates(session, track, organizer=organizer)
    entries = _pick(candidates, track.row_policy)
    cases = _load_cases(session, [s for s, _ in entries], {track.id: track},
                        with_per_class=_manifest_labels(track.testset or "") is not None)
    case_mod: dict[str, str] = {}
    case_size: dict[str, str] = {}
    for per in cases.values():
        for cid, c in per.cases.items():
            if c.modality or cid not in case_mod:
                case_mod[cid] = c.modality or case_mod.get(cid) or _mod_from_id(cid)
            if c.size_class:
                case_size[cid] = c.size_class
    case_ids = sorted(case_mod)
    mods = modality_order(set(case_mod.values()))
    return _Loaded(entries, cases, case_ids, case_mod, case_size, mods, len(candidates))


# --------------------------------------------------------------------------- aggregation


def case_matrix(runs: list[RunCases], case_ids: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(with_nan, charged)``: ``{"dsc", "nsd", "runtime_s"} → (n_entries, n_cases)`` with failed and missing
    cases as NaN (rank-then-aggregate: the worst rank), and charged by :func:`charge_failures` with each entry's
    run limit (means, aggregate-then-rank, significance). Undefined scores of ok cases stay NaN in both; which
    they are is :func:`undefined_matrix` (the rankings leave them out)."""
    n, k = len(runs), len(case_ids)
    raw = {m: np.zeros((n, k)) for m in ("dsc", "nsd", "runtime_s")}
    ok = np.zeros((n, k), dtype=bool)
    limits = np.array([[run.time_limit_s] for run in runs], dtype=float).reshape(n, 1)
    for i, run in enumerate(runs):
        for j, cid in enumerate(case_ids):
            c = run.cases.get(cid)
            if c is not None and c.ok:
                ok[i, j] = True
                raw["dsc"][i, j], raw["nsd"][i, j], raw["runtime_s"][i, j] = c.dsc, c.nsd, c.runtime_s
    charged = charge_failures(raw["dsc"], raw["nsd"], raw["runtime_s"], ok, limits)
    with_nan = {m: np.where(ok, v, np.nan) for m, v in raw.items()}
    out = dict(charged._asdict())
    for m in ("dsc_auc", "nsd_auc"):  # interactive tracks: a failed case's AUC is 0, like its DSC
        v = np.array([[getattr(run.cases.get(cid), m, 0.0) if run.cases.get(cid) is not None else 0.0
                       for cid in case_ids] for run in runs], dtype=float).reshape(n, k)
        with_nan[m], out[m] = np.where(ok, v, np.nan), np.where(ok, v, 0.0)
    return with_nan, out


def undefined_matrix(runs: list[RunCases], case_ids: list[str]) -> dict[str, np.ndarray]:
    """``{"dsc", "nsd"} → (n_entries, n_cases)`` booleans: the ok cases whose score is undefined (NaN), which
    ``evaluator.ranking`` leaves out of per-case ranks and means (docs/interactive.md, "Undefined cases")."""
    out = {}
    for m in ("dsc", "nsd"):
        out[m] = np.array([[bool(c is not None and c.ok and math.isnan(getattr(c, m))) for c in
                            (run.cases.get(cid) for cid in case_ids)] for run in runs], dtype=bool
                          ).reshape(len(runs), len(case_ids))
    return out


def _mean(xs: list[float]) -> float | None:
    """The mean of the defined values (pandas' ``mean``: an undefined, NaN, value is skipped)."""
    vals = [x for x in xs if not math.isnan(x)]
    return (sum(vals) / len(vals)) if vals else None


def _curve(present: list[CaseRecord | None], ok: list[bool], iterations: int) -> dict[str, list[float | None]]:
    """Mean DSC and NSD after each iteration 0..K over every case (a failed or missing case counts 0 throughout;
    a case with fewer stored iterations keeps its last value)."""
    out: dict[str, list[float | None]] = {}
    for metric in ("dsc", "nsd"):
        sums = [0.0] * (iterations + 1)
        for c, good in zip(present, ok, strict=True):
            pts = (c.iter_dsc if metric == "dsc" else c.iter_nsd) if (c is not None and good) else []
            for i in range(iterations + 1):
                sums[i] += pts[min(i, len(pts) - 1)] if pts else 0.0
        n = len(present)
        out[metric] = [r(v / n) if n else None for v in sums]
    return out


def _entry_stats(run: RunCases, case_ids: list[str], case_mod: dict[str, str], mods: list[str],
                 label_classes: dict[str, dict[str, str]] | None, case_size: dict[str, str],
                 iterations: int | None = None) -> Row:
    """Overall, per-modality and per-size-class aggregates of one entry (failures charged), as a bare row."""
    present = [run.cases.get(cid) for cid in case_ids]
    ok = [c is not None and c.ok for c in present]
    charged = charge_failures([c.dsc if c else 0.0 for c in present], [c.nsd if c else 0.0 for c in present],
                              [c.runtime_s if c else 0.0 for c in present], ok, run.time_limit_s)
    values = {"dsc": charged.dsc.tolist(), "nsd": charged.nsd.tolist(), "runtime_s": charged.runtime_s.tolist()}
    per_mod: dict[str, dict[str, list[float]]] = {m: {k: [] for k in values} for m in mods}
    per_size: dict[str, dict[str, list[float]]] = {s: {"dsc": [], "nsd": []} for s in SIZE_CLASSES}
    for j, cid in enumerate(case_ids):
        for key, vals in values.items():
            per_mod[case_mod[cid]][key].append(vals[j])
        if label_classes is not None and cid in label_classes:
            c = present[j]
            labels = _label_scores(c.per_class) if (c is not None and ok[j]) else {}
            for lab, cls in label_classes[cid].items():
                if cls not in per_size:
                    continue
                if not ok[j]:  # a failed case's structures are charged like the case
                    per_size[cls]["dsc"].append(charged.dsc[j])
                    per_size[cls]["nsd"].append(charged.nsd[j])
                    continue
                pc = labels.get(lab) or {}
                # an undefined class score (absent from both masks: None/NaN) is left out, as the case mean does
                if _defined(pc.get("dsc")):
                    per_size[cls]["dsc"].append(float(pc["dsc"]))
                if _defined(pc.get("nsd")):
                    per_size[cls]["nsd"].append(float(pc["nsd"]))
        elif case_size.get(cid, "") in per_size:
            per_size[case_size[cid]]["dsc"].append(values["dsc"][j])
            per_size[case_size[cid]]["nsd"].append(values["nsd"][j])
    if iterations is not None:  # interactive: the AUCs (failed = 0) per modality too, and the curve
        for key in ("dsc_auc", "nsd_auc"):
            values[key] = [getattr(c, key) if (c is not None and ok[j]) else 0.0 for j, c in enumerate(present)]
            for j, cid in enumerate(case_ids):
                per_mod[case_mod[cid]].setdefault(key, []).append(values[key][j])
    digits = {m.key: m.digits for m in (*METRICS, *INTERACTIVE_METRICS)}
    row = Row(submission_id=0, team="", team_id=0, label="", baseline=False, excluded=False, submitted_at=None)
    row.overall = {k: r(_mean(v), digits[k]) for k, v in values.items()}
    if iterations is not None:
        row.curve = _curve(present, ok, iterations)
        for metric, pts in row.curve.items():
            row.overall.update({f"{metric}_it{i}": v for i, v in enumerate(pts)})
        row.over_budget = sum(1 for j, c in enumerate(present) if c is not None and ok[j] and c.over_budget)
    row.by_modality = {m: {k: r(_mean(v), digits[k]) for k, v in per_mod[m].items()} for m in mods}
    row.by_size = {s: {k: r(_mean(v), digits[k]) for k, v in per_size[s].items()} for s in SIZE_CLASSES}
    row.cases_ok, row.cases_total = sum(ok), len(case_ids)
    return row


def _track_info(track: Track, challenge: Challenge) -> TrackInfo:
    cutoff = freeze_cutoff(track)
    scheme = track.ranking_scheme if track.ranking_scheme in rk.SCHEMES else rk.DEFAULT_SCHEME
    return TrackInfo(
        challenge=challenge.slug, challenge_title=challenge.title, track=track.slug, title=track.title,
        kind=track.kind.value, description=track.description, scheme=scheme, scheme_label=rk.SCHEMES[scheme],
        metric_profile=track.metric_profile, row_policy=track.row_policy.value, visibility=track.visibility.value,
        hidden=track.visibility == Visibility.hidden, frozen=cutoff is not None, frozen_at=_iso(cutoff),
        closes_at=_iso(track.closes_at), case_timeout_s=track.case_timeout_s,
        repro_margin_dsc=track.repro_margin_dsc, repro_margin_nsd=track.repro_margin_nsd,
        prompt=track.prompt or "box", timing=track.timing or "container",
        timing_label=TIMING_LABELS.get(track.timing or "container", ""),
        iterations=int(track.iterations) if track.kind == TrackKind.interactive else None,
    )


_ID_COLUMNS = (
    Column("rank", "Rank", "int", group="id", title="final rank (baselines and excluded entries are unranked)"),
    Column("team", "Team", "text", group="id"),
    Column("label", "Submission", "text", group="id"),
    Column("entry", "Entry", "text", group="id", title="baseline rows and excluded rows are not ranked"),
)
_SCORE_COLUMN = Column("score", "Mean rank", "score", group="overall", title="the ranking scheme's score (lower is better)")
_BOOSTER_COLUMNS = (
    Column("delta_dsc", "ΔDSC", "delta", group="booster", title="DSC change against the team's main-track entry"),
    Column("delta_nsd", "ΔNSD", "delta", group="booster", title="NSD change against the team's main-track entry"),
    Column("speedup", "Speed-up ×", "ratio", group="booster", title="main-track runtime ÷ booster runtime"),
)
_REPRO_COLUMNS = (
    Column("delta_dsc", "ΔDSC", "delta", group="repro", title="mean DSC change (reproduction − original)"),
    Column("delta_dsc_ci", "ΔDSC 95% CI", "text", group="repro", title="95% bootstrap interval of the mean ΔDSC"),
    Column("delta_nsd", "ΔNSD", "delta", group="repro", title="mean NSD change (reproduction − original)"),
    Column("delta_nsd_ci", "ΔNSD 95% CI", "text", group="repro", title="95% bootstrap interval of the mean ΔNSD"),
    Column("runtime_ratio", "Runtime ratio", "ratio", group="repro", title="total runtime: reproduction ÷ original"),
    Column("verdict", "Verdict", "text", group="repro", title="reproduced when both intervals lie within the track's margins"),
)


def build_board(session: Session, track: Track, *, organizer: bool = False) -> Board:
    """The complete leaderboard of ``track`` for the public or for organizers."""
    info = _track_info(track, track.challenge)
    loaded = _load(session, track, organizer=organizer)
    label_classes = _manifest_labels(track.testset or "")
    if label_classes is not None:  # only a manifest that describes these cases counts
        label_classes = {cid: v for cid, v in label_classes.items() if cid in loaded.case_mod} or None
    has_size = bool(label_classes) or bool(loaded.case_size)
    rows: list[Row] = []
    for s, team in loaded.entries:
        row = _entry_stats(loaded.run_of(s), loaded.case_ids, loaded.case_mod, loaded.mods, label_classes,
                           loaded.case_size, info.iterations)
        row.submission_id, row.team, row.team_id, row.label = s.id, team, s.team_id, s.label
        row.baseline, row.excluded, row.submitted_at = bool(s.is_baseline), bool(s.excluded), _iso(s.created_at)
        if organizer:
            row.exclusion_reason = s.exclusion_reason if s.excluded else ""
        rows.append(row)

    ranked = track.kind != TrackKind.reproducibility
    if ranked and info.iterations is not None:  # interactive: AUCs, final scores, runtime; the curve's numbers
        columns = [*_ID_COLUMNS, _SCORE_COLUMN, *metric_columns(loaded.mods, has_size, INTERACTIVE_METRICS),
                   Column("over_budget", "Over budget", "int", group="overall",
                          title="cases stopped by the class time budget (they keep their last valid prediction)"),
                   *iteration_columns(info.iterations)]
        _rank_rows(rows, loaded, info.scheme, INTERACTIVE_RANKED)
    elif ranked:
        columns = [*_ID_COLUMNS, _SCORE_COLUMN, *metric_columns(loaded.mods, has_size)]
        _rank_rows(rows, loaded, info.scheme)
        if track.kind == TrackKind.booster:
            columns += _BOOSTER_COLUMNS
            _add_booster(session, track, rows, organizer=organizer)
    else:  # not ranked: no rank column
        columns = [*_ID_COLUMNS[1:], Column("reproduces", "Reproduces", "text", group="id",
                                            title="the submission this one reproduces"),
                   *metric_columns(loaded.mods, has_size), *_REPRO_COLUMNS]
        _add_repro(session, track, rows, loaded, organizer=organizer)
    if organizer:
        columns.append(Column("exclusion_reason", "Excluded because", "text", group="id"))
    rows.sort(key=lambda row: (row.excluded, row.rank is None, row.rank or 0, -(row.dsc or 0.0), row.submission_id))
    return Board(info=info, audience="organizer" if organizer else "public", ranked=ranked, modalities=loaded.mods,
                 size_classes=list(SIZE_CLASSES) if has_size else [],
                 size_source="manifest labels" if label_classes else ("case size class" if has_size else None),
                 n_cases=len(loaded.case_ids), n_submissions=loaded.n_submissions, columns=columns, rows=rows)


def _ranked_matrices(loaded: _Loaded, subs: list[Submission], scheme: str
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The matrix the ``scheme`` ranks: failures NaN (rank-then-aggregate) or charged (aggregate-then-rank),
    and the undefined cells (left out by either scheme)."""
    runs = [loaded.run_of(s) for s in subs]
    with_nan, charged = case_matrix(runs, loaded.case_ids)
    return (charged if scheme == "aggregate_then_rank" else with_nan), undefined_matrix(runs, loaded.case_ids)


#: interactive tracks rank on CVPR25_iter_eval.py's five metrics with the track's scheme
INTERACTIVE_RANKED: tuple[rk.Metric, ...] = (
    rk.Metric("dsc_auc", True, 0.0, "DSC AUC"),
    rk.Metric("nsd_auc", True, 0.0, "NSD AUC"),
    rk.Metric("dsc", True, 0.0, "Final DSC"),
    rk.Metric("nsd", True, 0.0, "Final NSD"),
    rk.Metric("runtime_s", False, float("inf"), "Runtime (s)"),
)


def _rank_rows(rows: list[Row], loaded: _Loaded, scheme: str,
               metrics: tuple[rk.Metric, ...] = rk.DEFAULT_METRICS) -> None:
    ranked = [i for i, (s, _) in enumerate(loaded.entries) if not s.is_baseline and not s.excluded]
    if not ranked:
        return
    mat, undefined = _ranked_matrices(loaded, [loaded.entries[i][0] for i in ranked], scheme)
    res = rk.rank_entries({m.name: mat[m.name] for m in metrics}, scheme=scheme, metrics=metrics,
                          undefined=undefined)
    for pos, i in enumerate(ranked):
        rows[i].rank = int(res.rank[pos])
        rows[i].score = r(res.score[pos])


def _add_booster(session: Session, track: Track, rows: list[Row], *, organizer: bool) -> None:
    main = session.scalar(select(Track).where(Track.challenge_id == track.challenge_id, Track.kind == TrackKind.main)
                          .order_by(Track.id))
    if main is None or (main.visibility == Visibility.hidden and not organizer):
        return  # a hidden main track's scores must not leak through the deltas
    main_board = build_board(session, main, organizer=False)
    by_team = {m.team_id: m for m in main_board.rows if not m.baseline and not m.excluded}
    for row in rows:
        m = by_team.get(row.team_id) if not row.baseline else None
        if m is None:
            continue
        row.main_submission_id = m.submission_id
        row.delta_dsc = r(row.dsc - m.dsc) if row.dsc is not None and m.dsc is not None else None
        row.delta_nsd = r(row.nsd - m.nsd) if row.nsd is not None and m.nsd is not None else None
        row.speedup = r(m.runtime_s / row.runtime_s, 2) if row.runtime_s and m.runtime_s else None


def _add_repro(session: Session, track: Track, rows: list[Row], loaded: _Loaded, *, organizer: bool = False) -> None:
    from api.submissions.feedback import per_case_public

    subs = {s.id: s for s, _ in loaded.entries}
    orig_ids = sorted({s.reproduces_id for s in subs.values() if s.reproduces_id})
    originals: dict[int, Entry] = {s.id: (s, name) for s, name in session.execute(
        select(Submission, Team.name).join(Team, Submission.team_id == Team.id).where(Submission.id.in_(orig_ids))
    )} if orig_ids else {}
    tracks = {track.id: track}
    for o, _ in originals.values():
        tracks.setdefault(o.track_id, o.track)
    if not organizer:  # the public sees an original (and its per-case scores) only where its own board shows it
        shown: dict[int, set[int]] = {}
        for oid, (o, _) in list(originals.items()):
            if o.track_id not in shown:
                shown[o.track_id] = public_submission_ids(session, tracks[o.track_id])
            if oid not in shown[o.track_id]:
                del originals[oid]
    orig_cases = _load_cases(session, [o for o, _ in originals.values()], tracks) if originals else {}

    def as_tuple(case: CaseRecord) -> tuple[float, float, float]:
        return (case.dsc, case.nsd, case.runtime_s) if case.ok else (math.nan, math.nan, math.nan)

    for row in rows:
        s = subs[row.submission_id]
        if s.reproduces_id is None or s.reproduces_id not in originals:
            row.reproduces, row.verdict = "—", "no original"
            continue
        o, oname = originals[s.reproduces_id]
        row.reproduces = f"{oname} · {o.label or 'submission'} (#{o.id})"
        row.reproduces_id = o.id
        orig, repro = orig_cases[o.id], loaded.run_of(s)
        ids = sorted(set(orig.cases) | set(repro.cases))
        res = repro_compare({k: as_tuple(v) for k, v in orig.cases.items()},
                            {k: as_tuple(v) for k, v in repro.cases.items()},
                            time_limit_s=(orig.time_limit_s, repro.time_limit_s), margin_dsc=track.repro_margin_dsc,
                            margin_nsd=track.repro_margin_nsd, case_ids=ids, seed=s.id)
        row.delta_dsc, row.delta_nsd = r(res.delta_dsc.mean), r(res.delta_nsd.mean)
        row.delta_dsc_ci = f"[{res.delta_dsc.low:+.3f}, {res.delta_dsc.high:+.3f}]"
        row.delta_nsd_ci = f"[{res.delta_nsd.low:+.3f}, {res.delta_nsd.high:+.3f}]"
        row.runtime_ratio = r(res.runtime_ratio, 2)
        row.verdict = res.verdict
        per_case = organizer or per_case_public(track, tracks[o.track_id])  # the tracks' feedback policy
        row.details = ReproDetails(
            margin_dsc=res.margin_dsc, margin_nsd=res.margin_nsd, notes=list(res.notes),
            delta_dsc={k: r(v, 4) for k, v in res.delta_dsc.to_dict().items()},
            delta_nsd={k: r(v, 4) for k, v in res.delta_nsd.to_dict().items()},
            cases=[ReproCase(case_id=c["case_id"],
                             modality=loaded.case_mod.get(c["case_id"]) or _mod_from_id(c["case_id"]),
                             dsc_orig=r(c["dsc_orig"]), dsc_repro=r(c["dsc_repro"]), delta_dsc=r(c["delta_dsc"]),
                             nsd_orig=r(c["nsd_orig"]), nsd_repro=r(c["nsd_repro"]), delta_nsd=r(c["delta_nsd"]),
                             runtime_orig=r(c["runtime_orig"], 2), runtime_repro=r(c["runtime_repro"], 2),
                             runtime_ratio=r(c["runtime_ratio"], 2)) for c in res.cases] if per_case else [],
        )


# --------------------------------------------------------------------------- organizer statistics


def stability(session: Session, track: Track, *, n_boot: int = 1000, metric: str = "dsc",
              alpha: float = 0.05, seed: int = 0, significance: bool = True) -> dict[str, Any]:
    """Bootstrap ranking stability and the significance map of the ranked entries (organizers)."""
    loaded = _load(session, track, organizer=False)
    scheme = track.ranking_scheme if track.ranking_scheme in rk.SCHEMES else rk.DEFAULT_SCHEME
    ranked = [(s, name) for s, name in loaded.entries if not s.is_baseline and not s.excluded]
    names = [f"{name} · {s.label}" if s.label else name for s, name in ranked]
    by_name = {m.name: m for m in rk.DEFAULT_METRICS}
    if metric not in by_name:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(by_name)}")
    out: dict[str, Any] = {"scheme": scheme, "scheme_label": rk.SCHEMES[scheme], "n_cases": len(loaded.case_ids),
                           "submission_ids": [s.id for s, _ in ranked]}
    if len(ranked) < 2 or not loaded.case_ids:
        out.update(bootstrap=None, significance=None, message="needs at least two ranked entries with cases")
        return out
    runs = [loaded.run_of(s) for s, _ in ranked]
    with_nan, charged = case_matrix(runs, loaded.case_ids)
    st = rk.bootstrap_stability(charged if scheme == "aggregate_then_rank" else with_nan, scheme=scheme,
                                metrics=rk.DEFAULT_METRICS, n_boot=n_boot, seed=seed,
                                undefined=undefined_matrix(runs, loaded.case_ids))
    order = np.argsort(st.full_rank, kind="stable")
    b = st.to_dict(names)
    b["entries"] = [b["entries"][i] for i in order]
    if not significance:
        out.update(bootstrap=b, significance=None)
        return out
    sig = rk.significance_map(charged, metric=by_name[metric], alpha=alpha).to_dict(names)
    idx = [int(i) for i in order]
    for key in ("pvalues", "adjusted", "significant"):
        sig[key] = [[sig[key][i][j] for j in idx] for i in idx]
    sig["names"] = [names[i] for i in idx]
    out.update(bootstrap=b, significance=sig)
    return out


# --------------------------------------------------------------------------- what the pages show besides boards


@dataclass
class ChallengeCard:
    """A track on the challenge overview: its public board and the rows to preview."""

    track: Track
    board: Board
    top: list[Row]
    n_submissions: int
    entries: int


def challenge_cards(session: Session, challenge: Challenge, *, organizer: bool) -> list[ChallengeCard]:
    """The overview's cards: every track the viewer may see, each with its public board's top three."""
    cards = []
    for tr in challenge.tracks:
        if tr.visibility == Visibility.hidden and not organizer:
            continue
        board = build_board(session, tr, organizer=False)
        top = [row for row in board.rows if row.rank][:3] if board.ranked else \
            [row for row in board.rows if not row.baseline][:3]
        # n_submissions: what the public board counted (no queued, failed or post-freeze ones)
        cards.append(ChallengeCard(tr, board, top, board.n_submissions, sum(1 for row in board.rows if not row.baseline)))
    return cards


def prompt_comparison(cards: list[ChallengeCard]) -> list[dict[str, Any]]:
    """Tracks that run the same test set under different prompt modes (SAMRI's box / point / box+point comparison),
    side by side: per group, the tracks (slug, title, prompt, kind) and per team its row on each (rank, DSC, NSD;
    interactive tracks also DSC AUC and NSD AUC). Built from the cards' public boards; test-set paths are not
    shown (groups are named by their tracks)."""
    by_set: dict[str, list[ChallengeCard]] = {}
    for card in cards:
        if card.board.ranked:
            by_set.setdefault(card.track.testset or "", []).append(card)
    groups = []
    order = {"box": 0, "point": 1, "box+point": 2}
    for same_set in by_set.values():
        if len({c.track.prompt or "box" for c in same_set}) < 2:
            continue
        members = sorted(same_set, key=lambda c: (order.get(c.track.prompt or "box", 9), c.track.id))
        teams: dict[str, dict[str, Any]] = {}
        for c in members:
            for row in c.board.rows:
                if row.baseline or row.excluded:
                    continue
                vals = {"rank": row.rank, "dsc": row.dsc, "nsd": row.nsd}
                if c.board.info.iterations is not None:
                    vals.update(dsc_auc=row.overall.get("dsc_auc"), nsd_auc=row.overall.get("nsd_auc"))
                teams.setdefault(row.team, {})[c.track.slug] = vals
        rows: list[dict[str, Any]] = [{"team": team, "tracks": vals} for team, vals in teams.items()]
        first = members[0].track.slug
        rows.sort(key=lambda x: (-(x["tracks"].get(first, {}).get("dsc") or -1.0), x["team"]))
        groups.append({"tracks": [{"slug": c.track.slug, "title": c.track.title, "prompt": c.track.prompt or "box",
                                   "kind": c.board.info.kind} for c in members], "rows": rows})
    return groups


def track_tabs(session: Session, track: Track, *, organizer: bool) -> list[tuple[str, str]]:
    """``(slug, title)`` of the challenge's tracks the viewer may see, in order (the page's tabs)."""
    others = session.execute(select(Track.slug, Track.title, Track.visibility)
                             .where(Track.challenge_id == track.challenge_id).order_by(Track.id)).all()
    return [(s, title) for s, title, v in others if v != Visibility.hidden or organizer]


@dataclass
class ModalityTotals:
    """A run's means over one modality's cases (failures charged with the run's limit)."""

    modality: str
    cases: int
    ok: int
    dsc: float | None  # None: every case's score undefined
    nsd: float | None
    runtime_s: float


def submission_modalities(session: Session, run: Run, track: Track) -> list[ModalityTotals]:
    """Per-modality means of ``run`` (the submission page), charged like the board charges them."""
    rows = session.execute(select(CaseResult.modality, CaseResult.status, CaseResult.dsc, CaseResult.nsd,
                                  CaseResult.runtime_s).where(CaseResult.run_id == run.id)).all()
    limit = run_time_limit(run.case_timeout_s, track.case_timeout_s)
    by_mod: dict[str, list[tuple[bool, float, float, float]]] = {}
    for mod, status, dsc, nsd, rt in rows:
        by_mod.setdefault(mod or "other", []).append(
            (status == CaseStatus.ok, score_or_nan(dsc), score_or_nan(nsd), score_or_zero(rt)))
    out = []
    for mod in modality_order(set(by_mod)):
        ok, d, n, t = (list(x) for x in zip(*by_mod[mod]))
        c = charge_failures(d, n, t, ok, limit)  # undefined (NaN) scores of ok cases are skipped by _mean
        out.append(ModalityTotals(mod, len(ok), sum(ok), _mean(c.dsc.tolist()), _mean(c.nsd.tolist()),
                                  float(c.runtime_s.mean())))
    return out


def visible_challenges(session: Session, *, organizer: bool) -> list[tuple[Challenge, list[Track]]]:
    """The challenges of the index page, each with the tracks the viewer may see (organizers: all, also empty)."""
    out = []
    for ch in session.scalars(select(Challenge).order_by(Challenge.id)):
        tracks = [tr for tr in ch.tracks if organizer or tr.visibility != Visibility.hidden]
        if tracks or organizer:
            out.append((ch, tracks))
    return out


def find_challenge(session: Session, slug: str) -> Challenge | None:
    return session.scalar(select(Challenge).where(Challenge.slug == slug))


def overview_version(session: Session, slug: str) -> tuple[Any, ...] | None:
    """A fingerprint of the public challenge overview (title, description, every track's board); None if missing."""
    ch = find_challenge(session, slug)
    if ch is None:
        return None
    from api.leaderboard.cache import track_version

    return (ch.title, ch.description, tuple(track_version(session, tr) for tr in ch.tracks))


@dataclass
class SubmissionDetail:
    """What the submission page shows: the submission, its team and runs, the original it reproduces (when the
    viewer may see it) and the latest run's per-modality means (filled by the page when the viewer's feedback
    level shows scores: :func:`submission_modalities`)."""

    submission: Submission
    track: Track
    challenge: Challenge
    team: Team | None
    runs: list[Run]
    latest: Run | None
    original: Submission | None
    modalities: list[ModalityTotals] = field(default_factory=list)

    @property
    def scored(self) -> bool:
        return self.submission.state == SubmissionState.succeeded


def submission_detail(session: Session, submission_id: int, viewer: Member | None) -> SubmissionDetail | None:
    """The submission ``submission_id`` as ``viewer`` may see it; None when it is missing or not theirs to see
    (the board's rule, :func:`may_see_submission`: the same answer for both)."""
    sub = session.get(Submission, submission_id)
    if sub is None or not may_see_submission(session, sub, viewer):
        return None
    runs = sorted(sub.runs, key=lambda run: run.attempt)
    latest = runs[-1] if runs else None
    original = sub.reproduces
    if original is not None and not may_see_submission(session, original, viewer):
        original = None
    return SubmissionDetail(sub, sub.track, sub.track.challenge, session.get(Team, sub.team_id), runs, latest,
                            original)


@dataclass
class RunDetail:
    """An organizer's view of one run: its cases, status counts, workers and sibling attempts."""

    run: Run
    submission: Submission
    team: Team | None
    track: Track
    cases: list[CaseResult]
    counts: dict[str, int]
    workers: Any
    siblings: list[Run]


def run_detail(session: Session, run_id: int) -> RunDetail | None:
    """Run ``run_id`` with everything the organizers' run page shows (None if there is no such run)."""
    from api.execution.audit import run_workers

    run = session.get(Run, run_id)
    if run is None:
        return None
    sub = run.submission
    cases = list(session.scalars(select(CaseResult).where(CaseResult.run_id == run.id).order_by(CaseResult.case_id)))
    counts: dict[str, int] = {}
    for cr in cases:
        counts[cr.status.value] = counts.get(cr.status.value, 0) + 1
    return RunDetail(run, sub, session.get(Team, sub.team_id), sub.track, cases, counts, run_workers(session, run),
                     sorted(sub.runs, key=lambda x: x.attempt))
