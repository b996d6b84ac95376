"""The engine calls around a case container taken off the critical path (issues 12 and 14) without weakening it:
a container created ahead (``prepare_container``) has exactly the isolation of one created on demand and runs the
case the same way; a mismatching or unused one is removed; background removal leaves nothing behind; an
interactive case that ends early removes the container made ahead for its next iteration."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.waiting import WaitTimeout, wait_until
from tests.worker_helpers import build_test_image, make_testset
from worker import sandbox as sb
from worker.sandbox.container import _create, container_params

pytestmark = pytest.mark.docker

CASE = "2DBox_US_0000"


@pytest.fixture(scope="module")
def correct(docker_client, base_image) -> str:
    return build_test_image(docker_client, base_image, "correct")


@pytest.fixture(scope="module")
def case_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("testset")
    make_testset(root)
    return root / "inputs" / f"{CASE}.npz"


@pytest.fixture
def profile() -> sb.SandboxProfile:
    return sb.SandboxProfile(memory_bytes=256 * 1024**2, cpus=1.0, pids_limit=64, tmpfs_bytes=16 * 1024**2,
                             timeout_s=60, cgroup_parent=sb.CgroupMeter.process_parent())


def _labels() -> dict[str, str]:
    return {sb.LABEL_RUN: f"test-{uuid.uuid4().hex[:10]}", sb.LABEL_CASE: CASE}


def _left(docker_client, labels: dict[str, str]) -> list[dict[str, Any]]:
    return docker_client.api.containers(all=True, filters={"label": f"{sb.LABEL_RUN}={labels[sb.LABEL_RUN]}"})


def _gone_within(docker_client, labels: dict[str, str], seconds: float) -> bool:
    try:
        return wait_until(lambda: not _left(docker_client, labels), seconds, "the run's containers to be removed",
                          interval=0.1)
    except WaitTimeout:
        return False


def _isolation(attrs: dict[str, Any], inputs: str) -> dict[str, Any]:
    """What an inspect says about a container's isolation, with its own work directory (inputs/ and the hosts file)
    written as WORK."""
    host = dict(attrs["HostConfig"])
    host["Binds"] = sorted(b.replace(str(Path(inputs).parent), "WORK") for b in host.get("Binds") or [])
    config = attrs["Config"]
    return {"host": host, "user": config.get("User"), "env": sorted(config.get("Env") or []),
            "cmd": config.get("Cmd"), "image": config.get("Image"), "labels": config.get("Labels"),
            "network_disabled": config.get("NetworkDisabled"), "entrypoint": config.get("Entrypoint")}


def test_precreated_container_is_isolated_exactly_like_one_created_on_demand(docker_client, correct, case_file,
                                                                            tmp_path, profile):
    labels = _labels()
    user = sb.resolve_user(docker_client, correct, allow_root=False)
    out = tmp_path / "ahead" / "outputs"
    prepared = sb.prepare_container(docker_client, image_id=correct, out_dir=out, profile=profile, labels=labels,
                                    scratch_dir=tmp_path, run_user=user)
    assert prepared is not None
    try:
        # the input directory is bind-mounted empty; the case's file is copied in when the case runs
        assert list(prepared.inputs.iterdir()) == []
        on_demand_inputs = tmp_path / "demand" / "inputs"
        on_demand_inputs.mkdir(parents=True)
        params = container_params(image_id=correct, inputs_dir=on_demand_inputs, outputs_dir=out, profile=profile,
                                  user=user[0], labels={sb.LABEL_WORKER: sb.worker_identity(), **labels})
        demand = _create(docker_client, params)
        try:
            a = _isolation(docker_client.api.inspect_container(prepared.container_id), str(prepared.inputs))
            b = _isolation(docker_client.api.inspect_container(demand), str(on_demand_inputs))
        finally:
            docker_client.api.remove_container(demand, force=True)
        assert a == b
        host = a["host"]
        assert host["NetworkMode"] == "none" and a["network_disabled"] is True
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"] and host["Init"] is True
        assert a["user"] == sb.NONROOT_USER and not any("docker.sock" in bind for bind in host["Binds"])
        hosts = str(on_demand_inputs.parent / "hosts")
        assert prepared.params == {**params, "volumes": {str(prepared.inputs): params["volumes"][str(on_demand_inputs)],
                                                         str(out): params["volumes"][str(out)],
                                                         str(prepared.work / "hosts"): params["volumes"][hosts]}}

        cr = sb.run_case(docker_client, image_id=correct, input_file=case_file, out_dir=out, profile=profile,
                         labels=labels, run_user=user, prepared=prepared, remove="async")
    except BaseException:
        prepared.discard()
        raise
    assert cr.precreated and cr.status == "ok", cr.reason
    assert cr.runtime_s > 0 and cr.container_params == prepared.params
    with np.load(cr.output_path) as seg:  # the model saw the input copied in after the container was created
        assert seg["segs"].shape == np.load(case_file)["imgs"].shape[:2]
    assert _gone_within(docker_client, labels, 10), "the background remover left the container"
    assert not prepared.work.exists()


def test_mismatching_precreated_container_is_removed_and_the_case_created_afresh(docker_client, correct, case_file,
                                                                                 tmp_path, profile):
    labels = _labels()
    user = sb.resolve_user(docker_client, correct, allow_root=False)
    out = tmp_path / "o" / "outputs"
    # made ahead under a smaller memory cap than the case runs under: never used
    prepared = sb.prepare_container(docker_client, image_id=correct, out_dir=out, profile=sb.with_overrides(
        profile, memory_bytes=128 * 1024**2), labels=labels, scratch_dir=tmp_path, run_user=user)
    assert prepared is not None
    stale = prepared.container_id
    cr = sb.run_case(docker_client, image_id=correct, input_file=case_file, out_dir=out, profile=profile,
                     labels=labels, run_user=user, prepared=prepared, remove="sync")
    assert cr.status == "ok" and not cr.precreated
    assert cr.container_params["mem_limit"] == 256 * 1024**2
    assert sb.flush_removals(10)
    assert all(c["Id"] != stale for c in docker_client.api.containers(all=True)), "the mismatching one was left"
    assert _gone_within(docker_client, labels, 10)


def test_unused_precreated_container_is_removed(docker_client, correct, tmp_path, profile):
    labels = _labels()
    user = sb.resolve_user(docker_client, correct, allow_root=False)
    prepared = sb.prepare_container(docker_client, image_id=correct, out_dir=tmp_path / "x" / "outputs",
                                    profile=profile, labels=labels, scratch_dir=tmp_path, run_user=user)
    assert prepared is not None and len(_left(docker_client, labels)) == 1
    prepared.discard()  # the case was cancelled, or it ended before this iteration
    assert _gone_within(docker_client, labels, 10)
    assert not prepared.work.exists()


def test_async_removal_leaves_nothing_and_is_bounded(docker_client, correct, case_file, tmp_path, profile):
    labels = _labels()
    user = sb.resolve_user(docker_client, correct, allow_root=False)
    for i in range(3):
        cr = sb.run_case(docker_client, image_id=correct, input_file=case_file, out_dir=tmp_path / f"{i}" / "outputs",
                         profile=profile, labels=labels, run_user=user, remove="async")
        assert cr.status == "ok", cr.reason
    assert sb.flush_removals(20)
    assert _left(docker_client, labels) == []
    with pytest.raises(ValueError, match="remove must be"):
        sb.run_case(docker_client, image_id=correct, input_file=case_file, out_dir=tmp_path / "bad",
                    profile=profile, labels=labels, run_user=user, remove="later")


def test_interactive_ahead_container_is_removed_when_the_case_ends(docker_client, correct, tmp_path, profile):
    from worker.interactive import _Ahead

    labels = _labels()
    user = sb.resolve_user(docker_client, correct, allow_root=False)
    ahead = _Ahead()
    ahead.start(docker_client, more=True, timing="container", image_id=correct, out_dir=tmp_path / "it1" / "outputs",
                profile=profile, labels=labels, scratch_dir=tmp_path, run_user=user)
    ahead.discard()  # what _interactive's finally does when the case is done early, cancelled or out of budget
    assert _gone_within(docker_client, labels, 10)
    # docker_run timing creates inside the timed call: nothing is made ahead
    ahead.start(docker_client, more=True, timing="docker_run", image_id=correct, out_dir=tmp_path / "it2" / "outputs",
                profile=profile, labels=labels, scratch_dir=tmp_path, run_user=user)
    assert ahead.take() is None and _left(docker_client, labels) == []


class _Host:
    """The one thing worker.interactive.run_case asks its executor for on a non-interactive case: the engine."""

    def __init__(self, docker_client: Any) -> None:
        self._docker = docker_client

    def docker(self) -> Any:
        return self._docker


@pytest.mark.parametrize("timing", ["container", "docker_run"])
def test_shard_case_container_is_created_while_the_input_downloads(docker_client, correct, case_file, tmp_path,
                                                                   profile, timing):
    """worker.shard creates a case's container (create_ahead) before the download and hands it to run_case; under
    docker_run timing (create and remove inside the timed span, as the reference) nothing is created ahead."""
    import shutil

    from worker import interactive as prompted

    labels = _labels()
    user = sb.resolve_user(docker_client, correct, allow_root=False)
    spec = {"timing": timing, "prompt": "box"}
    case = {"id": CASE}
    work = tmp_path / "case"
    work.mkdir()
    ahead = prompted.create_ahead(docker_client, spec=spec, case=case, work=work, profile=profile, labels=labels,
                                  run_user=user, image_id=correct)
    try:
        downloaded = work / "in" / case_file.name  # the "download", after the container was created
        downloaded.parent.mkdir()
        shutil.copyfile(case_file, downloaded)
        cr, outcome = prompted.run_case(_Host(docker_client), spec=spec, case=case, input_file=downloaded, work=work,
                                        profile=profile, labels=labels, run_user=user, image_id=correct,
                                        stopped=lambda: False, ahead=ahead)
    finally:
        ahead.discard()
    assert outcome is None and cr.status == "ok", cr.reason
    assert cr.precreated is (timing == "container")
    assert cr.container_params["labels"][sb.LABEL_CASE] == CASE
    assert sb.flush_removals(10) and _gone_within(docker_client, labels, 10)
