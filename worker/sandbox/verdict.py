"""The exit verdict: how what a case container did becomes a case status and a reason.

A pure function of plain facts (no Docker, no filesystem, no clock): :func:`exit_verdict` takes an
:class:`ExitFacts` (gathered by :func:`worker.sandbox.container.run_case` from the engine, the cgroup
meter, the output watch and one ``lstat`` of the prediction) and the case's
:class:`~worker.sandbox.profile.SandboxProfile`, and returns a :class:`Verdict`.

Precedence, first match wins (one container can break several rules; the participant is told the one
that stopped it or, when nothing stopped it, the first thing wrong):

1. ``invalid_output`` — outputs/ exceeded its bounds (bytes, apparent size, entries), whether the watch
   stopped the container or found it after the exit;
2. ``timeout`` — the per-case time limit ran out and the container was stopped;
3. ``oom`` — the engine reports OOMKilled, or the cgroup counted an OOM kill;
4. ``crash`` — a non-zero exit code (with the process limit named when it was reached, "killed" for 137);
5. ``no_output`` — exit 0 and no ``outputs/<case name>`` (the first names found are listed);
6. ``invalid_output`` — the prediction is not a regular file, or is larger than the output bound;
7. ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .profile import SandboxProfile, human_bytes

__all__ = ["ExitFacts", "Verdict", "exit_verdict", "OUTPUT_KINDS"]

#: what :attr:`ExitFacts.output_kind` may be
OUTPUT_KINDS = ("missing", "file", "other")


@dataclass(frozen=True)
class ExitFacts:
    """What was observed of one case container once it exited."""

    exit_code: int | None
    timed_out: bool = False
    oom_killed: bool = False  # the engine's OOMKilled or an OOM kill counted in the cgroup
    pids_hit: bool = False  # the container reached its process limit
    output_limit: str = ""  # the output watch's reason when outputs/ exceeded a bound, else ""
    output_limit_killed: bool = False  # the watch stopped the container (else: found after the exit)
    output_kind: str = "missing"  # of outputs/<case name>: missing, file (regular) or other
    output_size: int = 0  # bytes of the prediction file when output_kind == "file"
    output_listing: tuple[str, ...] = ()  # first names found in outputs/ (for a missing prediction)

    def __post_init__(self) -> None:
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, not {self.output_kind!r}")


@dataclass(frozen=True)
class Verdict:
    """A case status (a CaseStatus value) and the reason shown to the participant ('' when ok)."""

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def exit_verdict(facts: ExitFacts, profile: SandboxProfile, case_name: str) -> Verdict:
    """The status and reason of a case whose prediction is expected at ``outputs/<case_name>``."""
    if facts.output_limit:
        how = "the container was stopped" if facts.output_limit_killed else "found when it exited"
        return Verdict("invalid_output", f"{facts.output_limit}: {how}; write only outputs/<case name>.npz")
    if facts.timed_out:
        return Verdict("timeout", f"time limit exceeded ({profile.timeout_s:g} s): the container was stopped")
    if facts.oom_killed:
        return Verdict("oom", f"memory limit exceeded ({profile.memory_text}): the container was stopped")
    if facts.exit_code != 0:
        why = f"predict.sh exited with code {facts.exit_code}"
        if facts.pids_hit:
            why += f"; it reached the process limit ({profile.pids_limit} processes)"
        elif facts.exit_code == 137:
            why += " (killed)"
        return Verdict("crash", why + "; see its stderr")
    if facts.output_kind == "missing":
        found = (f" (found: {', '.join(facts.output_listing)})" if facts.output_listing
                 else " (the output directory is empty)")
        return Verdict("no_output", f"no output file outputs/{case_name}{found}")
    if facts.output_kind != "file":
        return Verdict("invalid_output", f"outputs/{case_name} is not a regular file")
    if facts.output_size > profile.max_output_bytes:
        return Verdict("invalid_output",
                       f"outputs/{case_name} is larger than {human_bytes(profile.max_output_bytes)}")
    return Verdict("ok")
