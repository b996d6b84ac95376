"""The Docker sandbox against a real engine: the test image built once per behaviour (tests/behaviours.py, which
also gives the verdict each must end with), each ending with the right recorded reason, the engine left clean, and
the caps actually applied."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest

from tests.behaviours import BEHAVIOURS, expected, probes
from tests.worker_helpers import BehaviourImages, build_test_image, make_testset, segarena_containers
from worker import sandbox as sb

pytestmark = pytest.mark.docker


# ------------------------------------------------------------------------------------------------
# pure parts


def test_cpuset_roundtrip():
    assert sb.parse_cpuset("0-2,5, 7-8") == [0, 1, 2, 5, 7, 8]
    assert sb.format_cpuset([8, 7, 5, 2, 1, 0]) == "0-2,5,7-8"
    assert sb.format_cpuset([3]) == "3"


def test_bounded_log_keeps_head_and_tail():
    log = sb._BoundedLog(10)
    for chunk in (b"0123456", b"789abcdef", b"ghij", b"klmnopqrstuvwxyz"):
        log.feed(chunk)
    head, tail = log.texts()
    assert head == "0123456789"
    assert tail == "qrstuvwxyz"
    assert log.total == 36
    cr = sb.CaseRun(status="ok", stdout_head=head, stdout_tail=tail, stdout_bytes=36)
    assert "[... 16 bytes of stdout cut ...]" in cr.log_text("stdout")


def test_profile_params_apply_every_cap(tmp_path):
    profile = sb.SandboxProfile(memory_bytes=512 * 1024**2, cpus=1.5, cpuset="2-5", pids_limit=99,
                                tmpfs_bytes=32 * 1024**2, timeout_s=5, gpus=("3",), cgroup_parent="segarena-x")
    p = sb.container_params(image_id="sha256:abc", inputs_dir=tmp_path / "i", outputs_dir=tmp_path / "o",
                            profile=profile, user=sb.NONROOT_USER, labels={"segarena.run": "1"})
    assert p["command"] == ["/bin/sh", "-c", "sh predict.sh"]
    # no network sandbox at all (not even "none"'s: its set-up was ~0.08 s of every timed span), /etc/hosts ours
    assert p["network_disabled"] is True and p["network_mode"] == "none"
    assert p["mem_limit"] == p["memswap_limit"] == 512 * 1024**2
    assert p["cpuset_cpus"] == "2-3" and p["cpu_quota"] == 150_000 and p["cpu_period"] == 100_000
    assert p["pids_limit"] == 99 and p["read_only"] is True and p["init"] is True
    assert p["cap_drop"] == ["ALL"] and p["security_opt"] == ["no-new-privileges"]
    assert "size=33554432" in p["tmpfs"]["/tmp"] and p["environment"]["HOME"] == "/tmp"
    assert p["user"] == "1000:1000"
    assert p["volumes"] == {str(tmp_path / "i"): {"bind": "/workspace/inputs", "mode": "ro"},
                            str(tmp_path / "o"): {"bind": "/workspace/outputs", "mode": "rw"},
                            str(tmp_path / "hosts"): {"bind": "/etc/hosts", "mode": "ro"}}  # beside inputs/
    assert p["device_requests"][0]["device_ids"] == ["3"] and p["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert p["cgroup_parent"] == "/segarena-x"
    assert not any("docker.sock" in k for k in p["volumes"])


def test_root_policy():
    assert sb.image_runs_as_root({"Config": {"User": ""}})
    assert sb.image_runs_as_root({"Config": {"User": "0:0"}})
    assert sb.image_runs_as_root({"Config": {"User": "root"}})
    assert not sb.image_runs_as_root({"Config": {"User": "1001"}})


# ------------------------------------------------------------------------------------------------
# real engine


@pytest.fixture(scope="session")
def test_images(docker_client, base_image) -> dict[str, str]:
    return BehaviourImages(docker_client, base_image)  # each behaviour built on first use


@pytest.fixture(scope="session")
def case_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("testset")
    make_testset(root)
    return root


@pytest.fixture
def profile():
    parent = sb.CgroupMeter.process_parent()
    return sb.SandboxProfile(memory_bytes=256 * 1024**2, cpus=1.0, pids_limit=64, tmpfs_bytes=16 * 1024**2,
                             timeout_s=30, cgroup_parent=parent)


def _run(docker_client, test_images, case_files, tmp_path, name, profile, case="2DBox_US_0000"):
    tag = uuid.uuid4().hex[:10]
    cr = sb.run_case(docker_client, image_id=test_images[name], input_file=case_files / "inputs" / f"{case}.npz",
                     out_dir=tmp_path / name / "outputs", profile=profile,
                     labels={sb.LABEL_RUN: f"test-{tag}", sb.LABEL_CASE: case})
    assert docker_client.api.containers(all=True, filters={"label": f"segarena.run=test-{tag}"}) == []
    return cr


def test_correct_image_runs_confined(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "correct", profile)
    assert cr.status == expected("correct"), cr.reason + cr.stderr_head
    assert cr.exit_code == 0 and cr.runtime_s > 0
    # root image on a track that forbids root: runs as 1000:1000, root fs read-only, inputs read-only
    assert "uid=1000 rootfs=ro inputs=ro home=/tmp files=['2DBox_US_0000.npz']" in cr.stdout_head
    assert cr.output_path == tmp_path / "correct" / "outputs" / "2DBox_US_0000.npz"
    segs = sb.check_output(cr, expected_shape=(48, 64))
    assert segs is not None and segs.shape == (48, 64) and set(np.unique(segs)) == {0, 1, 2}
    if profile.cgroup_parent:
        assert cr.peak_memory_bytes and 5 * 1024**2 < cr.peak_memory_bytes < 256 * 1024**2
        assert cr.cpu_s and 0.01 < cr.cpu_s < cr.runtime_s * 2
    assert cr.container_params["network_mode"] == "none"


def test_allow_root_track_runs_image_user(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "correct", sb.with_overrides(profile, allow_root=True))
    assert cr.status == "ok" and "uid=0 rootfs=ro" in cr.stdout_head
    assert "user" not in cr.container_params


def test_memory_bomb_is_oom(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "memory_bomb", profile)
    assert cr.status == expected("memory_bomb")
    assert cr.reason == "memory limit exceeded (256 MiB): the container was stopped"
    if profile.cgroup_parent:
        assert cr.peak_memory_bytes >= 250 * 1024**2


def test_sleeper_times_out(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "sleep_forever",
              sb.with_overrides(profile, timeout_s=2))
    assert cr.status == expected("sleep_forever")
    assert cr.reason == "time limit exceeded (2 s): the container was stopped"
    assert 2 <= cr.runtime_s < 10
    assert "sleeping" in cr.stdout_head


def test_crash_keeps_stderr(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "crash", profile)
    assert cr.status == expected("crash") and cr.exit_code == 1
    assert cr.reason.startswith("predict.sh exited with code 1")
    assert "model weights not found" in cr.stderr_head


def test_no_output(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "exit0_no_output", profile)
    assert cr.status == expected("exit0_no_output")
    assert cr.reason == "no output file outputs/2DBox_US_0000.npz (the output directory is empty)"


def test_wrong_shape_is_invalid(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "wrong_shape", profile)
    assert cr.status == "ok"
    assert sb.check_output(cr, expected_shape=(48, 64)) is None
    assert cr.status == expected("wrong_shape") and "shape" in cr.reason


def test_pickle_is_refused(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "pickle_npz", profile)
    assert sb.check_output(cr, expected_shape=(48, 64)) is None
    assert cr.status == expected("pickle_npz") and cr.reason.startswith("invalid prediction")


def test_network_is_absent(docker_client, base_image, case_files, tmp_path, profile):
    """Only loopback, and a listener on the host's 127.0.0.1 (its port baked into the image) is never reached; the
    model's own loopback works and "localhost" resolves (the engine writes no /etc/hosts without a network)."""
    from tests.resilience_helpers import Listener, remove_listener_image

    listener = Listener()
    images: dict[str, str] = {}
    try:
        images = {"network": build_test_image(docker_client, base_image, "network", LISTENER_PORT=listener.port)}
        cr = _run(docker_client, images, case_files, tmp_path, "network", profile)
    finally:
        listener.close()
        remove_listener_image(docker_client, images.get("network"))
    assert "interfaces: lo" in cr.stdout_head
    found = probes(cr.stdout_head)
    assert BEHAVIOURS["network"].check(found) == [], found
    assert found["ifaces"] == "lo" and found["connect_host_listener"] != "ok" and found["own_loopback"] == "ok"
    assert listener.accepted == 0
    assert cr.status == expected("network") and cr.exit_code == 0  # contained, it then behaves
    assert sb.check_output(cr, expected_shape=(48, 64)) is not None


def test_fork_bomb_hits_pids_limit(docker_client, test_images, case_files, tmp_path, profile):
    """It forks until refused, then hangs with its children: stopped, with a reason the table names."""
    cr = _run(docker_client, test_images, case_files, tmp_path, "fork_bomb", sb.with_overrides(profile, timeout_s=5))
    spec = BEHAVIOURS["fork_bomb"]
    assert cr.status in spec.expected, (cr.status, cr.reason)
    assert any(w in cr.reason for w in spec.reason_has), cr.reason
    assert spec.check(probes(cr.stdout_head)) == [], cr.stdout_head  # EAGAIN from fork()
    assert "fork failed after" in cr.stderr_head
    children = int(cr.stderr_head.split("fork failed after ")[1].split()[0])
    assert children < 64  # the pids limit stopped it (the poller usually also names it in the reason)


def test_flood_of_stdout_is_bounded(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "stdout_flood", profile)
    assert cr.status == expected("stdout_flood"), cr.reason  # 30 s: time enough for 256 MiB
    assert cr.stdout_bytes > 256 * 1024**2
    assert cr.stdout_head.startswith("FIRST LINE") and cr.stdout_tail.endswith("LAST LINE\n")
    assert len(cr.stdout_head) <= 64 * 1024 and len(cr.stdout_tail) <= 64 * 1024
    assert "bytes of stdout cut" in cr.log_text("stdout")


def test_3d_case_and_no_leftovers(docker_client, test_images, case_files, tmp_path, profile):
    cr = _run(docker_client, test_images, case_files, tmp_path, "correct", profile, case="3DBox_CT_0000")
    assert sb.check_output(cr, expected_shape=(8, 32, 32)) is not None
    # nothing left by any sandbox test of this process (other test processes run containers of their own meanwhile)
    mine = [c for c in segarena_containers(docker_client) if c["Labels"].get(sb.LABEL_WORKER) == sb.worker_identity()]
    assert [c for c in mine if c["Labels"]["segarena.run"].startswith("test-")] == []


def test_load_image_checks_id(docker_client, test_images, tmp_path):
    from tests.worker_helpers import save_archive

    archive = save_archive(docker_client, test_images["exit0_no_output"], tmp_path / "img.tar")
    image, loaded = sb.load_image(docker_client, archive, expected_id=test_images["exit0_no_output"])
    assert image.id == test_images["exit0_no_output"] and loaded is False  # already present: not reloaded
    with pytest.raises(sb.ImageLoadError, match="not the uploaded image"):
        sb.load_image(docker_client, archive, expected_id="sha256:" + "0" * 64)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar")
    with pytest.raises(sb.ImageLoadError, match="does not load"):
        sb.load_image(docker_client, bad, expected_id="sha256:" + "1" * 64)


def test_cgroup_parents_of_dead_workers_are_removed():
    import socket
    import subprocess

    from tests.conftest import require

    require(sb.CgroupMeter.usable_parent("x") is not None,
            "a writable cgroup v1 memory controller (as root; the sandbox polls instead without one)")
    p = subprocess.Popen(["true"])
    p.wait()
    dead = sb.CgroupMeter.ROOT / "memory" / f"segarena-{socket.gethostname()}-{p.pid}"
    alive = sb.CgroupMeter.ROOT / "memory" / f"segarena-{socket.gethostname()}-{__import__('os').getpid()}"
    dead.mkdir()
    alive.mkdir(exist_ok=True)
    try:
        assert dead.name in sb.cleanup_cgroup_parents()
        assert not dead.exists() and alive.exists()
    finally:
        for d in (dead, alive):
            if d.exists():
                d.rmdir()


def test_flooding_the_outputs_dir_is_stopped(docker_client, test_images, case_files, tmp_path, profile):
    """outputs/ is the one writable host directory: an image writing 2 GiB there is stopped before it can.

    The limit is enforced by a watcher polling 10 times a second, so a fast writer may overshoot it by
    its write bandwidth x 0.1 s; what is asserted is that it was stopped with the reason, long before 2 GiB."""
    capped = dataclasses.replace(profile, max_output_bytes=8 * 1024**2)
    cr = _run(docker_client, test_images, case_files, tmp_path, "outflood", capped)
    assert cr.status == expected("outflood"), (cr.status, cr.reason)
    assert "wrote more than 8 MiB to outputs/" in cr.reason
    written = sum(p.stat().st_size for p in (tmp_path / "outflood" / "outputs").iterdir())
    assert written < 1024**3, written


def test_peak_memory_is_not_inflated_by_an_earlier_case(docker_client, test_images, case_files, tmp_path, profile):
    """cgroup v1 charges a removed container's page cache to the parent; the next case must not see it."""
    if profile.cgroup_parent is None:  # pragma: no cover - the polling fallback measures the container itself
        from tests.conftest import require

        require(False, "a writable cgroup v1 memory controller")
    for i in range(3):  # each leaves up to its memory limit of page cache behind
        flood = _run(docker_client, test_images, case_files, tmp_path / str(i), "outflood",
                     dataclasses.replace(profile, max_output_bytes=1024**3))
        assert flood.status == expected("outflood")
    after = _run(docker_client, test_images, case_files, tmp_path, "correct", profile)
    assert after.status == expected("correct")
    assert after.peak_memory_bytes and after.peak_memory_bytes < profile.memory_bytes, after.peak_memory_bytes
