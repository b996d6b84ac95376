"""The typed leaderboard: what one track's board shows, and how each of its cells is written.

A :class:`Board` holds the track's settings (:class:`TrackInfo`), the :class:`Column` s in display order and one
:class:`Row` per entry. Every consumer renders this one object: the JSON route (:meth:`Board.to_dict`), the CSV
(:func:`board_csv`: exactly the page's columns and cell text) and the HTML page (``leaderboard_web``).

Metric columns come from :data:`METRICS`: each :class:`MetricSpec` gives an overall column and, when it says so,
one column per modality and per structure-size class. A row keeps its values in ``overall``, ``by_modality`` and
``by_size`` keyed by the metric's key; the column key is ``"<metric>"``, ``"<modality>:<metric>"`` or
``"size:<class>:<metric>"``. To add a metric column (e.g. an interactive track's ``dsc_auc``): add a
:class:`MetricSpec` to :data:`METRICS` (or pass the specs for a track kind to :func:`metric_columns`) and fill
the value where the service aggregates a row (``api.leaderboard.service._entry_stats``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from api.csvsafe import csv_safe
from data_manifests.schema import SIZE_CLASSES as _SIZE_CLASSES

__all__ = [
    "SIZE_CLASSES", "ColumnType", "Column", "MetricSpec", "METRICS", "INTERACTIVE_METRICS", "iteration_columns",
    "metric_columns", "TrackInfo", "ReproCase",
    "ReproDetails", "Row", "Board", "fmt", "csv_header", "cell", "board_csv", "to_json_bytes", "r",
]

SIZE_CLASSES = _SIZE_CLASSES  # the one definition: data_manifests.schema

#: how a cell is written: ``score`` 3 decimals, ``runtime`` and ``ratio`` 2, ``delta`` signed 3, ``int``, ``text``
ColumnType = Literal["score", "runtime", "delta", "ratio", "int", "text"]


@dataclass(frozen=True)
class Column:
    """One column of the board (JSON: ``{key, label, type, group, modality, title}``)."""

    key: str
    label: str
    type: ColumnType
    group: str = ""  # id, overall, modality, size, booster, repro
    modality: str = ""  # the modality, or "size:<class>" for a structure-size column
    title: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "label": self.label, "type": self.type, "group": self.group,
                "modality": self.modality, "title": self.title or self.label}


@dataclass(frozen=True)
class MetricSpec:
    """An aggregated metric: its key, labels, cell type, rounding and where it gets columns."""

    key: str
    label: str  # the overall column's label
    type: ColumnType
    title: str  # the overall column's tooltip
    digits: int = 3
    group_label: str = ""  # the per-modality column's label (default: ``label``)
    per_modality: bool = True
    per_size: bool = True


#: the metric columns every scored board shows, in order (failed cases charged, see evaluator.failures)
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dsc", "DSC", "score", "mean Dice over all cases (failed = 0; undefined cases, "
               "cvpr24's label absent from both masks, left out)"),
    MetricSpec("nsd", "NSD", "score", "mean normalized surface Dice (failed = 0)"),
    MetricSpec("runtime_s", "Runtime (s)", "runtime", "mean runtime per case in seconds (failed = time limit)",
               digits=2, group_label="Time (s)", per_size=False),
)


#: interactive tracks (CVPR25_iter_eval.py's five metrics): the AUCs over iterations, the final scores, the total
#: runtime per case; ranked by the track's scheme on all five (api.leaderboard.service.INTERACTIVE_RANKED)
INTERACTIVE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dsc_auc", "DSC AUC", "score", "mean DSC_AUC: area under the DSC-vs-click curve over the refinement "
               "iterations (cumulative trapezoid, as CVPR25_iter_eval.py; failed = 0)", per_size=False),
    MetricSpec("nsd_auc", "NSD AUC", "score", "mean NSD_AUC over the refinement iterations (failed = 0)",
               per_size=False),
    MetricSpec("dsc", "Final DSC", "score", "mean Dice after the last iteration (failed = 0)"),
    MetricSpec("nsd", "Final NSD", "score", "mean normalized surface Dice after the last iteration (failed = 0)"),
    MetricSpec("runtime_s", "Runtime (s)", "runtime", "mean total runtime per case over all iterations, in seconds "
               "(failed = time limit)", digits=2, group_label="Time (s)", per_size=False),
)


def iteration_columns(iterations: int) -> list[Column]:
    """Interactive tracks: the mean DSC and NSD after each iteration (the curve's numbers, in the CSV too)."""
    cols = []
    for metric in ("dsc", "nsd"):
        for i in range(iterations + 1):
            what = "the first prompt" if i == 0 else f"click {i}"
            cols.append(Column(f"{metric}_it{i}", f"{metric.upper()} @{i}", "score", group="iterations",
                               title=f"mean {metric.upper()} after {what} (failed = 0)"))
    return cols


def metric_columns(modalities: list[str], has_size: bool, metrics: tuple[MetricSpec, ...] = METRICS) -> list[Column]:
    """The overall, per-modality and per-size-class columns of ``metrics``."""
    cols = [Column(m.key, m.label, m.type, group="overall", title=m.title) for m in metrics]
    cols.append(Column("cases_ok", "Cases OK", "int", group="overall", title="cases that ran and produced a valid output"))
    for mod in modalities:
        cols += [Column(f"{mod}:{m.key}", m.group_label or m.label, m.type, group="modality", modality=mod,
                        title=f"{mod}: mean {m.label if m.key != 'runtime_s' else 'runtime per case (s)'}")
                 for m in metrics if m.per_modality]
    if has_size:
        for s in SIZE_CLASSES:
            cols += [Column(f"size:{s}:{m.key}", m.group_label or m.label, m.type, group="size", modality=f"size:{s}",
                            title=f"{s} structures: mean {m.label}") for m in metrics if m.per_size]
    return cols


@dataclass
class TrackInfo:
    """The track's settings the board shows (flattened into the board's JSON)."""

    challenge: str
    challenge_title: str
    track: str
    title: str
    kind: str
    description: str
    scheme: str
    scheme_label: str
    metric_profile: str
    row_policy: str
    visibility: str
    hidden: bool
    frozen: bool
    frozen_at: str | None
    closes_at: str | None
    case_timeout_s: int
    repro_margin_dsc: float
    repro_margin_nsd: float
    # prompts, timing (named on the board) and, on interactive tracks, the refinement iterations
    prompt: str = "box"
    timing: str = "container"
    timing_label: str = ""
    iterations: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReproCase:
    """One case of a reproduction compared with its original."""

    case_id: str
    modality: str
    dsc_orig: float | None
    dsc_repro: float | None
    delta_dsc: float | None
    nsd_orig: float | None
    nsd_repro: float | None
    delta_nsd: float | None
    runtime_orig: float | None
    runtime_repro: float | None
    runtime_ratio: float | None


@dataclass
class ReproDetails:
    """A reproducibility row's comparison: margins, notes, mean Δ with intervals, per-case rows (if shown)."""

    margin_dsc: float
    margin_nsd: float
    notes: list[str]
    delta_dsc: dict[str, float | None]
    delta_nsd: dict[str, float | None]
    cases: list[ReproCase]

    def to_dict(self) -> dict[str, Any]:
        return {"margin_dsc": self.margin_dsc, "margin_nsd": self.margin_nsd, "notes": list(self.notes),
                "delta_dsc": dict(self.delta_dsc), "delta_nsd": dict(self.delta_nsd),
                "cases": [dict(c.__dict__) for c in self.cases]}


Metrics = dict[str, float | None]


@dataclass
class Row:
    """One entry of the board: a team's chosen submission, a baseline, or (organizers) an excluded one."""

    submission_id: int
    team: str
    team_id: int
    label: str
    baseline: bool
    excluded: bool
    submitted_at: str | None
    exclusion_reason: str | None = None  # organizers' boards only
    rank: int | None = None
    score: float | None = None  # the ranking scheme's score (lower is better)
    overall: Metrics = field(default_factory=dict)
    by_modality: dict[str, Metrics] = field(default_factory=dict)
    by_size: dict[str, Metrics] = field(default_factory=dict)
    cases_ok: int = 0
    cases_total: int = 0
    # booster tracks: against the team's main-track row
    main_submission_id: int | None = None
    delta_dsc: float | None = None
    delta_nsd: float | None = None
    speedup: float | None = None
    # reproducibility tracks: against the original
    reproduces: str | None = None
    reproduces_id: int | None = None
    delta_dsc_ci: str | None = None
    delta_nsd_ci: str | None = None
    runtime_ratio: float | None = None
    verdict: str | None = None
    details: ReproDetails | None = None
    # interactive tracks: the mean DSC / NSD after each iteration ({"dsc": [...], "nsd": [...]}) and the cases
    # stopped by the class time budget
    curve: dict[str, list[float | None]] | None = None
    over_budget: int | None = None

    @property
    def entry(self) -> str:
        return "excluded" if self.excluded else ("baseline" if self.baseline else "")

    @property
    def dsc(self) -> float | None:
        return self.overall.get("dsc")

    @property
    def nsd(self) -> float | None:
        return self.overall.get("nsd")

    @property
    def runtime_s(self) -> float | None:
        return self.overall.get("runtime_s")

    def value(self, key: str) -> Any:
        """The value of column ``key`` (None when the row has none)."""
        if key.startswith("size:"):
            _, cls, metric = key.split(":", 2)
            return self.by_size.get(cls, {}).get(metric)
        if ":" in key:
            mod, metric = key.rsplit(":", 1)
            return self.by_modality.get(mod, {}).get(metric)
        if key in self.overall:
            return self.overall[key]
        if key == "entry":
            return self.entry
        return getattr(self, key, None)

    __getitem__ = value  # templates write ``r[col.key]``

    def to_dict(self, columns: list[Column], *, organizer: bool, repro: bool) -> dict[str, Any]:
        """The row's JSON: identity, flags, every metric, the track kind's extras, then every column's key."""
        d: dict[str, Any] = {
            "rank": self.rank, "team": self.team, "team_id": self.team_id, "submission_id": self.submission_id,
            "label": self.label, "baseline": self.baseline, "excluded": self.excluded,
            "submitted_at": self.submitted_at, "entry": self.entry,
        }
        if organizer:
            d["exclusion_reason"] = self.exclusion_reason or ""
        d.update(self.overall)
        d["cases_ok"], d["cases_total"] = self.cases_ok, self.cases_total
        for mod, vals in self.by_modality.items():
            d.update({f"{mod}:{k}": v for k, v in vals.items()})
        for cls, vals in self.by_size.items():
            d.update({f"size:{cls}:{k}": v for k, v in vals.items()})
        if self.score is not None:
            d["score"] = self.score
        if self.curve is not None:
            d["curve"] = {k: list(v) for k, v in self.curve.items()}
            d["over_budget"] = self.over_budget
        if self.main_submission_id is not None:
            d["main_submission_id"] = self.main_submission_id
            d.update(delta_dsc=self.delta_dsc, delta_nsd=self.delta_nsd, speedup=self.speedup)
        if repro:
            d["details"] = self.details.to_dict() if self.details is not None else None
            d["reproduces"], d["verdict"] = self.reproduces, self.verdict
            if self.reproduces_id is not None:
                d["reproduces_id"] = self.reproduces_id
                d.update(delta_dsc=self.delta_dsc, delta_nsd=self.delta_nsd, delta_dsc_ci=self.delta_dsc_ci,
                         delta_nsd_ci=self.delta_nsd_ci, runtime_ratio=self.runtime_ratio)
        for c in columns:
            d.setdefault(c.key, None)
        return d


@dataclass
class Board:
    """A track's whole leaderboard for one audience (``public`` or ``organizer``)."""

    info: TrackInfo
    audience: Literal["public", "organizer"]
    ranked: bool
    modalities: list[str]
    size_classes: list[str]
    size_source: str | None
    n_cases: int
    n_submissions: int  # the scored submissions the board counted (before the row policy picks)
    columns: list[Column]
    rows: list[Row]

    @property
    def organizer(self) -> bool:
        return self.audience == "organizer"

    def to_dict(self) -> dict[str, Any]:
        """The board's JSON (``GET …/leaderboard``)."""
        repro = self.info.kind == "reproducibility"
        return {**self.info.to_dict(), "ranked": self.ranked, "audience": self.audience,
                "modalities": list(self.modalities), "size_classes": list(self.size_classes),
                "size_source": self.size_source, "n_cases": self.n_cases, "n_submissions": self.n_submissions,
                "columns": [c.to_dict() for c in self.columns],
                "rows": [row.to_dict(self.columns, organizer=self.organizer, repro=repro) for row in self.rows]}


# --------------------------------------------------------------------------- cells (page and CSV alike)


def r(x: float | None, nd: int = 3) -> float | None:
    """``x`` rounded to ``nd`` decimals; None for None, NaN and infinities (JSON has no NaN)."""
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return round(float(x), nd)


def fmt(value: Any, kind: str = "text") -> str:
    """A cell's text, identical on the page and in the CSV."""
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return ""
    if kind == "score":
        return f"{value:.3f}"
    if kind == "runtime":
        return f"{value:.2f}"
    if kind == "delta":
        return f"{value:+.3f}"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "int":
        return str(int(value))
    return str(value)


def csv_header(col: Column) -> str:
    """The CSV header of a column: its group (modality or size class) and label."""
    mod = col.modality
    if mod.startswith("size:"):
        return f"{mod[5:]} {col.label}"
    return f"{mod} {col.label}" if mod else col.label


def cell(row: Row, col: Column) -> str:
    """The text of ``row`` in column ``col``."""
    return fmt(row.value(col.key), col.type)


def board_csv(board: Board) -> bytes:
    """The page's table as CSV: the same columns in the same order, the same cell text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)  # a bare CR is not quoted otherwise
    w.writerow([csv_safe(csv_header(col)) for col in board.columns])
    for row in board.rows:
        cells = [csv_safe(cell(row, col)) for col in board.columns]
        (quoted if any("\r" in c for c in cells) else w).writerow(cells)
    return buf.getvalue().encode("utf-8")


def to_json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON (NaN never appears: the read model writes None)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
