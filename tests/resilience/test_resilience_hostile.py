"""Issue 9, hostile images: the misbehaving behaviours of tests/behaviours.py (``resilience=True``, their expected
verdicts from that table) run through the real execution path (the sharded path: the real API app, the
execution host ``worker.shard.ShardExecutor`` on a real Docker engine, the trusted scorer inline, a real SQLite
database; tests/run_helpers.py). Each must be
contained and reported: the recorded case status and reason are the expected ones, the probes the
image prints prove the containment, no container, scratch file or process is left behind, and a
well-behaved submission of another team run right after it scores exactly as it did before.

All kinds run once per module (a 2-case test set, 256 MiB, 64 pids, 32 MiB /tmp, 5 s per case);
the per-kind tests assert on what was recorded, and the report table is printed at the end.
"""

from __future__ import annotations

import re

import pytest
from tests.behaviours import BEHAVIOURS, RESILIENCE_KINDS
from tests.resilience_helpers import (
    HOSTILE_TRACK, PICKLE_MARKER, files_under, format_table, hostile_row, print_report, run_hostile_suite,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TRACK = HOSTILE_TRACK
CASE_TIMEOUT_S = TRACK["case_timeout_s"]
NEW_KINDS = ["root_uid00", "root_alias", "passwd_user", "many_files", "sparse_output", "huge_reason"]  # issue 13
LIMIT = 2000  # the default SEGARENA_REASON_MAX_CHARS


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def hostile_run(hostile_dir, docker_client, base_image, request):
    """Run every hostile kind, each followed by team B's well-behaved control; returns kind -> Observed."""
    from api.db import dispose_engines

    try:
        results = run_hostile_suite(docker_client, base_image, hostile_dir, track=TRACK)
        yield results
        rows = [hostile_row(kind, results[kind]) for kind in RESILIENCE_KINDS]
        print_report(request, format_table(rows, title="resilience: hostile images (through the real worker)"))
    finally:
        dispose_engines()


@pytest.mark.parametrize("kind", RESILIENCE_KINDS)
def test_hostile_image_is_contained_and_reported(hostile_run, kind):
    spec, obs = BEHAVIOURS[kind], hostile_run[kind]
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
    """256 MiB on stdout: the recorded log is head + tail (kilobytes), with a note of what was cut."""
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


# ------------------------------------------------------------------------------------------------
# issue 13 (zero trust in participants): the kinds it added, checked on the same run of every kind


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_new_hostile_kind_is_contained(hostile_run, kind):
    spec, obs = BEHAVIOURS[kind], hostile_run[kind]
    assert not obs.error, obs.error
    assert obs.case_rows == 2 and obs.sent == [], (obs.cases, obs.sent)
    for case in obs.cases:
        assert case["status"] in spec.expected, (case["status"], case["reason"][:500])
        if case["status"] != "ok":
            assert any(w in case["reason"] for w in spec.reason_has), case["reason"][:500]
        assert len(case["reason"]) <= LIMIT + 40
    if spec.check is not None:
        for found in obs.probe_values():
            assert spec.check(found) == [], found
    assert obs.leftover_containers == [] and obs.leftover_scratch == []
    assert obs.control_state == "succeeded"


@pytest.mark.parametrize("kind", ["root_uid00", "root_alias"])
def test_root_spelled_otherwise_runs_as_non_zero_uid(hostile_run, kind):
    """USER 00 and USER toor (toor:x:0:0) are uid 0: the container gets the explicit numeric 1000:1000."""
    obs = hostile_run[kind]
    assert obs.user == "1000:1000"
    assert [p.get("uid") for p in obs.probe_values()] == ["1000", "1000"]


def test_named_non_root_user_is_kept_as_its_numbers(hostile_run):
    obs = hostile_run["passwd_user"]
    assert obs.user == "1234:1235"  # resolved from the image's /etc/passwd, passed numerically
    assert [(p.get("uid"), p.get("gid")) for p in obs.probe_values()] == [("1234", "1235")] * 2


def test_file_flood_is_stopped_at_the_file_limit(hostile_run):
    for case in hostile_run["many_files"].cases:
        assert case["reason"].startswith(f"case {case['case']}: output limit: "), case["reason"]
        count = int(case["reason"].split("output limit: ")[1].split(" files")[0].replace("more than ", ""))
        assert count > 16 and "files in outputs/ (limit 16)" in case["reason"]
        assert "PROBE written=" not in case["stdout"]  # stopped before it wrote them all


def test_sparse_file_is_caught_after_exit(hostile_run):
    for case in hostile_run["sparse_output"].cases:
        assert re.search(r"output limit: 101(\.0)? GiB apparent \(sparse\) size in outputs/ \(limit 2 GiB\)",
                         case["reason"]), case["reason"]


def test_huge_reason_is_bounded(hostile_run):
    obs = hostile_run["huge_reason"]
    for case in obs.cases:
        assert "and 39990 more" in case["reason"] or "chars cut" in case["reason"], case["reason"][-300:]
        assert len(case["reason"]) <= LIMIT + 40
    assert obs.sub_reason.startswith("every case failed") and len(obs.sub_reason) <= LIMIT + 40


def test_outputs_are_deleted_once_scored(hostile_run, hostile_dir):
    """20,004 files, a 101 GiB sparse file, 23 MB of zip members, every correct output: none stays."""
    storage = hostile_dir / "data" / "storage"  # run_hostile_suite's data dir
    assert files_under(storage / "runs") == []
    assert not (storage / "runs").exists() or list((storage / "runs").iterdir()) == []
