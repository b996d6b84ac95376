"""Issue 9, a fault during a run: the restart of the Docker engine mid-case (the shared engine, restarted the way
scripts/lib.sh starts it) while a fresh queue of submissions runs through the execution path as real processes
(tests/resilience/test_resilience_faults.py has the other faults and the undisturbed reference run). Nothing may be
lost or counted twice. It restarts the engine every other test uses, so it runs alone, after everything else
(marker ``serial``), and only where nothing else can be using the engine: under CI=true or with
SEGARENA_TEST_RESTART_DOCKER=1.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import IN_CI
from tests.resilience_helpers import assert_nothing_lost, fault_rig, restart_dockerd

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RESTART_DOCKER = IN_CI or os.environ.get("SEGARENA_TEST_RESTART_DOCKER", "") == "1"


@pytest.mark.skipif(not RESTART_DOCKER, reason="restarts the shared Docker engine: runs under CI=true or "
                                               "SEGARENA_TEST_RESTART_DOCKER=1 only")
def test_docker_engine_restart_mid_case_loses_and_duplicates_nothing(docker_client, base_image, tmp_path, request):
    with fault_rig(docker_client, base_image, tmp_path, request, baseline=False) as rig:
        f = rig.scenario("docker_restart", restart_docker=restart_dockerd)
        rig.figures["docker_restart"] = f
        assert_nothing_lost(f)
