"""Schemas of challenges and tracks: what organizers send and what everyone may read."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.challenges import track_settings as ts
from api.challenges.track_settings import TRACK_DEFAULTS as _TD
from api.models import Feedback, RowPolicy, TrackKind, Visibility
from api.params import SLUG_PATTERN, UtcDatetime, UtcOut

RankingScheme = Literal["rank_then_aggregate", "aggregate_then_rank"]
# the queue a track's runs go to: a queue declared in SEGARENA_QUEUES (checked by the routes, api.queue.check_track_queue)
Queue = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,16}$")]
PromptMode = Literal["box", "point", "box+point"]  # ts.PROMPT_MODES
TimingMode = Literal["container", "docker_run"]  # ts.TIMING_MODES
_PROMPT_HELP = ("What the model is given: box (the 2024 contract), point (one interior point per structure from the "
                "test-set manifest, no boxes) or box+point.")
_ITERATIONS_HELP = (f"Interactive tracks: refinement iterations after the first prompt, one simulated click per "
                    f"imperfect class each (default {ts.DEFAULT_ITERATIONS}, as CVPR25_iter_eval.py).")
_BUDGET_HELP = (f"Interactive tracks: time budget per class of a case, summed over its iterations (default "
                f"{ts.DEFAULT_CLASS_BUDGET_S:g} s, as CVPR25_iter_eval.py); a case over budget keeps its last valid "
                "prediction and is marked.")
_TIMING_HELP = ("What a case's runtime measures: container (start to exit) or docker_run (create + start + remove, "
                "the span the 2024 script timed); named on the leaderboard.")


#: a run records the test set it ran on (``runs.testset``, 200 characters): a longer name would be cut there and
#: the scorer would look up another path
TESTSET_MAX_CHARS = 200


def check_testset(value: str | None) -> str | None:
    """A built-in set name, or the path of a readable manifest JSON (checked now, not at the first run), by the
    lookup rule runs and scoring use (:func:`data_manifests.check_testset`)."""
    if value is None:
        return value
    from data_manifests import ManifestError
    from data_manifests import check_testset as check

    try:
        check(value)
    except ManifestError as exc:
        raise ValueError(str(exc)) from None
    return value


PUBLIC_SET_FIX = ("generate with a private seed (`segarena testset generate --size small --out DIR`, without --seed, "
                  "or with --seed N for a random N of 2**32 or more) or import real data (`segarena testset import`), "
                  "then name that manifest's path; or mark the challenge `demo: true`")


def public_testset_reason(value: str | None) -> str | None:
    """Why the ground truth of test set ``value`` is public (None when it is not): a built-in set, or a
    manifest generated with a public seed. Tracks of challenges that are not demos refuse such sets."""
    if not value:
        return None
    from data_manifests import ManifestError, check_testset
    from data_manifests.schema import is_public_seed
    from data_manifests.sets import builtin_sets

    if value in builtin_sets():
        return f"test set {value!r} is a built-in synthetic set: anyone can regenerate it byte for byte from its public seed"
    try:
        g = check_testset(value).generator
    except ManifestError:  # unreadable: check_testset says why
        return None
    if g is not None and (g.public_seed or is_public_seed(g.seed)):
        return (f"test set {value!r} was generated with a public seed ({g.seed}): anyone can regenerate it, "
                "ground truth included")
    return None


def refuse_public_testset(value: str | None, *, demo: bool, track: str) -> None:
    """ValueError naming the fix when a non-demo challenge's track would use a public test set."""
    reason = None if demo else public_testset_reason(value)
    if reason:
        raise ValueError(f"track {track!r}: {reason}, and this challenge is not a demo; {PUBLIC_SET_FIX}")


def check_metric_profile(value: str | None) -> str | None:
    """A metric profile the evaluator knows (``default``, ``cvpr24``, optionally ``@version``)."""
    if value is not None:
        from evaluator import get_profile

        get_profile(value)  # ValueError names the known profiles
    return value


_BUDGET_CPU_HELP = ("Compute budget per team on this track in container CPU-seconds (all attempts of all its "
                    "submissions); warnings at 70/90/100 %, new submissions refused past it. null: no budget.")
_BUDGET_GPU_HELP = ("Compute budget per team on this track in GPU-seconds (case wall time on a GPU queue x GPUs "
                    "assigned); warnings at 70/90/100 %, new submissions refused past it. null: no budget.")


class _TrackFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _testset = field_validator("testset")(check_testset)
    _profile = field_validator("metric_profile")(check_metric_profile)
    title: str = Field(default="", max_length=200)
    kind: TrackKind = TrackKind(_TD["kind"])
    description: str = Field(default=_TD["description"], max_length=20000)
    testset: str = Field(default=_TD["testset"], min_length=1, max_length=TESTSET_MAX_CHARS,
                         description="A built-in test set ('micro', 'tiny', 'small') or the path of a manifest JSON.")
    metric_profile: str = Field(default=_TD["metric_profile"], pattern=r"^[a-z0-9_.-]{1,32}$")
    ranking_scheme: RankingScheme = _TD["ranking_scheme"]
    row_policy: RowPolicy = RowPolicy(_TD["row_policy"])
    visibility: Visibility = Visibility(_TD["visibility"])
    opens_at: UtcDatetime | None = None
    closes_at: UtcDatetime | None = None
    quota_per_day: int = Field(default=_TD["quota_per_day"], ge=0, le=10000,
                               description="Submissions per team per rolling 24 h; 0 pauses the track.")
    queue: Queue = _TD["queue"]
    cpus: float = Field(default=_TD["cpus"], gt=0, le=256)
    memory_mb: int = Field(default=_TD["memory_mb"], ge=64, le=4 * 1024 * 1024)
    gpus: int = Field(default=_TD["gpus"], ge=0, le=16)
    case_timeout_s: int = Field(default=_TD["case_timeout_s"], ge=1, le=7 * 86400)
    total_timeout_s: int = Field(default=_TD["total_timeout_s"], ge=1, le=30 * 86400)
    pids_limit: int = Field(default=_TD["pids_limit"], ge=16, le=1 << 20)
    tmpfs_mb: int = Field(default=_TD["tmpfs_mb"], ge=0, le=1 << 20)
    allow_root: bool = _TD["allow_root"]
    repro_margin_dsc: float = Field(default=_TD["repro_margin_dsc"], ge=0, le=1)
    repro_margin_nsd: float = Field(default=_TD["repro_margin_nsd"], ge=0, le=1)
    feedback: Feedback = Field(default=Feedback(_TD["feedback"]),
                               description="What participants see of their runs: full (per-case scores and logs), "
                                           "summary (overall and per-modality scores, per-case status) or none (state only).")
    upload_grace_s: int = Field(default=_TD["upload_grace_s"], ge=0, le=7 * 86400,
                                description="An upload begun before closes_at may complete up to this many seconds after it.")
    fail_fast_cases: int = Field(default=_TD["fail_fast_cases"], ge=0, le=10000,
                                 description="Stop a run when its first K cases all fail by the participant's fault (0: never).")
    shard_size: int = Field(default=_TD["shard_size"], ge=0, le=100000,
                            description="Cases per shard (the unit one worker takes); 0 = auto, about a minute of work.")
    prompt: PromptMode = Field(default=ts.DEFAULT_PROMPT, description=_PROMPT_HELP)
    iterations: int = Field(default=ts.DEFAULT_ITERATIONS, ge=1, le=ts.MAX_ITERATIONS, description=_ITERATIONS_HELP)
    class_budget_s: float = Field(default=ts.DEFAULT_CLASS_BUDGET_S, gt=0, le=ts.MAX_CLASS_BUDGET_S,
                                  allow_inf_nan=False, description=_BUDGET_HELP)
    timing: TimingMode = Field(default=ts.DEFAULT_TIMING, description=_TIMING_HELP)
    budget_cpu_s: float | None = Field(default=_TD["budget_cpu_s"], gt=0, le=1e12, allow_inf_nan=False,
                                       description=_BUDGET_CPU_HELP)
    budget_gpu_s: float | None = Field(default=_TD["budget_gpu_s"], gt=0, le=1e12, allow_inf_nan=False,
                                       description=_BUDGET_GPU_HELP)


def check_prompt_testset(prompt: str | None, testset: str | None) -> None:
    """Point prompts come from the test-set manifest: ValueError naming the fix when a case has no point."""
    if not prompt or prompt == ts.DEFAULT_PROMPT or not testset:
        return
    from data_manifests import ManifestError
    from data_manifests import check_testset as check
    from evaluator.interactive import manifest_points

    try:
        manifest = check(testset)
    except ManifestError:
        return  # check_testset says why
    if int(getattr(manifest, "schema_version", 2) or 2) < 2:
        return  # a version-1 manifest gets its points from the ground truth when a run opens it
    for case in manifest.cases:
        try:
            manifest_points(case)
        except ValueError as exc:
            raise ValueError(f"prompt {prompt!r} gives the model the test set's point prompts, and test set "
                             f"{testset!r} lacks them: {exc}") from None


def _check_track(values: dict) -> None:
    opens, closes = values.get("opens_at"), values.get("closes_at")
    if opens is not None and closes is not None and closes <= opens:
        raise ValueError("closes_at must be later than opens_at")
    if (values.get("gpus") or 0) > 0 and values.get("queue") == "cpu":
        raise ValueError("a track with gpus > 0 must use a GPU queue (queue: gpu)")
    if values.get("case_timeout_s") and values.get("total_timeout_s") and values["total_timeout_s"] < values["case_timeout_s"]:
        raise ValueError("total_timeout_s must be at least case_timeout_s")
    check_prompt_testset(values.get("prompt"), values.get("testset"))
    kind = values.get("kind")
    kind = getattr(kind, "value", kind)
    if kind != TrackKind.interactive.value:
        changed = [name for name, default in (("iterations", ts.DEFAULT_ITERATIONS),
                                              ("class_budget_s", ts.DEFAULT_CLASS_BUDGET_S))
                   if values.get(name) is not None and float(values[name]) != float(default)]
        if changed:
            raise ValueError(f"{' and '.join(changed)} apply to interactive tracks only (kind: interactive); this "
                             f"track is kind {kind or 'main'!r}: set kind: interactive or leave them out")


class TrackCreate(_TrackFields):
    slug: str = Field(pattern=SLUG_PATTERN)

    @model_validator(mode="after")
    def _consistent(self) -> TrackCreate:
        _check_track(self.model_dump())
        return self


class TrackUpdate(BaseModel):
    """Any subset of a track's fields (organizers)."""

    model_config = ConfigDict(extra="forbid")
    _testset = field_validator("testset")(check_testset)
    _profile = field_validator("metric_profile")(check_metric_profile)
    title: str | None = Field(default=None, max_length=200)
    kind: TrackKind | None = None
    description: str | None = Field(default=None, max_length=20000)
    testset: str | None = Field(default=None, min_length=1, max_length=TESTSET_MAX_CHARS)
    metric_profile: str | None = Field(default=None, pattern=r"^[a-z0-9_.-]{1,32}$")
    ranking_scheme: RankingScheme | None = None
    row_policy: RowPolicy | None = None
    visibility: Visibility | None = None
    opens_at: UtcDatetime | None = None
    closes_at: UtcDatetime | None = None
    quota_per_day: int | None = Field(default=None, ge=0, le=10000)
    queue: Queue | None = None
    cpus: float | None = Field(default=None, gt=0, le=256)
    memory_mb: int | None = Field(default=None, ge=64, le=4 * 1024 * 1024)
    gpus: int | None = Field(default=None, ge=0, le=16)
    case_timeout_s: int | None = Field(default=None, ge=1, le=7 * 86400)
    total_timeout_s: int | None = Field(default=None, ge=1, le=30 * 86400)
    pids_limit: int | None = Field(default=None, ge=16, le=1 << 20)
    tmpfs_mb: int | None = Field(default=None, ge=0, le=1 << 20)
    allow_root: bool | None = None
    repro_margin_dsc: float | None = Field(default=None, ge=0, le=1)
    repro_margin_nsd: float | None = Field(default=None, ge=0, le=1)
    feedback: Feedback | None = None
    upload_grace_s: int | None = Field(default=None, ge=0, le=7 * 86400)
    fail_fast_cases: int | None = Field(default=None, ge=0, le=10000)
    shard_size: int | None = Field(default=None, ge=0, le=100000)
    prompt: PromptMode | None = Field(default=None, description=_PROMPT_HELP)
    iterations: int | None = Field(default=None, ge=1, le=ts.MAX_ITERATIONS, description=_ITERATIONS_HELP)
    class_budget_s: float | None = Field(default=None, gt=0, le=ts.MAX_CLASS_BUDGET_S, allow_inf_nan=False,
                                         description=_BUDGET_HELP)
    timing: TimingMode | None = Field(default=None, description=_TIMING_HELP)
    budget_cpu_s: float | None = Field(default=None, gt=0, le=1e12, allow_inf_nan=False,
                                       description=_BUDGET_CPU_HELP + " null removes it.")
    budget_gpu_s: float | None = Field(default=None, gt=0, le=1e12, allow_inf_nan=False,
                                       description=_BUDGET_GPU_HELP + " null removes it.")


class VisibilityChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    visibility: Visibility


class ChallengeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: str = Field(pattern=SLUG_PATTERN)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=50000)
    demo: bool = Field(default=False, description="A demo challenge may use the built-in synthetic sets "
                                                   "(micro, tiny, small), whose ground truth is public.")
    # participants (api/participants): anonymous sign-up, terms to accept before the first submission, team size
    signup_open: bool = Field(default=True, description="Whether anyone may ask to take part (an organizer approves).")
    terms: str = Field(default="", max_length=50000, description="Terms participants accept before their first "
                                                                  "submission (empty: none).")
    max_team_size: int | None = Field(default=None, ge=1, le=1000, description="Most members per team (null: no limit).")
    tracks: list[TrackCreate] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _unique_tracks(self) -> ChallengeCreate:
        slugs = [t.slug for t in self.tracks]
        if len(slugs) != len(set(slugs)):
            raise ValueError("track slugs must be unique within a challenge")
        for t in self.tracks:
            refuse_public_testset(t.testset, demo=self.demo, track=t.slug)
        return self


class TrackPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    challenge: str
    slug: str
    title: str
    kind: TrackKind
    description: str
    testset: str | None = Field(description="The test set (a server path): organizers only, null for everyone else.")
    metric_profile: str
    ranking_scheme: str
    row_policy: RowPolicy
    visibility: Visibility
    frozen_at: UtcOut | None
    opens_at: UtcOut | None
    closes_at: UtcOut | None
    is_open: bool
    quota_per_day: int
    queue: str
    cpus: float
    memory_mb: int
    gpus: int
    case_timeout_s: int
    total_timeout_s: int
    pids_limit: int
    tmpfs_mb: int
    allow_root: bool
    repro_margin_dsc: float
    repro_margin_nsd: float
    feedback: Feedback
    upload_grace_s: int
    fail_fast_cases: int
    shard_size: int
    prompt: str = ts.DEFAULT_PROMPT
    iterations: int = ts.DEFAULT_ITERATIONS
    class_budget_s: float = ts.DEFAULT_CLASS_BUDGET_S
    timing: str = ts.DEFAULT_TIMING
    budget_cpu_s: float | None = None
    budget_gpu_s: float | None = None


class ChallengeSummary(BaseModel):
    id: int
    slug: str
    title: str
    description: str
    created_at: UtcOut
    tracks: list[str]


class ChallengePublic(BaseModel):
    id: int
    slug: str
    title: str
    description: str
    created_at: UtcOut
    demo: bool = False
    signup_open: bool = True
    terms: str = ""
    max_team_size: int | None = None
    tracks: list[TrackPublic]
