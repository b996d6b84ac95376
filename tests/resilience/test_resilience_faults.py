"""Issue 9, faults during a run: a fresh queue of submissions runs through the execution path as real
processes — the API (uvicorn on 127.0.0.1), the trusted scorer (``segarena scorer``, with the reaper beat), an
execution worker (``python -m worker.exec_tasks``), a Redis broker, PostgreSQL, Docker — while one piece of the
infrastructure fails mid-case: SIGKILL of the execution worker (its shard is requeued by the reaper after
SEGARENA_HEARTBEAT_TIMEOUT_S=4 s and run by a fresh worker), a restart of Redis (``shutdown nosave``: every queued
message is lost), a restart of PostgreSQL (stopped immediately, as a crash would) and the storage directory
read-only for 4 s. Nothing may be lost or counted twice; the figures (and the extra time against an undisturbed run
measured in the same module) are printed as a table. One stack lives through the scenarios, in that order, as a
deployment lives through its faults: each scenario counts only its own submissions (tests/resilience_helpers.FaultRig).

Redis and PostgreSQL are private instances started by the test on free ports (the shared 6379 and 5432 are never
touched), so this module runs beside the others. The restart of a Docker engine is
test_resilience_docker_restart.py (a private engine of its own, beside the others too).
"""

from __future__ import annotations

import pytest

from tests.resilience_helpers import assert_nothing_lost, fault_rig

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def rig(docker_client, base_image, tmp_path_factory, request):
    with fault_rig(docker_client, base_image, tmp_path_factory.mktemp("faults"), request, baseline=True) as rig:
        yield rig


def test_undisturbed_baseline(rig):
    f = rig.figures["none"]
    assert_nothing_lost(f)
    assert f.attempts == f.submissions  # one shard per submission, delivered once: no requeue without a fault


@pytest.mark.parametrize("fault", ["worker_sigkill", "redis_restart", "postgres_restart", "storage_unwritable"])
def test_fault_mid_case_loses_and_duplicates_nothing(rig, fault):
    f = rig.scenario(fault)
    rig.figures[fault] = f
    assert_nothing_lost(f)
