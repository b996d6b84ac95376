"""Issue 13, the worker's share of "zero trust in participants", through the real execution path (the sharded
path of docs/worker-protocol.md: the real API app, the execution host ``worker.shard.ShardExecutor`` on a real
Docker engine, the trusted scorer inline; tests/run_helpers.py) with hostile images built in the test:

- a case's outputs/ leaves storage once scored (``SEGARENA_KEEP_CASE_OUTPUTS`` keeps it);
- the output watch bounds the number of entries and the apparent (sparse) size of outputs/;
- every stored reason is bounded (``SEGARENA_REASON_MAX_CHARS``), evaluator messages quote untrusted
  content only in bounded fragments;
- fail-fast: a run stops when its first K cases all fail by the participant's fault;
- ``allow_root: false`` decides by numeric uid (``USER 00``, a passwd alias of uid 0): the hostile kinds of this
  issue (root spelled otherwise, a passwd user, a file flood, a sparse file, a huge reason) are checked in
  tests/resilience/test_resilience_hostile.py, on the hostile suite's one run of every kind.
"""

from __future__ import annotations

import time
import zipfile

import pytest
from sqlalchemy import select

from api.db import migrate, session_scope
from api.models import CaseResult, CaseStatus, Run, RunState, Submission, SubmissionState
from tests.resilience_helpers import files_under
from tests.worker_helpers import build_test_image, make_testset

pytestmark = pytest.mark.docker

LIMIT = 2000  # the default SEGARENA_REASON_MAX_CHARS


# ------------------------------------------------------------------------------------------------
# the runner


@pytest.fixture(scope="module")
def images(docker_client, base_image):
    return {n: build_test_image(docker_client, base_image, n) for n in ("correct", "crash")}


@pytest.fixture
def wsettings(settings):
    s = settings.model_copy(update={"heartbeat_timeout_s": 30, "max_attempts": 3})
    migrate(s.database_url)
    return s


@pytest.fixture
def archive(tmp_path):
    p = tmp_path / "image.tar"
    p.write_bytes(b"placeholder: the test images are on the engine already")
    return p


def _run(wsettings, testset, archive, image_id, **track_fields) -> tuple[int, int, float]:
    """A fresh track and submission of ``image_id``, run to its end through the sharded path."""
    from tests.run_helpers import create_run, run_sharded

    sub_id, run_id = create_run(wsettings, testset=str(testset), image_id=image_id, archive=archive, team="team-z",
                                **track_fields)
    t0 = time.monotonic()
    result = run_sharded(run_id, wsettings)
    assert result.final and result.requeues == [], (result.sub_state, result.requeues, result.reason)
    return sub_id, run_id, time.monotonic() - t0


def test_kept_outputs_when_asked(wsettings, archive, images, tmp_path):
    testset = make_testset(tmp_path / "ts", n2d=1, n3d=0)
    keep = wsettings.model_copy(update={"keep_case_outputs": True})
    _, rid, _ = _run(keep, testset, archive, images["correct"])
    kept = files_under(keep.storage_dir / "runs" / str(rid))  # runs/<run>/<case>/output-<random>.npz (uploaded)
    assert [(p.parent.name, p.name.startswith("output-"), p.suffix) for p in kept] == [("2DBox_US_0000", True, ".npz")]
    _, rid, _ = _run(wsettings, testset, archive, images["correct"])
    assert not (wsettings.storage_dir / "runs" / str(rid)).exists()


def test_fail_fast_stops_a_broken_image_on_the_tiny_set(wsettings, archive, images):
    """A crashing image on the 27-case tiny set: 3 cases run, not 27; the reason says why and what to do."""
    sub_id, rid, seconds = _run(wsettings, "tiny", archive, images["crash"], memory_mb=512, fail_fast_cases=3)
    with session_scope(wsettings.database_url) as s:
        run, sub = s.get(Run, rid), s.get(Submission, sub_id)
        rows = s.execute(select(CaseResult).where(CaseResult.run_id == rid)).scalars().all()
        assert run.state == RunState.failed and sub.state == SubmissionState.failed
        assert len(rows) == 3 and all(c.status == CaseStatus.crash for c in rows)
        assert sub.reason.startswith("stopped after the first 3 cases failed: predict.sh exited with code 1"), sub.reason
        assert "segarena check" in sub.reason and "make predict.sh exit 0" in sub.reason
        assert sub.reason.count("predict.sh exited with code 1") == 1  # deduplicated
        assert "(24 remaining cases were not run)" in sub.reason
        assert run.cases_total == 27
        assert sub.aggregates["n"] == 3 and sub.aggregates["not_run"] == 24 and sub.aggregates["stopped_early"] is True
        assert sub.aggregates["n"] + sub.aggregates["not_run"] == run.cases_total
    print(f"\nfail-fast: crash image on tiny (27 cases), K=3: {seconds:.1f} s")


def test_fail_fast_zero_never_stops(wsettings, archive, images, tmp_path):
    testset = make_testset(tmp_path / "ts", n2d=4, n3d=1)
    sub_id, rid, _ = _run(wsettings, testset, archive, images["crash"], fail_fast_cases=0)
    with session_scope(wsettings.database_url) as s:
        sub = s.get(Submission, sub_id)
        assert len(s.execute(select(CaseResult).where(CaseResult.run_id == rid)).scalars().all()) == 5
        assert sub.reason.startswith("every case failed"), sub.reason
        assert sub.aggregates["not_run"] == 0 and sub.aggregates["stopped_early"] is False


def test_fail_fast_rule():
    """The rule the trusted side applies (api/execution/scoring.check_fail_fast) to a run's first K cases."""
    from evaluator.runs import fail_fast_reason

    crash = (CaseStatus.crash, "case A: predict.sh exited with code 1; see its stderr (after 0.50 s)")
    slow = (CaseStatus.timeout, "case B: time limit exceeded (5 s): the container was stopped (after 5.01 s)")
    ok = (CaseStatus.ok, "")
    assert fail_fast_reason(3, [crash, crash], remaining=5) == ""  # not yet K cases
    assert fail_fast_reason(3, [crash, ok, crash], remaining=5) == ""  # one succeeded
    assert fail_fast_reason(3, [crash, crash, crash], remaining=0) == ""  # nothing left to save
    assert fail_fast_reason(3, [crash, crash, slow, crash], remaining=5) == ""  # decided at K only
    why = fail_fast_reason(3, [crash, slow, crash], remaining=5)
    assert why.startswith("stopped after the first 3 cases failed: predict.sh exited with code 1; see its stderr | "
                          "time limit exceeded (5 s): the container was stopped — "), why
    assert "finish each case within the time limit" in why and "(after" not in why
    assert fail_fast_reason(0, [crash] * 3, remaining=5) == ""


# ------------------------------------------------------------------------------------------------
# bounded reasons


def test_one_bound_helper():
    from evaluator.io import bound_text

    assert bound_text("abc", 5) == "abc"
    assert bound_text("x" * 10_000, 2000) == "x" * 2000 + "… (8000 chars cut)"


def test_evaluator_messages_quote_untrusted_content_bounded(tmp_path):
    """An npz of 40,000 long-named members and no 'segs': the message lists 10 names, not 10 MB."""
    from evaluator.io import CaseFormatError, load_prediction

    path = tmp_path / "2DBox_US_0000.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(40_000):
            zf.writestr(f"{i:06d}" + "k" * 244 + ".npy", b"")
    with pytest.raises(CaseFormatError) as err:
        load_prediction(path, expected_shape=(4, 4))
    text = str(err.value)
    assert "missing array 'segs'" in text and "and 39990 more" in text
    assert len(text) < 3000, len(text)


def test_infrastructure_reasons_are_bounded(wsettings, archive, tmp_path):
    """An execution host that reports a huge infrastructure reason on every delivery (max_attempts=3): the shard's,
    the run's and the submission's reasons stay bounded."""
    from api.execution.contract import RUN_SHARD_TASK
    from api.execution.shards import enqueue_run_sharded
    from api.models import Shard
    from tests.run_helpers import ShardedHost, create_run, inline_sender

    testset = make_testset(tmp_path / "ts", n2d=1, n3d=0)
    sub_id, run_id = create_run(wsettings, testset=str(testset), image_id="sha256:x", archive=archive, team="team-i")
    with ShardedHost(wsettings) as host, inline_sender(host.settings) as sender:
        enqueue_run_sharded(host.settings, run_id)
        for attempt in range(3):
            spec = host.client.claim(host.name, "cpu")
            assert spec is not None, attempt
            host.client.finish(spec["shard_id"], spec["lease"], "infra", "engine said: " + "e" * 19_000)
        assert host.client.claim(host.name, "cpu") is None
    assert len(sender.of(RUN_SHARD_TASK)) == 3  # the first message and 2 requeues
    with session_scope(wsettings.database_url) as s:
        sub = s.get(Submission, sub_id)
        runs = s.execute(select(Run).where(Run.submission_id == sub_id)).scalars().all()
        shards = s.execute(select(Shard).where(Shard.run_id == run_id)).scalars().all()
        assert sub.state == SubmissionState.failed and len(sub.reason) <= LIMIT + 40, len(sub.reason)
        assert sub.reason.startswith("infrastructure failure on all 3 deliveries") and sub.reason.endswith("chars cut)")
        assert all(len(r.reason) <= LIMIT + 40 for r in runs)
        assert all(len(sh.reason) <= LIMIT + 40 for sh in shards)
