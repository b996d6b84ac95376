"""Issue 9, a fault during a run: the restart of the Docker engine mid-case while a fresh queue of submissions runs
through the execution path as real processes (tests/resilience/test_resilience_faults.py has the other faults and
the undisturbed reference run). Nothing may be lost or counted twice.

The engine restarted is one of the test's own (tests/resilience_helpers.PrivateDocker: its own data root, socket and
containerd, a copy of the base image; the execution worker reaches it through SEGARENA_DOCKER_HOST), stopped with
SIGTERM as a service manager stops it and started again: the engine every other test uses is never touched, so this
runs beside them.
"""

from __future__ import annotations

import os

import pytest

from tests.resilience_helpers import assert_nothing_lost, fault_rig

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def test_docker_engine_restart_mid_case_loses_and_duplicates_nothing(docker_client, base_image, tmp_path, request):
    before = _links()
    with fault_rig(docker_client, base_image, tmp_path, request, baseline=False, private_docker=True) as rig:
        f = rig.scenario("docker_restart")
        rig.figures["docker_restart"] = f
        assert_nothing_lost(f)
        assert f.attempts > f.submissions, f  # the restart cut a shard short: it was delivered again
    # the shared engine's network is untouched (an engine started with --bridge none deletes docker0), and the
    # private engine's bridge is gone with it
    assert _links() == before, (sorted(before - _links()), sorted(_links() - before))
