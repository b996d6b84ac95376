"""Issue 9, hostile images: 24 misbehaving submission images run through the real worker
(``worker.runner.execute_run`` on a real Docker engine and a real SQLite database). Each must be
contained and reported: the recorded case status and reason are the expected ones, the probes the
image prints prove the containment, no container, scratch file or process is left behind, and a
well-behaved submission of another team run right after it scores exactly as it did before.

All kinds run once per module (a 2-case test set, 256 MiB, 64 pids, 32 MiB /tmp, 5 s per case);
the per-kind tests assert on what was recorded, and the report table is printed at the end.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import BASE_IMAGE
from tests.resilience_helpers import (
    HOSTILE_KINDS, ORPHAN_MARKER, PICKLE_MARKER, Listener, ReportRow, build_hostile_images, files_under,
    format_table, host_processes_with, print_report, probes, segarena_containers,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CASE_TIMEOUT_S = 5
TRACK = dict(memory_mb=256, cpus=1.0, case_timeout_s=CASE_TIMEOUT_S, total_timeout_s=600, pids_limit=64, tmpfs_mb=32,
             allow_root=False)


@dataclass
class Observed:
    kind: str
    run_state: str = ""
    sub_state: str = ""
    sub_reason: str = ""
    cases: list[dict] = field(default_factory=list)
    case_rows: int = 0
    cases_total: int = 0
    sent: list = field(default_factory=list)
    leftover_containers: list = field(default_factory=list)
    leftover_scratch: list = field(default_factory=list)
    orphans: list = field(default_factory=list)
    control_state: str = ""
    control_dsc: float | None = None
    error: str = ""
    seconds: float = 0.0

    @property
    def statuses(self) -> list[str]:
        return [c["status"] for c in self.cases]

    def probe_values(self) -> list[dict[str, str]]:
        return [probes(c["stdout"], c["stderr"]) for c in self.cases]


class Sent(list):
    """Stands in for the Celery sender: infrastructure retries are recorded, never expected here."""

    def __call__(self, run_id, queue, countdown):
        self.append((run_id, queue, countdown))


def _run_one(settings, client, *, track_id: int, team: str, image_id: str, archive: Path) -> tuple[int, int, Sent]:
    from api.db import session_scope
    from api.models import Track
    from tests.worker_helpers import seed_submission
    from worker.runner import execute_run

    with session_scope(settings.database_url) as s:
        sub, run = seed_submission(s, track=s.get(Track, track_id), team_name=team, image_id=image_id, archive=archive)
        sub_id, run_id = sub.id, run.id
    sent = Sent()
    execute_run(run_id, settings, client=client, sender=sent)
    return sub_id, run_id, sent


def _observe(settings, sub_id: int, run_id: int, obs: Observed) -> None:
    from api.db import session_scope
    from api.models import CaseResult, Run, Submission

    with session_scope(settings.database_url) as s:
        run, sub = s.get(Run, run_id), s.get(Submission, sub_id)
        obs.run_state, obs.sub_state, obs.sub_reason = run.state.value, sub.state.value, sub.reason
        obs.cases_total = run.cases_total
        rows = s.execute(select(CaseResult).where(CaseResult.run_id == run_id).order_by(CaseResult.id)).scalars().all()
        obs.case_rows = s.execute(select(func.count()).select_from(CaseResult)
                                  .where(CaseResult.run_id == run_id)).scalar_one()
        obs.cases = [dict(case=c.case_id, status=c.status.value, reason=c.reason, stdout=c.stdout_tail,
                          stderr=c.stderr_tail, exit_code=c.exit_code, runtime_s=c.runtime_s) for c in rows]
        obs.user = (run.container_params or {}).get("user")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, docker_client, base_image, request):
    """Run every hostile kind, each followed by team B's well-behaved control; returns kind -> Observed."""
    from api.db import dispose_engines, migrate, session_scope
    from api.settings import Settings
    from tests.worker_helpers import make_testset, seed_track
    from worker import sandbox as sb

    tmp = tmp_path_factory.mktemp("hostile")
    data = tmp / "data"
    settings = Settings(data_dir=data, database_url=f"sqlite:///{data / 'segarena.db'}",
                        broker_url=f"sqla+sqlite:///{data / 'broker.db'}", storage_dir=data / "storage",
                        base_image=base_image, heartbeat_timeout_s=60, max_attempts=3)
    settings.ensure_dirs()
    migrate(settings.database_url)
    testset = make_testset(tmp / "testset", n2d=1, n3d=1)
    archive = tmp / "image.tar"
    archive.write_bytes(b"placeholder: the hostile images are already on the engine")
    listener = Listener()
    PICKLE_MARKER.unlink(missing_ok=True)
    try:
        tags = build_hostile_images(docker_client, base_image, listener_port=listener.port)
        ids = {kind: docker_client.images.get(tag).id for kind, tag in tags.items()}
        with session_scope(settings.database_url) as s:
            track_id = seed_track(s, testset=str(testset), slug="hostile", **TRACK).id
        dep = sb.deployment_id(settings)
        scratch = settings.storage_dir / "scratch"

        def control(obs: Observed | None) -> tuple[str, float | None]:
            sub_id, run_id, _ = _run_one(settings, docker_client, track_id=track_id, team="team-b-control",
                                         image_id=ids["well_behaved"], archive=archive)
            ctl = Observed("control")
            _observe(settings, sub_id, run_id, ctl)
            from api.db import session_scope as scope
            from api.models import Submission

            with scope(settings.database_url) as s:
                return ctl.sub_state, s.get(Submission, sub_id).dsc

        reference = control(None)
        results: dict[str, Observed] = {"__reference__": Observed("control", control_state=reference[0],
                                                                  control_dsc=reference[1])}
        for kind in HOSTILE_KINDS:
            obs = Observed(kind)
            started = time.monotonic()
            try:
                sub_id, run_id, sent = _run_one(settings, docker_client, track_id=track_id, team=f"team-a-{kind}",
                                                image_id=ids[kind], archive=archive)
                obs.sent = list(sent)
                _observe(settings, sub_id, run_id, obs)
            except Exception as exc:  # noqa: BLE001 - recorded, asserted by the kind's test
                obs.error = f"{exc.__class__.__name__}: {exc}"
            obs.seconds = time.monotonic() - started
            obs.leftover_containers = [c["Id"][:12] for c in segarena_containers(docker_client, f"{sb.LABEL_DEPLOYMENT}={dep}")]
            obs.leftover_scratch = [str(p) for p in files_under(scratch)]
            obs.orphans = host_processes_with(ORPHAN_MARKER)
            obs.control_state, obs.control_dsc = control(obs)
            results[kind] = obs
        results["__listener__"] = Observed("listener", case_rows=listener.accepted)
        results["__pickle__"] = Observed("pickle", error="marker exists" if PICKLE_MARKER.exists() else "")
        yield results
        rows = [_row(kind, results[kind]) for kind in HOSTILE_KINDS]
        print_report(request, format_table(rows, title="resilience: hostile images (through the real worker)"))
    finally:
        listener.close()
        dispose_engines()


def _row(kind: str, obs: Observed) -> ReportRow:
    spec = HOSTILE_KINDS[kind]
    observed = ",".join(sorted(set(obs.statuses))) or obs.error or obs.sub_state
    lost = 0 if obs.sub_state in ("succeeded", "failed") and obs.case_rows == obs.cases_total else 1
    reason = next((c["reason"] for c in obs.cases if c["reason"]), "")
    return ReportRow(kind=kind, expected="|".join(spec.expected), observed=observed, lost=lost,
                     duplicated=max(0, obs.case_rows - obs.cases_total), note=reason[:90] or spec.what)


@pytest.mark.parametrize("kind", list(HOSTILE_KINDS))
def test_hostile_image_is_contained_and_reported(hostile_run, kind):
    spec, obs = HOSTILE_KINDS[kind], hostile_run[kind]
    assert not obs.error, obs.error
    # reported: a final state, one result per case, the expected status and a reason saying why
    assert obs.sub_state in ("succeeded", "failed") and obs.run_state == obs.sub_state, (obs.sub_state, obs.sub_reason)
    assert obs.cases_total == 2 and obs.case_rows == 2, obs.cases
    assert obs.sent == [], f"a participant's misbehaviour was retried as an infrastructure failure: {obs.sent}"
    for case in obs.cases:
        assert case["status"] in spec.expected, (case["status"], case["reason"])
        if case["status"] != "ok":
            assert case["reason"].startswith(f"case {case['case']}: "), case["reason"]
            assert any(w.lower() in case["reason"].lower() for w in spec.reason_has), case["reason"]
            assert case["runtime_s"] == CASE_TIMEOUT_S  # a failed case is charged the time limit
    if all(s != "ok" for s in obs.statuses):
        assert obs.sub_state == "failed" and obs.sub_reason.startswith("every case failed"), obs.sub_reason
    # contained: the probes (printed by the image itself) show the attempt failed
    if spec.check is not None:
        for found in obs.probe_values():
            assert spec.check(found) == [], (spec.check(found), found)
    # nothing left behind, and another team's run right after is unaffected
    assert obs.leftover_containers == []
    assert obs.leftover_scratch == []
    assert obs.orphans == [], f"host processes left by {kind}: {obs.orphans}"
    reference = hostile_run["__reference__"]
    assert reference.control_state == "succeeded" and reference.control_dsc and reference.control_dsc > 0.5
    assert obs.control_state == "succeeded" and obs.control_dsc == pytest.approx(reference.control_dsc, abs=1e-12)


def test_flood_keeps_only_a_bounded_log(hostile_run):
    """1 GiB on stdout: the recorded log is head + tail (kilobytes), with a note of what was cut."""
    obs = hostile_run["stdout_flood"]
    for case in obs.cases:
        assert len(case["stdout"]) < 256 * 1024
        if case["status"] == "ok":
            assert "bytes of stdout cut" in case["stdout"], case["stdout"][-300:]


def test_network_listener_on_host_loopback_was_never_reached(hostile_run):
    assert hostile_run["__listener__"].case_rows == 0


def test_pickled_payload_never_ran_on_the_host(hostile_run):
    assert hostile_run["__pickle__"].error == "", f"{PICKLE_MARKER} exists: the worker unpickled a submission's output"


def test_root_image_ran_as_the_fixed_non_root_user(hostile_run):
    assert getattr(hostile_run["root_user"], "user", None) == "1000:1000"
    for found in hostile_run["root_user"].probe_values():
        assert found.get("uid") == "1000"


def test_fork_bomb_was_stopped_by_the_pids_limit(hostile_run):
    for found in hostile_run["fork_bomb"].probe_values():
        assert found.get("fork_refused_errno") == "11"  # EAGAIN
        assert int(found.get("forked", "9999")) < TRACK["pids_limit"]


def test_fill_tmp_stopped_at_the_tmpfs_cap(hostile_run):
    for found in hostile_run["fill_tmp"].probe_values():
        assert int(found["tmp_bytes"]) <= TRACK["tmpfs_mb"] * 1024**2
