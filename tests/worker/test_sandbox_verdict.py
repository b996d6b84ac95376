"""The sandbox's exit verdict (worker/sandbox/verdict.py) as a pure function: no Docker, no files.

Each row is one way a container can end, with the status and the reason the participant is shown. The
same verdicts are reached end to end against a real engine by tests/test_worker_sandbox.py (one test image
per misbehaviour); here every branch and the precedence between them is pinned down cheaply."""

from __future__ import annotations

import pytest

from worker.sandbox import ExitFacts, SandboxProfile, Verdict, exit_verdict

PROFILE = SandboxProfile(memory_bytes=256 * 1024**2, timeout_s=5.0, pids_limit=64, max_output_bytes=1024**2)
NAME = "case_001.npz"
LIMIT = "output limit: 40 files in outputs/ (limit 16)"

ROWS = [
    # what happened -> status, exact reason
    (ExitFacts(exit_code=0, output_kind="file", output_size=100), "ok", ""),
    (ExitFacts(exit_code=0, output_kind="file", output_size=1024**2), "ok", ""),  # exactly at the bound
    (ExitFacts(exit_code=0, output_kind="file", output_size=1024**2 + 1), "invalid_output",
     "outputs/case_001.npz is larger than 1 MiB"),
    (ExitFacts(exit_code=0, output_kind="other"), "invalid_output", "outputs/case_001.npz is not a regular file"),
    (ExitFacts(exit_code=0), "no_output", "no output file outputs/case_001.npz (the output directory is empty)"),
    (ExitFacts(exit_code=0, output_listing=("case_001.nii.gz", "x")), "no_output",
     "no output file outputs/case_001.npz (found: case_001.nii.gz, x)"),
    (ExitFacts(exit_code=3, output_kind="file", output_size=10), "crash", "predict.sh exited with code 3; see its stderr"),
    (ExitFacts(exit_code=137), "crash", "predict.sh exited with code 137 (killed); see its stderr"),
    (ExitFacts(exit_code=137, pids_hit=True), "crash",
     "predict.sh exited with code 137; it reached the process limit (64 processes); see its stderr"),
    (ExitFacts(exit_code=1, pids_hit=True), "crash",
     "predict.sh exited with code 1; it reached the process limit (64 processes); see its stderr"),
    (ExitFacts(exit_code=None), "crash", "predict.sh exited with code None; see its stderr"),
    (ExitFacts(exit_code=137, oom_killed=True), "oom", "memory limit exceeded (256 MiB): the container was stopped"),
    (ExitFacts(exit_code=0, oom_killed=True, output_kind="file", output_size=1), "oom",
     "memory limit exceeded (256 MiB): the container was stopped"),  # a child OOM-killed, the script went on
    (ExitFacts(exit_code=137, timed_out=True), "timeout", "time limit exceeded (5 s): the container was stopped"),
    (ExitFacts(exit_code=137, timed_out=True, oom_killed=True), "timeout",
     "time limit exceeded (5 s): the container was stopped"),
    (ExitFacts(exit_code=137, output_limit=LIMIT, output_limit_killed=True, timed_out=True, oom_killed=True),
     "invalid_output", LIMIT + ": the container was stopped; write only outputs/<case name>.npz"),
    (ExitFacts(exit_code=0, output_limit=LIMIT, output_kind="file", output_size=10), "invalid_output",
     LIMIT + ": found when it exited; write only outputs/<case name>.npz"),
]


@pytest.mark.parametrize("facts, status, reason", ROWS)
def test_exit_verdict(facts: ExitFacts, status: str, reason: str) -> None:
    verdict = exit_verdict(facts, PROFILE, NAME)
    assert verdict == Verdict(status, reason)
    assert verdict.ok is (status == "ok")


def test_the_verdict_names_the_profiles_own_limits() -> None:
    profile = SandboxProfile(memory_bytes=3 * 1024**3 // 2, timeout_s=0.5, pids_limit=7, max_output_bytes=5000)
    assert exit_verdict(ExitFacts(exit_code=137, timed_out=True), profile, NAME).reason.startswith(
        "time limit exceeded (0.5 s)")
    assert "(1.5 GiB)" in exit_verdict(ExitFacts(exit_code=137, oom_killed=True), profile, NAME).reason
    assert "(7 processes)" in exit_verdict(ExitFacts(exit_code=1, pids_hit=True), profile, NAME).reason
    assert exit_verdict(ExitFacts(exit_code=0, output_kind="file", output_size=5001), profile, NAME).reason == (
        "outputs/case_001.npz is larger than 4.9 KiB")


def test_the_verdict_is_pure() -> None:
    facts = ExitFacts(exit_code=0, output_listing=("a",))
    assert exit_verdict(facts, PROFILE, NAME) == exit_verdict(facts, PROFILE, NAME)
    assert facts == ExitFacts(exit_code=0, output_listing=("a",))  # frozen, untouched


def test_an_unknown_output_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="output_kind must be one of missing, file, other"):
        ExitFacts(exit_code=0, output_kind="symlink")
