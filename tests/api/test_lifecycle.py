"""The job lifecycle (api.lifecycle): the transition table, and that the mirrored submission, the timestamps and
the audit event always follow a run's state change — on SQLite, and on PostgreSQL where races matter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select

from api.db import session_scope
from api.lifecycle import (
    ACTIVE_RUN_STATES,
    EXECUTING_RUN_STATES,
    FINAL_RUN_STATES,
    RUN_TRANSITIONS,
    IllegalTransition,
    cancel_submission_runs,
    check_transition,
    latest_runs,
    new_attempt,
    transition,
)
from api.models import AuditEvent, Member, Run, RunState, Submission, SubmissionState
from tests.api_helpers import seed

ROOT = Path(__file__).resolve().parents[2]
Q, L, R, S = RunState.queued, RunState.loading, RunState.running, RunState.scoring
OK, FAIL, INFRA, CANCEL = RunState.succeeded, RunState.failed, RunState.infra_failed, RunState.cancelled

# the table written out by hand (the oracle): every other pair must raise
LEGAL = {
    (Q, L), (Q, R), (Q, OK), (Q, FAIL), (Q, INFRA), (Q, CANCEL),
    (L, R), (L, OK), (L, FAIL), (L, INFRA), (L, CANCEL),
    (R, S), (R, OK), (R, FAIL), (R, INFRA), (R, CANCEL),
    (S, OK), (S, FAIL), (S, INFRA), (S, CANCEL),
}


@pytest.mark.parametrize("current", list(RunState))
@pytest.mark.parametrize("new", list(RunState))
def test_transition_table(current: RunState, new: RunState) -> None:
    if (current, new) in LEGAL:
        check_transition(current, new)
        assert new in RUN_TRANSITIONS[current]
    else:
        with pytest.raises(IllegalTransition) as info:
            check_transition(current, new, run_id=7)
        message = str(info.value)
        assert f"run 7: {current.value} -> {new.value} is not a legal state change" in message
        assert "new attempt" in message  # says what to do instead


def test_state_sets() -> None:
    assert {Q, L, R, S} == ACTIVE_RUN_STATES
    assert {L, R, S} == EXECUTING_RUN_STATES
    assert {OK, FAIL, INFRA, CANCEL} == FINAL_RUN_STATES
    assert all(not RUN_TRANSITIONS[s] for s in FINAL_RUN_STATES)


# --------------------------------------------------------------------------------------------- with a database


@pytest.fixture
def db(settings):
    from api.db import get_engine
    from api.models import Base

    Base.metadata.create_all(get_engine(settings.database_url))  # the models' schema (migrations: tests/system)
    return settings.database_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request, settings):
    """The models' schema on SQLite, and again on a fresh PostgreSQL database (where races are real)."""
    from api.db import get_engine
    from api.models import Base

    if request.param == "postgres":
        settings.database_url = request.getfixturevalue("postgres_url")
    Base.metadata.create_all(get_engine(settings.database_url))
    return settings.database_url


def _submission(url: str, *, attempts: int = 1) -> tuple[int, list[int]]:
    w = seed(url)
    with session_scope(url) as s:
        sub = Submission(track_id=w.tracks["main"], team_id=w.team_a, member_id=w.member_a, archive_path="x",
                         archive_sha256="0" * 64, archive_bytes=1, image_id="sha256:" + "1" * 64,
                         state=SubmissionState.queued, metric_profile="default")
        s.add(sub)
        s.flush()
        runs = [Run(submission_id=sub.id, attempt=i + 1, state=RunState.queued if i == attempts - 1 else FAIL,
                    queue="cpu", testset="tiny", metric_profile="default") for i in range(attempts)]
        s.add_all(runs)
        s.flush()
        return sub.id, [r.id for r in runs]


def _events(url: str, run_id: int) -> list[AuditEvent]:
    with session_scope(url) as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.target_type == "run",
                                                       AuditEvent.target_id == str(run_id)).order_by(AuditEvent.id)))


def test_run_start_and_finish_mirror_the_submission_and_audit(db) -> None:
    sub_id, [run_id] = _submission(db)
    with session_scope(db) as s:
        assert transition(s, run_id, R, actor_label="worker:w1", worker="w1")
    with session_scope(db) as s:
        run, sub = s.get(Run, run_id), s.get(Submission, sub_id)
        assert run.state == R and run.started_at is not None and run.heartbeat_at is not None
        assert run.finished_at is None
        assert sub.state == SubmissionState.running and sub.finished_at is None
    with session_scope(db) as s:
        assert transition(s, run_id, FAIL, reason="every case failed; first: case X: crash", actor_label="trusted",
                          totals=dict(dsc=0.0, nsd=0.0, runtime_s=60.0, aggregates={"dsc": 0.0}), cases=3, failed=3)
    with session_scope(db) as s:
        run, sub = s.get(Run, run_id), s.get(Submission, sub_id)
        assert run.state == FAIL and run.finished_at is not None and run.reason.startswith("every case failed")
        assert sub.state == SubmissionState.failed and sub.reason == run.reason and sub.finished_at is not None
        assert (sub.dsc, sub.nsd, sub.runtime_s, sub.aggregates) == (0.0, 0.0, 60.0, {"dsc": 0.0})
    events = _events(db, run_id)
    assert [e.action for e in events] == ["run.running", "run.failed"]
    assert events[0].actor == "worker:w1" and events[0].details["worker"] == "w1"
    failed = events[1].details
    assert failed["submission_id"] == sub_id and failed["attempt"] == 1 and failed["previous"] == "running"
    assert failed["reason"].startswith("every case failed") and (failed["cases"], failed["failed"]) == (3, 3)


def test_illegal_transition_raises_and_changes_nothing(db) -> None:
    sub_id, [run_id] = _submission(db)
    with session_scope(db) as s:
        transition(s, run_id, R)
        transition(s, run_id, OK, reason="")
    with session_scope(db) as s, pytest.raises(IllegalTransition, match="succeeded -> running"):
        transition(s, run_id, R)
    with session_scope(db) as s:
        assert s.get(Run, run_id).state == OK and s.get(Submission, sub_id).state == SubmissionState.succeeded
    assert [e.action for e in _events(db, run_id)] == ["run.running", "run.succeeded"]


def test_only_from_returns_false_without_a_trace(db) -> None:
    """A finisher that lost the race (the run already ended) changes nothing and records nothing."""
    sub_id, [run_id] = _submission(db)
    with session_scope(db) as s:
        transition(s, run_id, R)
        assert transition(s, run_id, OK, only_from=ACTIVE_RUN_STATES)
    with session_scope(db) as s:
        assert not transition(s, run_id, FAIL, reason="late", only_from=ACTIVE_RUN_STATES)
    with session_scope(db) as s:
        assert s.get(Run, run_id).state == OK and s.get(Submission, sub_id).state == SubmissionState.succeeded
    assert [e.action for e in _events(db, run_id)] == ["run.running", "run.succeeded"]
    with session_scope(db) as s, pytest.raises(IllegalTransition):  # an expectation the table forbids is a bug
        transition(s, run_id, R, only_from=FINAL_RUN_STATES)


def test_concurrent_finishers_one_wins(any_db) -> None:
    """Two sessions read the run as running; both try to finish it: one event, one final state."""
    db = any_db
    _sub_id, [run_id] = _submission(db)
    with session_scope(db) as s:
        transition(s, run_id, R)
    from api.db import get_sessionmaker

    a, b = get_sessionmaker(db)(), get_sessionmaker(db)()
    try:
        ra, rb = a.get(Run, run_id), b.get(Run, run_id)
        assert ra.state == rb.state == R
        assert transition(a, ra, OK, only_from=ACTIVE_RUN_STATES)
        a.commit()
        assert not transition(b, rb, FAIL, reason="lost race", only_from=ACTIVE_RUN_STATES)
        b.commit()
    finally:
        a.close()
        b.close()
    assert [e.action for e in _events(db, run_id)] == ["run.running", "run.succeeded"]


@pytest.mark.postgres
def test_the_conditional_flip_decides_a_real_race(settings, postgres_url) -> None:
    """PostgreSQL: A has flipped the run (row locked, not committed); B has read it as running and blocks on its
    UPDATE; once A commits, B's conditional UPDATE matches no row: B returns False and records nothing."""
    import threading
    import time

    from api.db import get_engine, get_sessionmaker
    from api.models import Base

    Base.metadata.create_all(get_engine(postgres_url))
    _sub_id, [run_id] = _submission(postgres_url)
    with session_scope(postgres_url) as s:
        transition(s, run_id, R)
    a, b = get_sessionmaker(postgres_url)(), get_sessionmaker(postgres_url)()
    result: list[bool] = []

    def loser() -> None:
        result.append(transition(b, run_id, FAIL, reason="lost race", only_from=ACTIVE_RUN_STATES))
        b.commit()

    try:
        assert transition(a, run_id, OK, only_from=ACTIVE_RUN_STATES)  # flipped, uncommitted
        thread = threading.Thread(target=loser)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive() and not result  # B waits on A's row lock
        a.commit()
        thread.join(10)
        assert result == [False]
    finally:
        a.close()
        b.close()
    assert [e.action for e in _events(postgres_url, run_id)] == ["run.running", "run.succeeded"]


def test_an_older_attempt_does_not_move_the_submission(db) -> None:
    sub_id, [old_id, new_id] = _submission(db, attempts=2)
    with session_scope(db) as s:  # attempt 1 is made active again only to finish it late
        s.get(Run, old_id).state = R
    with session_scope(db) as s:
        transition(s, new_id, R)
        transition(s, old_id, OK)
    with session_scope(db) as s:
        assert s.get(Submission, sub_id).state == SubmissionState.running
        assert latest_runs(s, [sub_id])[sub_id].id == new_id
    assert _events(db, old_id)[-1].action == "run.succeeded"  # still audited on its run


def test_cancel_stops_every_active_run_and_stays_cancelled(db) -> None:
    sub_id, [run_id] = _submission(db)
    with session_scope(db) as s:
        transition(s, run_id, R)
    with session_scope(db) as s:
        member = s.scalars(select(Member).where(Member.name == "alice")).one()
        assert cancel_submission_runs(s, s.get(Submission, sub_id), reason="cancelled by alice", actor=member)
    with session_scope(db) as s:
        sub, run = s.get(Submission, sub_id), s.get(Run, run_id)
        assert sub.state == SubmissionState.cancelled and sub.cancelled_at is not None and sub.finished_at is not None
        assert run.state == CANCEL and run.finished_at is not None and run.reason == "cancelled by alice"
        assert not cancel_submission_runs(s, sub, reason="again")  # finished: the route answers 409
    ev = _events(db, run_id)[-1]
    assert ev.action == "run.cancelled" and ev.actor.startswith("participant:alice")
    assert ev.details["reason"] == "cancelled by alice" and ev.details["previous"] == "running"


def test_new_attempt_requeues_the_submission(db) -> None:
    sub_id, [run_id] = _submission(db)
    with session_scope(db) as s:
        transition(s, run_id, R)
        transition(s, run_id, FAIL, reason="boom", totals=dict(dsc=0.1))
    with session_scope(db) as s:
        sub = s.get(Submission, sub_id)
        run = new_attempt(s, sub, requested_by="rerun:1")
        assert run is not None and run.attempt == 2 and run.state == Q
        assert new_attempt(s, sub, requested_by="rerun:1") is None  # one active attempt at a time
    with session_scope(db) as s:
        sub = s.get(Submission, sub_id)
        assert (sub.state, sub.reason, sub.dsc, sub.finished_at) == (SubmissionState.queued, "", None, None)


# --------------------------------------------------------------------------------------------- one home


def _assignments_of_state(path: Path) -> list[int]:
    """Lines of ``path`` that write a run or submission state outside api.lifecycle: ``x.state = …State.…``,
    ``update(Run|Submission)…values(state=…)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                if any(isinstance(t, ast.Attribute) and t.attr == "state" for t in names) and \
                        any(k in ast.unparse(node.value) for k in ("RunState", "SubmissionState")):
                    hits.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            src = ast.unparse(node.func.value)
            if ("update(Run)" in src or "update(Submission)" in src) and any(k.arg == "state" for k in node.keywords):
                hits.append(node.lineno)
    return hits


def test_run_and_submission_states_change_only_in_lifecycle() -> None:
    """A second place that flips run or submission states (and forgets the mirror or the audit) fails here."""
    offenders = {}
    for path in sorted((ROOT / "api").rglob("*.py")):
        if path.name == "lifecycle.py" or "migrations" in path.parts:
            continue
        lines = _assignments_of_state(path)
        if lines:
            offenders[str(path.relative_to(ROOT))] = lines
    assert offenders == {}, f"state changes outside api/lifecycle.py: {offenders}"
