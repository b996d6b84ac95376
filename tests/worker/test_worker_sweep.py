"""Periodic housekeeping of an execution host (worker/housekeeping.py) against the real Docker engine: a
container this worker leaked (its shard is no longer being executed) is removed by the next sweep, while the
container of the shard it is running now, another live worker's containers and another deployment's are left
alone; containers of dead worker processes of this host are removed periodically too, not only at start."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from tests.waiting import wait_until

from worker import sandbox as sb
from worker.config import WorkerConfig
from worker.housekeeping import LABEL_SHARD, Sweeper, sweep_leaked


class _Executor:
    """What the sweeper reads of a ShardExecutor: config, identity, the docker client, the current shard."""

    def __init__(self, config, docker, current=None) -> None:
        self.config, self._docker, self.identity, self.current = config, docker, sb.worker_identity(), current

    def docker(self):
        return self._docker

    def current_shard(self):
        return self.current


@pytest.fixture
def config(tmp_path):
    return WorkerConfig(api_url="http://127.0.0.1:9", worker_token="wk_x", broker_url="redis://127.0.0.1:9/0",
                        cache_dir=tmp_path / "cache", deployment_id=f"test-sweep-{os.urandom(4).hex()}")


class _Made:
    """A test container by id (the low-level API: a running sweeper may remove it between create and any inspect)."""

    def __init__(self, docker_client, container_id: str):
        self.client, self.id = docker_client, container_id

    def start(self) -> None:
        import docker

        try:
            self.client.api.start(self.id)
        except docker.errors.NotFound:
            pass  # swept already
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: being removed by the sweeper
                raise

    def remove(self, force: bool = False) -> None:
        self.client.api.remove_container(self.id, force=force)


def _container(docker_client, base_image, *, owner: str, shard: int, deployment: str, start: bool = True):
    labels = {sb.LABEL_RUN: "1", sb.LABEL_CASE: "c", LABEL_SHARD: str(shard), sb.LABEL_WORKER: owner,
              sb.LABEL_DEPLOYMENT: deployment}
    created = docker_client.api.create_container(base_image, ["sleep", "120"], labels=labels,
                                                 host_config=docker_client.api.create_host_config(network_mode="none"))
    c = _Made(docker_client, created["Id"])
    if start:
        c.start()
    return c


def _ids(docker_client, deployment: str) -> set[str]:
    return {c["Id"] for c in docker_client.api.containers(all=True, filters={"label": f"{sb.LABEL_DEPLOYMENT}={deployment}"})}


def test_a_leaked_container_is_swept_and_the_current_shards_is_kept(docker_client, base_image, config):
    me = sb.worker_identity()
    dep = config.deployment_id
    alive = subprocess.Popen(["sleep", "120"])
    made = []
    try:
        leaked = _container(docker_client, base_image, owner=me, shard=5, deployment=dep)
        created_only = _container(docker_client, base_image, owner=me, shard=6, deployment=dep, start=False)
        current = _container(docker_client, base_image, owner=me, shard=7, deployment=dep)
        other_worker = _container(docker_client, base_image, owner=f"{socket.gethostname()}:{alive.pid}", shard=5,
                                  deployment=dep)
        other_dep = _container(docker_client, base_image, owner=me, shard=5, deployment="another-deployment")
        made = [leaked, created_only, current, other_worker, other_dep]
        removed = sweep_leaked(docker_client, me, lambda: 7)
        # this worker's containers of shards it is not running, in any deployment (the identity is this process)
        assert set(removed) == {leaked.id, created_only.id, other_dep.id}
        left = _ids(docker_client, dep)
        assert current.id in left and other_worker.id in left and leaked.id not in left
        # idle (no shard running): the current shard's container is a leak too
        assert sweep_leaked(docker_client, me, lambda: None) == [current.id]
    finally:
        alive.kill()
        alive.wait()
        for c in made:
            try:
                c.remove(force=True)
            except Exception:
                pass


def test_the_sweeper_thread_removes_leaks_and_dead_workers_containers_periodically(docker_client, base_image, config):
    dead = subprocess.Popen(["true"])
    dead.wait()
    dep = config.deployment_id
    ex = _Executor(config, docker_client, current=11)
    made = []
    with Sweeper(ex, interval_s=0.2) as sweeper:
        try:
            time.sleep(0.3)  # the point: the sweeper's first pass is over; these are found by a later one
            kept = _container(docker_client, base_image, owner=ex.identity, shard=11, deployment=dep)
            leaked = _container(docker_client, base_image, owner=ex.identity, shard=10, deployment=dep)
            orphan = _container(docker_client, base_image, owner=f"{socket.gethostname()}:{dead.pid}", shard=3,
                                deployment=dep)
            made = [kept, leaked, orphan]
            wait_until(lambda: not {leaked.id, orphan.id} & _ids(docker_client, dep), 30,
                       "the periodic sweep to remove the leaked and the orphaned container", interval=0.1)
            left = _ids(docker_client, dep)
            assert kept.id in left  # the shard being executed
            assert {leaked.id, orphan.id} <= set(sweeper.removed)
        finally:
            for c in made:
                try:
                    c.remove(force=True)
                except Exception:
                    pass


def test_the_sweep_interval_is_a_setting(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGARENA_SWEEP_INTERVAL_S", "7.5")
    cfg = WorkerConfig(api_url="http://127.0.0.1:9", worker_token="wk_x", broker_url="redis://127.0.0.1:9/0",
                       cache_dir=tmp_path / "cache")
    assert cfg.sweep_interval_s == 7.5
