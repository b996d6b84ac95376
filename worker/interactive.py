"""Prompted and interactive cases on an execution host (docs/interactive.md, execution section).

:func:`run_case` replaces a plain ``sandbox.run_case`` call in :mod:`worker.shard` for every case; by the shard
spec (docs/worker-protocol.md) it

- builds the input the prompt mode asks for (``prompt: point | box+point``: the manifest's points from the spec in
  the input npz, ``boxes`` removed for ``point``; ``evaluator.interactive`` builds it, the same builder everywhere);
- measures the runtime as the track's ``timing`` says (``docker_run``: the whole create + start + wait + remove
  span around the sandbox call, as the 2024 script timed ``docker run --rm``);
- on interactive tracks runs the container once per iteration, each in a fresh sandbox with the same caps and
  audit labels: iteration 0 with the first prompt, then K refinements. After each iteration the output goes to the
  trusted side (``POST …/cases/{case}/iterations/{i}``), which validates and scores it against the ground truth
  this host never sees and answers the clicks of the next iteration; the next input is the image, the prompts so
  far, every click so far (the reference's ``clicks`` / ``clicks_order``) and ``prev_pred``, the last prediction
  the trusted side accepted as valid. A container gets at most the case's remaining time budget (classes x
  ``class_budget_s``, summed over iterations) as its time limit; when the budget runs out the case stops and keeps
  its last valid prediction (marked on the trusted side).

The worker still judges nothing: validity comes from the trusted side's answers.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from . import sandbox as sb

__all__ = ["run_case", "create_ahead", "InteractiveOutcome", "timed_run", "prompted_input"]

log = logging.getLogger(__name__)

_BUDGET_FLOOR_S = 0.5  # less budget than this left: the next iteration is not started


@dataclass
class InteractiveOutcome:
    """What an interactive case did on this host (sent in the case upload's meta as ``interactive``)."""

    iterations_run: int = 0
    budget_exceeded: bool = False
    valid: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    runtimes: list[float] = field(default_factory=list)
    platform_s: list[float] = field(default_factory=list)  # per iteration: wall time minus container runtime
    prepare_s: list[float] = field(default_factory=list)  # per iteration: building its input npz
    sandbox_s: list[float] = field(default_factory=list)  # per iteration: the sandbox call minus container runtime
    round_trip_s: list[float] = field(default_factory=list)  # per iteration: the POST …/iterations/{i} call

    def to_meta(self) -> dict[str, Any]:
        return {"iterations_run": self.iterations_run, "budget_exceeded": self.budget_exceeded,
                "valid": list(self.valid), "statuses": list(self.statuses),
                "runtimes_s": [round(r, 6) for r in self.runtimes],
                "platform_s": [round(p, 6) for p in self.platform_s],
                "prepare_s": [round(p, 6) for p in self.prepare_s], "sandbox_s": [round(p, 6) for p in self.sandbox_s],
                "round_trip_s": [round(p, 6) for p in self.round_trip_s]}


def timed_run(docker: Any, *, timing: str, **kwargs: Any) -> sb.CaseRun:
    """``sandbox.run_case`` with the track's timing: ``docker_run`` replaces the runtime by the whole span of the
    call (create, start, wait, inspect, remove: what ``docker run --rm`` took in the 2024 script)."""
    if timing == "docker_run":  # the whole docker run --rm span: created and removed inside the call
        prepared = kwargs.pop("prepared", None)
        if prepared is not None:
            prepared.discard()
        t0 = time.monotonic()
        case_run = sb.run_case(docker, **kwargs)
        case_run.runtime_s = time.monotonic() - t0
        return case_run
    # timing "container" (start to exit): removal goes to the background remover, off the case's critical path
    return sb.run_case(docker, remove="async", **kwargs)


def prompted_input(original: Path, dest: Path, *, iteration: int, prompt: str, points: Any = None,
                   clicks: Any = None, prev_pred: Any = None) -> Path:
    """Write the input npz a container gets at ``iteration`` (``dest``, named like the case) from the case's
    original input (``evaluator.interactive.iteration_inputs``: the reference's keys and conventions)."""
    import numpy as np

    from evaluator.interactive import iteration_inputs, write_iteration_npz

    with np.load(original, allow_pickle=False) as data:  # the test set's own input (trusted)
        arrays = iteration_inputs(dict(data), iteration=iteration, prompt=prompt, clicks=clicks, prev_pred=prev_pred,
                                  points=points)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_iteration_npz(dest, arrays)  # the one writer: numpy 1.x containers load it, members stored
    return dest


def create_ahead(docker: Any, *, spec: dict[str, Any], case: dict[str, Any], work: Path, profile: sb.SandboxProfile,
                 labels: dict[str, str], run_user: Any, image_id: str) -> _Ahead:
    """Start creating the case's first container (on a thread, e.g. while its input downloads: the input directory
    is bind-mounted empty and filled when the case runs) with the out_dir and labels :func:`run_case` will use;
    give the result to ``run_case(ahead=...)`` and call ``discard()`` afterwards (a no-op once it was used)."""
    ahead = _Ahead()
    case_labels = {**labels, sb.LABEL_CASE: str(case["id"])}
    out_dir = work / "outputs"
    if spec.get("interactive"):
        out_dir, case_labels = work / "it0" / "outputs", {**case_labels, "segarena.iteration": "0"}
    ahead.start(docker, more=True, timing=str(spec.get("timing") or "container"), image_id=image_id, out_dir=out_dir,
                profile=profile, labels=case_labels, scratch_dir=work, run_user=run_user)
    return ahead


def run_case(executor: Any, *, spec: dict[str, Any], case: dict[str, Any], input_file: Path, work: Path,
             profile: sb.SandboxProfile, labels: dict[str, str], run_user: Any, image_id: str,
             stopped: Callable[[], bool], ahead: _Ahead | None = None) -> tuple[sb.CaseRun, InteractiveOutcome | None]:
    """Run one case as the spec says (prompt mode, timing, interactive or not); the CaseRun to report (for an
    interactive case: the last iteration's, with the total runtime) and the interactive outcome (None otherwise).
    ``ahead``: :func:`create_ahead`'s container for the case (used when it matches exactly)."""
    prompt = str(spec.get("prompt") or "box")
    timing = str(spec.get("timing") or "container")
    docker = executor.docker()
    first = input_file  # prompt box: the case's input file exactly as stored (as the reference copies it)
    if prompt != "box":
        first = prompted_input(input_file, work / "prompted" / input_file.name, iteration=0, prompt=prompt,
                               points=case.get("points"))
    inter = spec.get("interactive")
    if not inter:
        return timed_run(docker, timing=timing, image_id=image_id, input_file=first, out_dir=work / "outputs",
                         profile=profile, labels={**labels, sb.LABEL_CASE: str(case["id"])}, scratch_dir=work,
                         run_user=run_user, prepared=ahead.take() if ahead is not None else None), None
    return _interactive(executor, docker, spec=spec, case=case, original=input_file, first=first, work=work,
                        profile=profile, ahead=ahead,
                        labels=labels, run_user=run_user, image_id=image_id, timing=timing, prompt=prompt,
                        stopped=stopped)


class _Ahead:
    """The next iteration's container, created (:func:`worker.sandbox.prepare_container`: the same parameters as an
    on-demand create) on a thread while this iteration's output is uploaded and scored; removed when not used."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._prepared: sb.PreparedContainer | None = None

    def start(self, docker: Any, *, more: bool, timing: str, **kwargs: Any) -> None:
        """Create the next iteration's container (``more``: there is one) unless the track times ``docker_run``
        (create and remove inside the timed span, as the reference) or the user is not resolved yet."""
        if not more or timing == "docker_run" or kwargs.get("run_user") is None:
            return

        def create() -> None:
            try:
                self._prepared = sb.prepare_container(docker, **kwargs)
            except Exception as exc:  # the on-demand create of the iteration meets (and reports) it again
                log.debug("creating the next iteration's container ahead failed: %s", exc)

        self._thread = threading.Thread(target=create, name="iteration-ahead", daemon=True)
        self._thread.start()

    def take(self) -> sb.PreparedContainer | None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        prepared, self._prepared = self._prepared, None
        return prepared

    def discard(self) -> None:
        prepared = self.take()
        if prepared is not None:
            prepared.discard()


def _interactive(executor: Any, docker: Any, *, ahead: _Ahead | None = None,
                 **kwargs: Any) -> tuple[sb.CaseRun, InteractiveOutcome]:
    ahead = ahead or _Ahead()  # the shard's container for iteration 0, made while the input downloaded
    try:
        return _iterations(executor, docker, ahead=ahead, **kwargs)
    finally:
        ahead.discard()  # stopped, cancelled, done early or out of budget: the container made ahead is removed


def _iterations(executor: Any, docker: Any, *, spec: dict[str, Any], case: dict[str, Any], original: Path,
                first: Path, work: Path, profile: sb.SandboxProfile, labels: dict[str, str], run_user: Any,
                image_id: str, timing: str, prompt: str, stopped: Callable[[], bool],
                ahead: _Ahead) -> tuple[sb.CaseRun, InteractiveOutcome]:
    from evaluator.io import load_prediction

    from .client import InfraError, LeaseLost
    from .shard import _Stop

    inter = spec["interactive"]
    k = int(inter.get("iterations") or 0)
    budget = float(inter.get("class_budget_s") or 90.0) * max(1, int(case.get("classes") or 1))
    shard_id, lease, case_id = int(spec["shard_id"]), str(spec["lease"]), str(case["id"])
    outcome = InteractiveOutcome()
    spent = 0.0
    total_runtime = 0.0
    last: sb.CaseRun | None = None
    first_params: dict[str, Any] | None = None
    prev_pred_file: Path | None = None  # the last output the trusted side accepted
    prompts: dict[str, Any] | None = None  # the trusted side's answer: every click so far
    name = original.name
    for i in range(k + 1):
        if stopped():
            raise _Stop()
        t_iter = time.monotonic()
        remaining = budget - spent
        if remaining < _BUDGET_FLOOR_S:
            outcome.budget_exceeded = True
            break
        it_dir = work / f"it{i}"
        if i == 0:
            model_input = first
        else:
            # the last output the trusted side accepted, read under the run's profile (cvpr24/cvpr25 accept float and
            # negative segs: prev_pred is then their .astype(np.uint8), as the reference)
            prev = (load_prediction(prev_pred_file, expected_shape=tuple(case["shape"]),
                                    profile=str(spec.get("metric_profile") or "default"))
                    if prev_pred_file is not None else None)
            model_input = prompted_input(original, it_dir / "in" / name, iteration=i, prompt=prompt,
                                         points=case.get("points"), clicks=prompts, prev_pred=prev)
        t_run = time.monotonic()
        by_budget = remaining < profile.timeout_s
        it_profile = sb.with_overrides(profile, timeout_s=min(profile.timeout_s, remaining))
        case_run = timed_run(docker, timing=timing, image_id=image_id, input_file=model_input,
                             out_dir=it_dir / "outputs", profile=it_profile,
                             labels={**labels, sb.LABEL_CASE: case_id, "segarena.iteration": str(i)},
                             scratch_dir=work, run_user=run_user, prepared=ahead.take())
        t_ran = time.monotonic()
        if stopped():
            raise _Stop()
        ahead.start(docker, more=i < k, timing=timing, image_id=image_id, out_dir=work / f"it{i + 1}" / "outputs",
                    profile=profile, labels={**labels, sb.LABEL_CASE: case_id, "segarena.iteration": str(i + 1)},
                    scratch_dir=work, run_user=run_user)
        first_params = first_params or case_run.container_params
        over = case_run.status == "timeout" and by_budget
        spent += case_run.runtime_s
        total_runtime += case_run.runtime_s
        meta = {"lease": lease, "status": case_run.status, "reason": case_run.reason[:2000],
                "runtime_s": round(float(case_run.runtime_s), 6), "budget_exceeded": over}
        output = case_run.output_path if case_run.status == "ok" else None
        t_upload = time.monotonic()
        try:
            answer = executor.client.upload_iteration(shard_id, case_id, i, meta, output)
        except LeaseLost as exc:
            if exc.code != "lease_lost":  # a 409 about the case (out of order, already done): start the shard again
                raise InfraError(f"case {case_id} iteration {i}: {exc}") from exc
            raise _Stop() from None
        t_answer = time.monotonic()
        outcome.iterations_run = i + 1
        outcome.statuses.append(str(answer.get("status") or case_run.status))
        outcome.runtimes.append(float(case_run.runtime_s))
        if answer.get("cancel"):
            raise _Stop()
        if answer.get("valid") and output is not None:
            keep = work / f"valid-{i}.npz"
            shutil.move(str(output), keep)
            if prev_pred_file is not None:
                prev_pred_file.unlink(missing_ok=True)
            prev_pred_file = keep
            outcome.valid.append(i)
        shutil.rmtree(it_dir, ignore_errors=True)
        last = case_run
        outcome.platform_s.append(max(0.0, (time.monotonic() - t_iter) - case_run.runtime_s))
        outcome.prepare_s.append(t_run - t_iter)
        outcome.sandbox_s.append(max(0.0, (t_ran - t_run) - case_run.runtime_s))
        outcome.round_trip_s.append(t_answer - t_upload)
        log.debug("case %s iteration %d: %s in %.3f s (upload %.3f s)", case_id, i, case_run.status,
                  case_run.runtime_s, time.monotonic() - t_upload)
        if answer.get("budget_exceeded"):
            outcome.budget_exceeded = True
        if answer.get("done"):
            break
        prompts = answer.get("next") or {}
    if prev_pred_file is not None:
        prev_pred_file.unlink(missing_ok=True)
    report = last or sb.CaseRun(status="timeout", reason="the case's time budget was used up before it started")
    report.runtime_s = total_runtime
    report.output_path = None
    if first_params:
        report.container_params = first_params
    return report, outcome
