"""The ONE table of SegArena's test submission behaviours (issue 15).

Every test image is built from one build context and one Dockerfile, tests/images/behaviour/, with the behaviour
chosen at build time (``--build-arg BEHAVIOUR=<name>``; the scripts: tests/images/behaviour/scripts/<name>.py).
This table names each behaviour: what it does, the case status(es) the platform must record for it, the words the
recorded reason must contain, the probe values that prove containment, how it is built (user, build-time step) and
what the image was called before the two families of test images merged (``was``).

Read by tests/worker_helpers.py (:func:`~tests.worker_helpers.build_test_image`), tests/resilience_helpers.py (the
hostile suite runs every behaviour with ``resilience=True``), the sandbox, zero-trust and resilience tests and the
benchmarks. A test that checks a verdict takes the expected one from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BEHAVIOURS", "RESILIENCE_KINDS", "Behaviour", "build_args", "expected", "probes"]


def probes(*texts: str) -> dict[str, str]:
    """The ``PROBE key=value`` lines of the given log texts (the last value of a key wins)."""
    found: dict[str, str] = {}
    for text in texts:
        for line in (text or "").splitlines():
            if line.startswith("PROBE ") and "=" in line:
                key, _, value = line[6:].partition("=")
                found[key.strip()] = value.strip()
    return found


def _probe_check(**want: Callable[[str], bool]) -> Callable[[dict[str, str]], list[str]]:
    def check(found: dict[str, str]) -> list[str]:
        problems = []
        for key, ok in want.items():
            if key not in found:
                problems.append(f"probe {key} not printed")
            elif not ok(found[key]):
                problems.append(f"probe {key}={found[key]!r} is not the contained value")
        return problems

    return check


def _eq(value: str) -> Callable[[str], bool]:
    return lambda v: v == value


def _in(*values: str) -> Callable[[str], bool]:
    return lambda v: v in values


Family = Literal["model", "misbehaviour", "interactive"]


@dataclass(frozen=True)
class Behaviour:
    """One behaviour of the test image: how it is built and what must be observed when it runs."""

    name: str
    what: str
    expected: tuple[str, ...]  # acceptable CaseStatus values; the first is the one reported (and the one a case
    # gets with the sandbox tests' generous limits); () for the interactive models (judged per iteration)
    reason_has: tuple[str, ...] = ()  # words the recorded reason must contain (any of them)
    check: Callable[[dict[str, str]], list[str]] | None = None  # probe values proving containment -> problems
    family: Family = "misbehaviour"
    resilience: bool = False  # run by the hostile suite (tests/resilience, bench/resilience.py)
    run_as: str = "root"  # the image's USER (root, like most participants' images, unless the behaviour is the user)
    setup: bool = False  # has a build-time step (tests/images/behaviour/scripts/setup.sh, target "setup")
    was: tuple[str, ...] = ()  # the images it replaces: tests/images/<name>, tests/images/hostile/<name>


def _b(name: str, what: str, expected: tuple[str, ...], **kw) -> Behaviour:
    return Behaviour(name, what, expected, **kw)


_R = {"resilience": True}
BEHAVIOURS: dict[str, Behaviour] = {b.name: b for b in [
    # --- models: behave (controls, benchmark workloads)
    _b("correct", "prints how it runs (uid, ro/rw, files seen), writes a box-fill prediction", ("ok",),
       family="model", was=("images/correct", "hostile/well_behaved")),
    _b("slow", "a correct prediction after 2 s per case", ("ok",), family="model",
       was=("images/slow", "hostile/slow_ok")),
    _b("noop", "predict.sh exits at once, no python, no output (platform overhead reference)", ("no_output",),
       reason_has=("no output",), family="model", was=("images/noop",)),
    _b("cpuburn", "a fixed single-threaded integer loop, then a correct prediction (CPU cap benchmark)", ("ok",),
       family="model", was=("images/cpuburn",)),
    _b("exec", "follows the input's name: *_SLEEP_* sleep_forever, *_CRASH_* crash, *_NONE_* exit0_no_output, "
       "else correct", ("ok", "timeout", "crash", "no_output"), family="model", was=("images/exec",)),
    # --- misbehaviours
    _b("memory_bomb", "allocates until stopped", ("oom",), reason_has=("memory",), resilience=True,
       was=("images/memory", "hostile/memory_bomb")),
    _b("fork_bomb", "forks until the pids limit, then hangs", ("timeout", "crash"),
       check=_probe_check(fork_refused_errno=_eq("11")), reason_has=("time limit", "process limit"), **_R,
       was=("images/forkbomb", "hostile/fork_bomb")),
    _b("busy_loop", "spins past the case timeout", ("timeout",), reason_has=("time limit",), **_R,
       was=("hostile/busy_loop",)),
    _b("sleep_forever", "sleeps past the case timeout", ("timeout",), reason_has=("time limit",), **_R,
       was=("images/sleep", "hostile/sleep_forever")),
    _b("sigterm_ignorer", "ignores SIGTERM and sleeps", ("timeout",), reason_has=("time limit",), **_R,
       was=("hostile/sigterm_ignorer",)),
    _b("crash", "raises (exit 1)", ("crash",), reason_has=("exited with code 1",), **_R,
       was=("images/crash", "hostile/crash")),
    _b("segfault", "dies of SIGSEGV", ("crash",), reason_has=("exited with code 139",), **_R,
       was=("hostile/segfault",)),
    _b("exit0_no_output", "exits 0, writes nothing", ("no_output",), reason_has=("no output",), **_R,
       was=("images/nothing", "hostile/exit0_no_output")),
    _b("wrong_shape", "segs one voxel too large on each side", ("invalid_output",), reason_has=("shape",), **_R,
       was=("images/wrongshape", "hostile/wrong_shape")),
    _b("wrong_dtype", "segs as fractional float64", ("invalid_output",), reason_has=("dtype", "integer", "float"),
       **_R, was=("hostile/wrong_dtype",)),
    _b("wrong_key", "key 'seg' instead of 'segs'", ("invalid_output",), reason_has=("segs",), **_R,
       was=("hostile/wrong_key",)),
    _b("pickle_npz", "pickled object array (host command payload)", ("invalid_output",),
       reason_has=("pickle", "object"), **_R, was=("images/pickle", "hostile/pickle_npz")),
    _b("zip_bomb", "1 MiB npz inflating to 1 GiB", ("invalid_output",),
       reason_has=("large", "bytes", "GiB", "MiB", "size"), setup=True, **_R, was=("hostile/zip_bomb",)),
    _b("symlink_output", "output is a symlink to /etc/shadow", ("invalid_output", "no_output"),
       reason_has=("regular file", "symlink", "link"), **_R, was=("hostile/symlink_output",)),
    # a loaded machine may not pump 256 MiB within the resilience track's 5 s (the sandbox tests allow 30 s: ok)
    _b("stdout_flood", "256 MiB on stdout between a first and a last line, then a correct output", ("ok", "timeout"),
       reason_has=("time limit",), **_R, was=("images/stdout", "hostile/stdout_flood")),
    _b("outflood", "writes 2 GiB into outputs/ unless stopped", ("invalid_output",),
       reason_has=("to outputs/",), was=("images/outflood",)),
    _b("readonly_root", "writes to the image's root file system", ("ok",),
       check=_probe_check(write_errno_owned_probe=_eq("30"), write_errno_etc_probe=_in("30", "13"),
                          write_errno_workspace_probe=_in("30", "13")), setup=True, **_R,
       was=("hostile/readonly_root",)),
    _b("fill_tmp", "fills /tmp until refused", ("ok",), check=_probe_check(tmp_errno=_in("28", "30")), **_R,
       was=("hostile/fill_tmp",)),
    _b("network", "lists interfaces, connects to a host 127.0.0.1 listener, serves itself on localhost, then a "
       "correct output", ("ok",),
       check=_probe_check(ifaces=_eq("lo"), connect_host_listener=lambda v: v != "ok", own_loopback=_eq("ok")), **_R,
       was=("images/network", "hostile/network")),
    _b("docker_socket", "looks for /var/run/docker.sock", ("ok",),
       check=_probe_check(**{"exists_var_run_docker.sock": _eq("False"), "exists_run_docker.sock": _eq("False"),
                             "connect_var_run_docker.sock": lambda v: v != "ok"}), **_R,
       was=("hostile/docker_socket",)),
    _b("setuid", "runs a setuid-root binary, tries setuid(0)", ("ok",),
       check=_probe_check(suid_euid=lambda v: v != "0", setuid0=_eq("1"), cap_eff=_eq("0000000000000000"),
                          no_new_privs=_eq("1")), setup=True, **_R, was=("hostile/setuid",)),
    _b("proc_snoop", "lists /proc for other containers' processes", ("ok",),
       check=_probe_check(proc_pids=lambda v: v.isdigit() and int(v) <= 6,
                          proc_cmds=lambda v: not any(s in v for s in ("dockerd", "containerd", "postgres", "redis",
                                                                       "pytest"))), **_R,
       was=("hostile/proc_snoop",)),
    _b("background_procs", "leaves a daemonized child behind", ("ok",), check=_probe_check(orphan=_eq("spawned")),
       **_R, was=("hostile/background_procs",)),
    _b("peek_inputs", "looks for other cases and ground truth", ("ok",),
       check=_probe_check(inputs=_eq("1"), input_keys=lambda v: "gts" not in v.split(","), gts_dirs=_eq("0")),
       **_R, was=("hostile/peek_inputs",)),
    _b("root_user", "image runs as root on a track that forbids it", ("ok",), check=_probe_check(uid=_eq("1000")),
       **_R, was=("hostile/root_user",)),
    _b("root_uid00", "USER 00 (uid 0 spelled differently) on a track that forbids root", ("ok",),
       check=_probe_check(uid=_eq("1000"), gid=_eq("1000")), run_as="00", **_R, was=("hostile/root_uid00",)),
    _b("root_alias", "USER toor, a passwd alias of uid 0, on a track that forbids root", ("ok",),
       check=_probe_check(uid=_eq("1000"), gid=_eq("1000")), run_as="toor", setup=True, **_R,
       was=("hostile/root_alias",)),
    _b("passwd_user", "a named non-root user (app = 1234:1235 in its /etc/passwd): kept", ("ok",),
       check=_probe_check(uid=_eq("1234"), gid=_eq("1235")), run_as="app", setup=True, **_R,
       was=("hostile/passwd_user",)),
    _b("many_files", "a correct output, then 20,004 files in outputs/", ("invalid_output",),
       reason_has=("files in outputs/",), **_R, was=("hostile/many_files",)),
    _b("huge_reason", "an output .npz of 40,000 long-named members, no 'segs'", ("invalid_output",),
       reason_has=("segs",), **_R, was=("hostile/huge_reason",)),
    _b("sparse_output", "a correct output and a sparse 101 GiB file, then exits", ("invalid_output",),
       reason_has=("apparent",), **_R, was=("hostile/sparse_output",)),
    # --- interactive models (tests/images/behaviour/scripts/click.py; judged per iteration by the interactive tests)
    _b("click-refine", "box fill, then each click fixes the clicked voxel", (), family="interactive",
       was=("images/click-refine",)),
    _b("click-ignore", "box fill at every iteration (ignores the clicks)", (), family="interactive",
       was=("images/click-ignore",)),
    _b("click-silent3", "like click-refine, writes nothing at iteration 3", (), family="interactive",
       was=("images/click-silent3",)),
    _b("click-slow", "like click-refine, sleeps 30 s from iteration 1 on", (), family="interactive",
       was=("images/click-slow",)),
    _b("click-float", "like click-refine, segs as float32", (), family="interactive", was=("images/click-float",)),
]}

#: the behaviours the hostile suite runs (tests/resilience, tests/worker/test_worker_zero_trust.py, bench/resilience.py)
RESILIENCE_KINDS: tuple[str, ...] = tuple(name for name, b in BEHAVIOURS.items() if b.resilience)


def expected(name: str) -> str:
    """The status a case of ``name`` is recorded with (the table's first expected status)."""
    return BEHAVIOURS[name].expected[0]


def build_args(name: str, **extra: object) -> dict[str, str]:
    """The Dockerfile's build args for behaviour ``name`` (plus ``extra``: DELAY_S, LISTENER_PORT)."""
    b = BEHAVIOURS[name]
    return {"BEHAVIOUR": name, "RUN_AS": b.run_as, **{k: str(v) for k, v in extra.items()}}


def build_target(name: str) -> str:
    """The Dockerfile target for behaviour ``name``: "setup" when it has a build-time step, else "plain"."""
    return "setup" if BEHAVIOURS[name].setup else "plain"
