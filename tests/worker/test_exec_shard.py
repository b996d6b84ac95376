"""Executing shards (worker/shard.py) with the real sandbox and Docker against a real local HTTP server
implementing the worker routes (tests.exec_helpers.FakeWorkerAPI)."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import numpy as np
import pytest

from tests.api_helpers import image_id_of, make_image_tar
from tests.exec_helpers import (clean_env, exec_image, fake_api, image_spec, make_client,  # noqa: F401
                                remove_image, worker_config, write_case)
from tests.waiting import wait_until
from worker import sandbox as sb
from worker.shard import LABEL_SHARD, ShardExecutor, make_meta


@pytest.fixture
def executor(worker_config, make_client, docker_client):
    ex = ShardExecutor(worker_config, make_client(worker_config))
    yield ex
    leftover = docker_client.api.containers(all=True, filters={"label": [f"{sb.LABEL_WORKER}={ex.identity}",
                                                                         f"{sb.LABEL_DEPLOYMENT}={ex.deployment}"]})
    for c in leftover:
        docker_client.api.remove_container(c["Id"], force=True)
    assert not leftover, "the executor left containers behind"


def _shard(fake_api, exec_image, tmp_path, case_ids, **kw) -> int:
    fake_api.add_image(exec_image["path"], exec_image["sha256"])
    cases = [(cid, write_case(tmp_path / "inputs", cid, seed=i)) for i, cid in enumerate(case_ids)]
    return fake_api.add_shard(image=image_spec(exec_image), cases=cases, **kw)


def _shard_containers(docker_client, executor, shard_id: int, *, running: bool = False) -> list:
    """This executor's containers of ``shard_id`` (its deployment label is unique to this test's API)."""
    labels = [f"{LABEL_SHARD}={shard_id}", f"{sb.LABEL_DEPLOYMENT}={executor.deployment}",
              f"{sb.LABEL_WORKER}={executor.identity}"]
    return docker_client.api.containers(all=not running, filters={"label": labels})


def test_a_shard_runs_every_case_uploads_and_finishes(worker_config, fake_api, executor, exec_image, docker_client,
                                                       tmp_path):
    remove_image(docker_client, exec_image["image_id"])  # the shard downloads and loads it
    # heartbeats every 0.2 s: the four containers take about a second in all (0.2-0.3 s each)
    sid = _shard(fake_api, exec_image, tmp_path, ["2DBox_US_0001", "2DBox_CRASH_0002", "2DBox_NONE_0003",
                                                  "2DBox_US_0004"], heartbeat_s=0.2)
    report = executor.run_next("cpu")
    assert report.outcome == "done" and report.shard_id == sid, report
    assert executor.cache.downloads == 1 and executor.cache.loads == 1
    ups = {u["case_id"]: u for u in fake_api.uploads_of(sid)}
    assert {k: v["meta"]["status"] for k, v in ups.items()} == {
        "2DBox_US_0001": "ok", "2DBox_CRASH_0002": "crash", "2DBox_NONE_0003": "no_output", "2DBox_US_0004": "ok"}
    for cid in ("2DBox_US_0001", "2DBox_US_0004"):
        up = ups[cid]
        assert up["output_name"] == f"{cid}.npz"
        segs = np.load(io.BytesIO(up["output"]), allow_pickle=False)["segs"]
        assert segs.shape == (32, 40) and set(np.unique(segs)) == {0, 1, 2}
        meta = up["meta"]
        assert meta["lease"] == fake_api.shards[sid].spec["lease"] and meta["exit_code"] == 0
        assert 0 < meta["runtime_s"] <= meta["wall_s"]
        assert "uid=1000 rootfs=ro inputs=ro" in meta["stdout_tail"]
        assert meta["container_params"]["network_mode"] == "none"
        assert meta["container_params"]["labels"][LABEL_SHARD] == str(sid)
        assert meta["container_params"]["mem_limit"] == 512 * 1024**2  # from the spec's caps
    assert ups["2DBox_CRASH_0002"]["output"] is None and "exited with code 1" in ups["2DBox_CRASH_0002"]["meta"]["reason"]
    assert "model weights not found" in ups["2DBox_CRASH_0002"]["meta"]["stderr_tail"]
    assert ups["2DBox_NONE_0003"]["output"] is None
    assert fake_api.shards[sid].finished == [{"lease": fake_api.shards[sid].spec["lease"], "outcome": "done",
                                              "reason": ""}]
    assert fake_api.shards[sid].heartbeats, "no heartbeat while the containers ran"
    assert list(worker_config.work_dir.iterdir()) == []  # every case's files were deleted
    assert not _shard_containers(docker_client, executor, sid)
    # the next claim finds nothing: a no-op
    assert executor.run_next("cpu").outcome == "none"


@pytest.mark.parametrize("how", ["cancel", "lease_lost"])
def test_heartbeat_cancel_or_lost_lease_kills_the_container_within_5_s(how, worker_config, fake_api, executor,
                                                                      exec_image, docker_client, tmp_path):
    sid = _shard(fake_api, exec_image, tmp_path, ["2DBox_US_0001", "2DBox_SLEEP_0002", "2DBox_US_0003"],
                 heartbeat_s=1.0)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(report=executor.run_next("cpu")))
    thread.start()
    wait_until(lambda: any(c["Labels"].get(sb.LABEL_CASE) == "2DBox_SLEEP_0002"
                           for c in _shard_containers(docker_client, executor, sid, running=True)), 60,
               "the shard's second case (it sleeps an hour unless stopped) to run")
    time.sleep(0.5)  # the point: it is well into its sleep when the API says stop
    t0 = time.monotonic()
    if how == "cancel":
        fake_api.shards[sid].cancel = True
    else:
        fake_api.shards[sid].lost = True  # the reaper requeued it: heartbeats and uploads answer 409
    wait_until(lambda: not _shard_containers(docker_client, executor, sid, running=True), 10,
               "the shard's container to stop", interval=0.05)
    stop_s = time.monotonic() - t0
    thread.join(timeout=30)
    report = result["report"]
    print(f"{how}: container stopped {stop_s:.2f} s after the API said so (heartbeat every 1 s)")
    assert stop_s <= 5.0
    assert report.outcome == ("cancelled" if how == "cancel" else "lost")
    assert [u["case_id"] for u in fake_api.uploads_of(sid)] == ["2DBox_US_0001"]  # nothing for the killed case
    assert fake_api.shards[sid].finished == []  # the API already moved the shard on
    assert not _shard_containers(docker_client, executor, sid)
    assert list(worker_config.work_dir.iterdir()) == []


def test_an_input_digest_mismatch_hands_the_shard_back(worker_config, fake_api, executor, exec_image, tmp_path):
    sid = _shard(fake_api, exec_image, tmp_path, ["2DBox_US_0001", "2DBox_US_0002"])
    fake_api.shards[sid].spec["cases"][1]["sha256"] = "f" * 64
    report = executor.run_next("cpu")
    assert report.outcome == "infra" and "sha256" in report.reason
    [finish] = fake_api.shards[sid].finished
    assert finish["outcome"] == "infra" and "2DBox_US_0002" in finish["reason"] and "sha256" in finish["reason"]
    assert fake_api.shards[sid].state == "queued"  # requeued by the API
    assert [u["case_id"] for u in fake_api.uploads_of(sid)] == ["2DBox_US_0001"]
    assert list(worker_config.work_dir.iterdir()) == []


def test_an_unreachable_engine_hands_the_shard_back(worker_config, fake_api, make_client, exec_image, tmp_path):
    worker_config.docker_host = f"unix://{tmp_path}/no-engine.sock"
    ex = ShardExecutor(worker_config, make_client(worker_config))
    sid = _shard(fake_api, exec_image, tmp_path, ["2DBox_US_0001"])
    report = ex.run_next("cpu")
    assert report.outcome == "infra" and "Docker engine is unreachable" in report.reason
    assert fake_api.shards[sid].finished[0]["outcome"] == "infra"
    assert fake_api.uploads_of(sid) == []


def test_an_image_that_does_not_load_fails_its_cases_not_the_host(worker_config, fake_api, executor, tmp_path):
    """The archive's digest is right but it loads as another image: the participant's problem (each case
    crashes with the reason), not an infrastructure error that would requeue the shard forever."""
    data = make_image_tar(tag=None, salt="not-the-announced-one")
    path = tmp_path / "img.tar"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    fake_api.add_image(path, sha)
    cases = [(cid, write_case(tmp_path / "inputs", cid)) for cid in ("2DBox_US_0001", "2DBox_US_0002")]
    sid = fake_api.add_shard(image={"sha256": sha, "bytes": len(data), "image_id": "sha256:" + "1" * 64,
                                    "url": f"/api/worker/images/{sha}"}, cases=cases)
    try:
        report = executor.run_next("cpu")
    finally:
        remove_image(executor.docker(), image_id_of(data))
    assert report.outcome == "done"
    ups = fake_api.uploads_of(sid)
    assert [u["meta"]["status"] for u in ups] == ["crash", "crash"]
    assert "the image does not load" in ups[0]["meta"]["reason"] and ups[0]["output"] is None


def test_meta_fits_the_api_bound_whatever_the_logs():
    run = sb.CaseRun(status="crash", reason="r" * 10_000, stdout_head="é" * 64 * 1024, stdout_tail="ü" * 64 * 1024,
                     stdout_bytes=10**9, stderr_head="x" * 64 * 1024, stderr_tail="y" * 64 * 1024, stderr_bytes=10**9)
    import json

    meta = make_meta(run, lease="l" * 32, wall_s=1.0, log_chars=64 * 1024, max_bytes=100 * 1024)
    assert len(json.dumps(meta, ensure_ascii=False).encode()) <= 100 * 1024
    assert meta["stdout_tail"].startswith("é") and meta["stdout_tail"].endswith("ü")  # head and tail kept
    assert len(meta["reason"]) < 2100
