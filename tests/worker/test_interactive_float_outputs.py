"""Every validation point of an output follows the run's metric profile (issue 14, "The 2024 profile, closer
still"): float ``segs`` were scored by the 2024/2025 references (``seg == i``), so under ``cvpr24`` / ``cvpr25`` an
interactive run of an image writing float labels is scored at every iteration — by the trusted side's iteration
check (api/execution/interactive.py) and by the execution host, which reads the accepted output back as the next
``prev_pred`` (worker/interactive.py, the shard spec's ``metric_profile``) — while under ``default`` every iteration
is refused with the loader's reason.

Through THE execution path (tests/run_helpers.py: the API over HTTP, worker.shard.ShardExecutor, real Docker).
Image: behaviour click-float of tests/behaviours.py (tests/images/behaviour/scripts/click.py, mode float)."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from api.db import migrate, session_scope
from api.models import CaseResult, CaseStatus, RunState, TrackKind
from tests.run_helpers import ShardedHost, create_run
from tests.worker_helpers import build_test_image, make_testset

pytestmark = pytest.mark.docker

K = 3


@pytest.fixture(scope="module")
def float_image(docker_client, base_image):
    return build_test_image(docker_client, base_image, "click-float")


@pytest.fixture
def wsettings(settings):
    s = settings.model_copy(update={"heartbeat_timeout_s": 60, "max_attempts": 2, "execution": "sharded"})
    migrate(s.database_url)
    return s


def _run(wsettings, docker_client, image_id, testset: str, profile: str):
    _sub, run_id = create_run(wsettings, testset=testset, image_id=image_id, kind=TrackKind.interactive,
                              iterations=K, case_timeout_s=60, fail_fast_cases=0, metric_profile=profile)
    with ShardedHost(wsettings, docker=docker_client) as host:
        result = host.run(run_id)
    with session_scope(wsettings.database_url) as s:
        rows = s.scalars(select(CaseResult).where(CaseResult.run_id == run_id).order_by(CaseResult.case_id)).all()
        s.expunge_all()
    return result, rows


def test_float_segs_scored_under_cvpr24_and_refused_under_default(wsettings, docker_client, float_image, tmp_path):
    testset = str(make_testset(tmp_path / "testset", n2d=1, n3d=1))
    result, rows = _run(wsettings, docker_client, float_image, testset, "cvpr24")
    assert result.state == RunState.succeeded, result.reason
    assert rows
    for row in rows:
        it = row.iterations
        assert row.status == CaseStatus.ok, (row.case_id, row.reason, row.stderr_tail)
        # every iteration valid: the trusted side accepted each float output, and the host read each back as the
        # next prev_pred (a refusal there would end the case)
        assert [e["valid"] for e in it] == [True] * (K + 1), (row.case_id, it)
        d = [e["dsc"] for e in it]
        assert d[0] > 0 and all(b >= a - 1e-9 for a, b in itertools.pairwise(d)), (row.case_id, d)

    result, rows = _run(wsettings, docker_client, float_image, testset, "default")
    assert rows
    for row in rows:
        it = row.iterations or []
        assert row.status != CaseStatus.ok and row.dsc == 0.0, (row.case_id, row.status, row.reason)
        assert it and all(not e["valid"] and e["status"] == "invalid_output" for e in it), (row.case_id, it)
        assert "invalid prediction" in it[0]["reason"] and "astype(np.uint8)" in it[0]["reason"], it[0]["reason"]
