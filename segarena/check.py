"""``segarena check``: the pre-flight a participant runs before submitting.

The image runs exactly as the judges run it — the worker's sandbox (:func:`worker.sandbox.run_case`)
with the track's caps (fetched from the server, or the defaults offline): no network, read-only root,
non-root where the track forbids root, memory/CPU/pids limits, per-case time limit — on a few public
sample cases (the built-in ``tiny`` synthetic set, 2D and 3D). Each interface mistake is reported with
its fix; each case shows the runtime it would be charged (wall time including container start-up).

Interactive tracks (track kind ``interactive``, or ``--interactive``) and point prompts (``--prompt``): the
iteration loop runs locally as the platform runs it (docs/interactive.md) — iteration 0 with the first prompt,
then K refinement iterations, each a fresh sandboxed container given the clicks that
:mod:`evaluator.interactive` simulates from the public sample's ground truth, the previous valid prediction as
``prev_pred``, and the class time budget — so a participant pre-flights an interactive image before submitting.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console
from rich.table import Table

from segarena.client import CliError, cache_dir, load_config
from segarena.output import SafeConsole

__all__ = ["run_check", "diagnose", "Finding", "pick_cases", "DEFAULT_TRACK"]

# the defaults of a track (api.models.Track), used offline
DEFAULT_TRACK = dict(cpus=1.0, memory_mb=8192, gpus=0, case_timeout_s=60, pids_limit=256, tmpfs_mb=1024,
                     allow_root=False, metric_profile="default", kind="main", prompt="box", iterations=5,
                     class_budget_s=90.0)

NETWORK_PATTERNS = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"No address associated with hostname|Could not resolve host|getaddrinfo|nodename nor servname|"
    r"Failed to establish a new connection|Max retries exceeded with url|urlopen error|"
    r"Connection refused|ConnectionRefusedError|ConnectTimeout|Cannot connect to host|"
    r"huggingface_hub\.errors|LocalEntryNotFoundError|OfflineModeIsEnabled", re.I)
READONLY_PATTERNS = re.compile(r"Read-only file system|EROFS", re.I)
PERMISSION_PATTERNS = re.compile(r"Permission denied|EACCES|PermissionError", re.I)
MISSING_SCRIPT = re.compile(r"can't open file.*predict|predict\.sh: (No such file|not found)|"
                            r"Can't open predict\.sh|sh: 0: cannot open predict\.sh", re.I)


@dataclass
class Finding:
    """One problem found, with what to do about it."""

    problem: str
    fix: str
    cases: list[str] = field(default_factory=list)


@dataclass
class CaseCheck:
    case_id: str
    modality: str
    dim: int
    status: str
    reason: str
    runtime_s: float
    charged_s: float
    dsc: float | None = None
    nsd: float | None = None
    stderr_tail: str = ""
    # interactive: per iteration {iteration, status, valid, dsc, nsd, runtime_s}, the AUCs over the K clicks
    iterations: list[dict[str, Any]] = field(default_factory=list)
    dsc_auc: float | None = None
    nsd_auc: float | None = None


def _has(pattern: re.Pattern, *texts: str) -> bool:
    return any(pattern.search(t or "") for t in texts)


def diagnose(run: Any, *, case_name: str, dim: int, runs_as_nonroot: bool, image_is_root: bool,
             timeout_s: float, memory_text: str, out_dir: Path | None = None) -> list[tuple[str, str]]:
    """(problem, fix) pairs for one case run (a :class:`worker.sandbox.CaseRun` after check_output)."""
    logs = "\n".join([run.stderr_head or "", run.stderr_tail or "", run.stdout_tail or ""])
    found: list[tuple[str, str]] = []
    status, reason = run.status, run.reason or ""
    if _has(NETWORK_PATTERNS, logs):
        found.append(("it tried to use the network (containers run with no network at all)",
                      "put everything it needs (model weights, configs, packages) into the image at build time; "
                      "set HF_HUB_OFFLINE=1 / TRANSFORMERS_OFFLINE=1 if it uses Hugging Face libraries"))
    if _has(READONLY_PATTERNS, logs):
        found.append(("it wrote outside /workspace/outputs (the image's file system is read-only)",
                      "write predictions only to /workspace/outputs/ and scratch files only to /tmp "
                      "(a small tmpfs; HOME is /tmp); do not write next to predict.sh or into site-packages"))
    if _has(PERMISSION_PATTERNS, logs) and not _has(READONLY_PATTERNS, logs):
        if runs_as_nonroot and image_is_root:
            found.append(("'Permission denied': the image expects root, but this track runs it as uid 1000",
                          "make the image's files readable by everyone (RUN chmod -R a+rX /workspace) and do "
                          "not write outside /workspace/outputs and /tmp; or declare a user (USER 1000) and "
                          "test as that user"))
        else:
            found.append(("'Permission denied' inside the container",
                          "make the image's files readable by its user (chmod -R a+rX /workspace); write only to "
                          "/workspace/outputs and /tmp"))
    if _has(MISSING_SCRIPT, logs):
        found.append(("predict.sh was not found in the image's working directory",
                      "WORKDIR /workspace and COPY predict.sh /workspace/ in the Dockerfile; it is run as "
                      "/bin/sh -c \"sh predict.sh\""))
    if status == "timeout":
        found.append((f"it took longer than the time limit of {timeout_s:g} s per case",
                      "load the model once per container and keep start-up short (it counts towards the runtime); "
                      "use a smaller model, fewer threads' overhead, or a slimmer image"))
    elif status == "oom":
        found.append((f"it used more memory than the limit of {memory_text} and was stopped",
                      "process large volumes slice by slice or in tiles, free intermediate arrays, "
                      "and avoid loading several model copies"))
    elif status == "no_output":
        written = sorted(p.name for p in out_dir.iterdir()) if out_dir and out_dir.is_dir() else []
        m = re.search(r"\(found: ([^)]*)\)", reason)
        if m or written:
            names = m.group(1) if m else ", ".join(written[:5])
            found.append((f"wrong output file name: it wrote {names}, the judges read outputs/{case_name}",
                          "save each prediction under the input's own file name: "
                          "os.path.join('/workspace/outputs', os.path.basename(input_path))"))
        else:
            found.append((f"no output: outputs/{case_name} is missing (predict.sh finished without writing it)",
                          "for every file in /workspace/inputs/ write /workspace/outputs/<same name>.npz with "
                          "np.savez_compressed(path, segs=labels); check that predict.sh really runs your script"))
    elif status == "invalid_output":
        low = reason.lower()
        if "segs" in low and ("key" in low or "missing" in low or "no " in low):
            found.append(("the output has no 'segs' array",
                          "np.savez_compressed(out_path, segs=labels) — the key must be 'segs'"))
        elif "shape" in low:
            want = "(H, W) — no colour channel" if dim == 2 else "(D, H, W), the input's imgs shape"
            found.append((f"the output has the wrong shape ({reason.split(':', 1)[-1].strip()})",
                          f"segs must be a label map of the input's spatial shape {want}; label i answers box i"))
        else:
            found.append((f"the output cannot be used: {reason}",
                          "write an integer label map with np.savez_compressed(path, segs=labels.astype(np.uint8)); "
                          "no pickled objects, no float or boolean arrays"))
    elif status == "crash" and not found:
        found.append((reason or "predict.sh failed",
                      "read the stderr tail below; run the image locally with "
                      "docker run --rm --network none --read-only --tmpfs /tmp --user 1000:1000 "
                      "-v $PWD/inputs:/workspace/inputs:ro -v $PWD/outputs:/workspace/outputs IMAGE"))
    return found


def pick_cases(manifest: Any, n: int) -> list[Any]:
    """``n`` sample cases alternating 3D and 2D, each of another modality where possible."""
    three = [c for c in manifest.cases if c.dim == 3]
    two = [c for c in manifest.cases if c.dim == 2]
    picked: list[Any] = []
    seen: set[Any] = set()
    pools = [three, two]
    i = 0
    while len(picked) < n and (three or two):
        pool = pools[i % 2] or pools[(i + 1) % 2]
        choice = next((c for c in pool if c.modality not in seen), pool[0])
        pool.remove(choice)
        seen.add(choice.modality)
        picked.append(choice)
        i += 1
    return picked


def _track_caps(track: str, offline: bool, say) -> tuple[dict[str, Any], str]:
    if offline:
        return dict(DEFAULT_TRACK), "default caps (offline)"
    cfg = load_config()
    from segarena.client import SegArenaClient

    try:
        with SegArenaClient(cfg, timeout=15) as client:
            data = client.get(client.track_path(track))
    except CliError as exc:
        say(f"[yellow]could not read the caps of track '{track}' ({exc.message}); using the default caps[/]")
        return dict(DEFAULT_TRACK), "default caps (server unreachable)"
    caps = {k: data.get(k, v) for k, v in DEFAULT_TRACK.items()}
    return caps, f"track {cfg.challenge}/{track} at {cfg.url}"


def _load(docker_client, source: str, say) -> tuple[str, bool, Any]:
    """(image id, loaded by us, archive info) for an archive path or a local image reference."""
    import docker

    path = Path(source)
    if path.is_file():
        from api.submissions.archive import ArchiveError, inspect_file

        try:
            info = inspect_file(path)
        except ArchiveError as exc:
            raise CliError(f"{path} is not an image archive SegArena accepts: {exc}; create it with "
                           "docker save IMAGE | gzip > IMAGE.tar.gz") from None
        try:
            docker_client.images.get(info.image_id)
            present = True
        except docker.errors.ImageNotFound:
            present = False
        if not present:
            say(f"loading {path.name} into the Docker engine …")
            with open(path, "rb") as fh:
                try:
                    docker_client.images.load(fh)
                except docker.errors.APIError as exc:
                    raise CliError(f"docker could not load {path}: {exc.explanation or exc}") from None
        return info.image_id, not present, info
    if source.endswith((".tar", ".tar.gz", ".tgz")):
        raise CliError(f"{source}: no such file; give the path of your 'docker save' archive")
    try:
        image = docker_client.images.get(source)
    except docker.errors.ImageNotFound:
        raise CliError(f"{source} is neither an archive file nor a local image; build it or give the .tar.gz") from None
    return image.id, False, None


def sandbox_settings() -> SimpleNamespace:
    """The sandbox settings of this machine, from the same variables the execution host reads (no server, no
    database): SEGARENA_WORKER_CPUS, SEGARENA_WORKER_GPUS, SEGARENA_OUTPUT_MAX_BYTES, SEGARENA_OUTPUT_MAX_FILES,
    SEGARENA_DOCKER_HOST."""
    env = os.environ

    def number(name: str, default: int) -> int:
        try:
            return int(env.get(name, "") or default)
        except ValueError:
            raise CliError(f"{name} must be a whole number (got {env.get(name)!r})") from None

    return SimpleNamespace(worker_cpus=env.get("SEGARENA_WORKER_CPUS", ""), worker_gpus=env.get("SEGARENA_WORKER_GPUS", ""),
                           output_max_bytes=number("SEGARENA_OUTPUT_MAX_BYTES", 2 * 1024**3),
                           output_max_files=number("SEGARENA_OUTPUT_MAX_FILES", 16),
                           docker_host=env.get("SEGARENA_DOCKER_HOST") or None)


def run_check(source: str, *, track: str = "main", n_cases: int = 3, offline: bool = False, keep_image: bool = False,
              console: Console | None = None, interactive: bool = False, prompt: str | None = None,
              iterations: int | None = None, profile: str | None = None) -> int:
    """Run the pre-flight; 0 when every sample case passed, 1 otherwise. ``interactive``, ``prompt``,
    ``iterations``, ``profile`` override the track's settings (offline: the defaults)."""
    con = console or SafeConsole(highlight=False)  # container logs are the participant's: cleaned
    say = con.print
    from worker import sandbox as sb

    settings = sandbox_settings()
    caps, caps_from = _track_caps(track, offline, say)
    if prompt is not None and prompt not in ("box", "point", "box+point"):
        raise CliError(f"--prompt must be box, point or box+point (got {prompt!r})")
    if iterations is not None and not 1 <= iterations <= 50:
        raise CliError(f"--iterations must be 1..50 (got {iterations})")
    if profile is not None:
        from evaluator.profiles import get_profile

        try:
            get_profile(profile)
        except (KeyError, ValueError) as exc:
            raise CliError(f"--profile {profile!r}: {exc}; use default, cvpr24 or cvpr25") from None
    overrides = {"kind": "interactive" if interactive else None, "prompt": prompt, "iterations": iterations,
                 "metric_profile": profile}
    caps.update({k: v for k, v in overrides.items() if v is not None})
    try:
        docker_client = sb.get_docker_client(settings)
        docker_client.ping()
    except Exception as exc:
        raise CliError(f"the Docker engine is not reachable ({exc.__class__.__name__}); start Docker and retry") from None
    image_id, loaded_now, info = _load(docker_client, source, say)
    try:
        return _check_image(docker_client, sb, settings, image_id, info, caps, caps_from, n_cases, con)
    finally:
        if loaded_now and not keep_image:
            try:
                docker_client.images.remove(image_id, force=True)
            except Exception:
                pass


def _check_image(docker_client, sb, settings, image_id, info, caps, caps_from, n_cases, con) -> int:
    say = con.print
    from data_manifests import materialize

    profile = sb.SandboxProfile.from_track(SimpleNamespace(**caps), settings)
    attrs = docker_client.images.get(image_id).attrs
    image_is_root = sb.image_runs_as_root(attrs)
    runs_as_nonroot = image_is_root and not profile.allow_root
    size = attrs.get("Size") or 0
    say(f"[bold]image[/] {image_id[:19]}  {size / 2**30:.2f} GiB"
        + (f"  tag {info.image_tag}" if info and info.image_tag else ""))
    say(f"[bold]caps[/] {caps_from}: {profile.cpus:g} CPU, {profile.memory_text}, {profile.timeout_s:g} s per case, "
        f"{profile.pids_limit} processes, no network, read-only root"
        + (", runs as uid 1000" if runs_as_nonroot else ""))
    findings: dict[str, Finding] = {}

    def add(problem: str, fix: str, case: str | None = None) -> None:
        f = findings.setdefault(problem, Finding(problem, fix))
        if case:
            f.cases.append(case)

    if runs_as_nonroot:
        say("[yellow]note:[/] the image's user is root; this track forbids root, so it runs as uid 1000 "
            "(as the real runs will)")
    if info is not None and info.architecture not in {"amd64", "x86_64", ""}:
        add(f"the image is built for {info.architecture}", "build it for linux/amd64 (docker build --platform linux/amd64)")

    sample_root = cache_dir() / "samples"
    manifest, data_root = materialize("tiny", sample_root)
    cases = pick_cases(manifest, max(1, n_cases))
    rows: list[CaseCheck] = []
    metric = str(caps.get("metric_profile") or "default")
    prompt = str(caps.get("prompt") or "box")
    interactive = str(caps.get("kind") or "main") == "interactive"
    if interactive or prompt != "box":
        say(f"[bold]prompts[/] {prompt}" + (f", interactive: {int(caps.get('iterations') or 5)} refinement "
                                             f"iteration(s) after the first prompt, clicks simulated from the sample's "
                                             f"ground truth, {float(caps.get('class_budget_s') or 90):g} s per class"
                                             if interactive else "") + f"; scoring profile {metric}")
    for case in cases:
        one = _interactive_case if interactive else _single_case
        try:
            row = one(docker_client, sb, image_id, case, data_root, sandbox=profile, caps=caps,
                      image_is_root=image_is_root, runs_as_nonroot=runs_as_nonroot, add=add)
        except sb.SandboxInfraError as exc:
            raise CliError(f"the Docker engine failed while running {case.id}: {exc}") from None
        rows.append(row)
        say(_case_line(row))

    def num(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.3f}"

    cols: tuple[str, ...] = ("case", "modality", "status", "runtime (s)", "charged (s)", "DSC", "NSD")
    if interactive:
        cols = (*cols[:5], "Final DSC", "Final NSD", "DSC AUC", "NSD AUC")
    table = Table(*cols, box=None, title="sample cases (public synthetic set 'tiny')")
    for r in rows:
        extra = (num(r.dsc_auc), num(r.nsd_auc)) if interactive else ()
        table.add_row(r.case_id, r.modality, r.status, f"{r.runtime_s:.2f}", f"{r.charged_s:.2f}", num(r.dsc),
                      num(r.nsd), *extra)
    con.print(table)
    charged = [r.charged_s for r in rows]
    say(f"runtime charged per case: mean {sum(charged) / len(charged):.2f} s (wall time including container start-up; "
        f"a failed case is charged the limit, {profile.timeout_s:g} s)")
    if findings:
        say(f"[bold red]{len(findings)} problem(s) to fix before submitting:[/]")
        for f in findings.values():
            where = f" ({', '.join(f.cases)})" if f.cases else ""
            say(f"[red]✗[/] {f.problem}{where}\n    [bold]fix:[/] {f.fix}")
        for r in rows:
            if r.status != "ok" and r.stderr_tail:
                say(f"--- stderr of {r.case_id} (tail) ---", markup=False)
                say(r.stderr_tail, markup=False)
        return 1
    say("[bold green]✓ all sample cases passed: the image follows the interface and runs under the track's caps[/]")
    return 0


def _prompted_input(case: Any, data_root: Path, prompt: str, dest: Path) -> Path:
    """The input of a point-prompt track's single run (``evaluator.interactive.prompt_inputs`` via
    ``iteration_inputs``: the manifest's points as ``points`` and a first ``fg`` click per class)."""
    import numpy as np

    from evaluator.interactive import iteration_inputs, manifest_points, write_iteration_npz

    with np.load(data_root / case.input.path, allow_pickle=False) as z:
        arrays = iteration_inputs(dict(z), iteration=0, prompt=prompt, points=manifest_points(case))
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_iteration_npz(dest, arrays)
    return dest


def _interactive_case(docker_client: Any, sb: Any, image_id: str, case: Any, data_root: Path, *, sandbox: Any,
                      caps: dict[str, Any], image_is_root: bool, runs_as_nonroot: bool, add: Any) -> CaseCheck:
    """One sample case through the platform's iteration loop, locally: iteration 0 with the first prompt, then K
    refinement iterations, each a fresh sandboxed container with the clicks simulated from the sample's ground
    truth (``evaluator.interactive``, the track's profile), the last valid prediction as ``prev_pred``, the class
    time budget as the limit. An iteration without a valid output keeps the last valid prediction (as the
    platform) and is reported with its fix."""
    import numpy as np

    from evaluator.failures import charge_failures
    from evaluator.interactive import (accumulate_clicks, case_budget_s, interactive_summary, iteration_inputs,
                                       manifest_points, next_clicks, score_iteration, write_iteration_npz)
    from evaluator.io import load_ground_truth

    metric = str(caps.get("metric_profile") or "default")
    prompt = str(caps.get("prompt") or "box")
    k = int(caps.get("iterations") or 5)
    labels = [lab.value for lab in case.labels]
    points = manifest_points(case) if prompt in ("point", "box+point") else None
    gts, spacing = load_ground_truth(data_root / case.gt.path)
    if spacing is None:
        spacing = tuple(case.spacing)
    with np.load(data_root / case.input.path, allow_pickle=False) as z:
        case_input = dict(z)
    budget = case_budget_s(len(labels) or 1, float(caps.get("class_budget_s") or 90.0))
    name = Path(case.input.path).name
    work = Path(tempfile.mkdtemp(prefix="segarena-check-"))
    kept: Any = None
    kept_at: int | None = None
    per_iteration: list[Any] = []
    its: list[dict[str, Any]] = []
    spent = 0.0
    first_status, first_reason, stderr_tail = "", "", ""
    over = False
    try:
        for i in range(k + 1):
            remaining = budget - spent
            if over or remaining < 0.5:  # the budget is used up: the rest is not run, the case keeps its prediction
                over = True
                its.append({"iteration": i, "status": "not_run", "valid": False, "dsc": its[-1]["dsc"] if its else 0.0,
                            "nsd": its[-1]["nsd"] if its else 0.0, "runtime_s": 0.0})
                continue
            if i == 0 and prompt == "box":
                input_file = data_root / case.input.path  # the input exactly as stored, as the reference copies it
            else:
                clicks = accumulate_clicks(per_iteration, initial=points) if i else None
                arrays = iteration_inputs(case_input, iteration=i, prompt=prompt, clicks=clicks, prev_pred=kept,
                                          points=points)
                input_file = work / f"it{i}" / "in" / name
                input_file.parent.mkdir(parents=True, exist_ok=True)
                write_iteration_npz(input_file, arrays)
            out_dir = work / f"it{i}" / "outputs"
            out_dir.mkdir(parents=True, exist_ok=True)
            by_budget = remaining < sandbox.timeout_s
            run = sb.run_case(docker_client, image_id=image_id, input_file=input_file, out_dir=out_dir,
                              profile=sb.with_overrides(sandbox, timeout_s=min(sandbox.timeout_s, remaining)),
                              labels={sb.LABEL_RUN: "check", "segarena.iteration": str(i)},
                              image_user_is_root=image_is_root)
            spent += run.runtime_s
            if run.status == "timeout" and by_budget:
                over = True
                segs = None
                add(f"the case's time budget ({budget:g} s = {len(labels) or 1} class(es) x "
                    f"{float(caps.get('class_budget_s') or 90.0):g} s, over all iterations) ran out at iteration {i}",
                    "make each iteration faster (the platform stops the case there and keeps the last valid "
                    "prediction)", case.id)
            else:
                segs = sb.check_output(run, expected_shape=tuple(case.shape), profile=metric)
            if segs is not None:
                kept, kept_at = segs, i
            elif not over:
                for problem, fix in diagnose(run, case_name=name, dim=case.dim, runs_as_nonroot=runs_as_nonroot,
                                             image_is_root=image_is_root, timeout_s=sandbox.timeout_s,
                                             memory_text=sandbox.memory_text, out_dir=out_dir):
                    add(problem, fix, f"{case.id} iteration {i}")
            if i == 0:
                first_status, first_reason = run.status, run.reason
            if segs is None:
                stderr_tail = stderr_tail or (run.stderr_tail or run.stderr_head or "").strip()[-800:]
            pred = kept if kept is not None else np.zeros(gts.shape, dtype=np.uint8)
            score = score_iteration(gts, pred, spacing=spacing, labels=labels, profile=metric)
            per_iteration.append(next_clicks(gts, pred, spacing=spacing, labels=labels, profile=metric))
            its.append({"iteration": i, "status": "timeout" if over else run.status, "valid": segs is not None,
                        "dsc": _finite(score.dsc), "nsd": _finite(score.nsd), "runtime_s": run.runtime_s})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = kept is not None
    summary = interactive_summary([float("nan") if e["dsc"] is None else e["dsc"] for e in its],
                                  [float("nan") if e["nsd"] is None else e["nsd"] for e in its], profile=metric)
    charged = float(charge_failures([0.0], [0.0], [spent], [ok], sandbox.timeout_s).runtime_s[0])
    failed = [e["iteration"] for e in its if not e["valid"]]
    reason = (f"iteration(s) {', '.join(map(str, failed))} without a valid output (kept the prediction of "
              f"{'iteration ' + str(kept_at) if kept_at is not None else 'none'})" if failed and ok else "")
    if over:
        reason = (reason + "; " if reason else "") + "over the class time budget"
    row = CaseCheck(case.id, case.modality, case.dim, "ok" if ok else first_status, reason or first_reason, spent,
                    charged, stderr_tail=stderr_tail, iterations=its)
    if ok:
        row.dsc, row.nsd = its[-1]["dsc"], its[-1]["nsd"]
        row.dsc_auc, row.nsd_auc = _finite(summary["dsc_auc"]), _finite(summary["nsd_auc"])
    return row


def _finite(v: Any) -> float | None:
    """A score as a float, None when undefined (NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def _case_line(row: CaseCheck) -> str:
    """The progress line of one sample case."""
    line = f"  {row.case_id:24s} {row.status:15s} {row.runtime_s:6.2f} s"
    if row.iterations:
        curve = " ".join("-" if e["dsc"] is None else f"{e['dsc']:.3f}" for e in row.iterations)
        return (line + f"  DSC per iteration {curve}"
                + (f"  DSC AUC {row.dsc_auc:.3f}" if row.dsc_auc is not None else "") + f"  {row.reason}")
    return line + (f"  DSC {row.dsc:.3f} NSD {row.nsd:.3f}" if row.dsc is not None else f"  {row.reason}")


def _single_case(docker_client: Any, sb: Any, image_id: str, case: Any, data_root: Path, *, sandbox: Any,
                 caps: dict[str, Any], image_is_root: bool, runs_as_nonroot: bool, add: Any) -> CaseCheck:
    """One sample case run once (main/booster tracks), as the judges run it, scored under the track's profile."""
    from evaluator import score_case
    from evaluator.failures import charge_failures
    from evaluator.io import load_ground_truth

    metric = str(caps.get("metric_profile") or "default")
    prompt = str(caps.get("prompt") or "box")
    out_dir = Path(tempfile.mkdtemp(prefix="segarena-check-"))
    name = Path(case.input.path).name
    try:
        input_file = data_root / case.input.path
        if prompt != "box":  # point prompts: the input the platform builds from the manifest's points
            input_file = _prompted_input(case, data_root, prompt, out_dir.parent / f"{out_dir.name}-in" / name)
        run = sb.run_case(docker_client, image_id=image_id, input_file=input_file, out_dir=out_dir,
                          profile=sandbox, labels={sb.LABEL_RUN: "check"}, image_user_is_root=image_is_root)
        segs = sb.check_output(run, expected_shape=tuple(case.shape), profile=metric)
        charged_s = float(charge_failures([0.0], [0.0], [run.runtime_s], [run.status == "ok"],
                                          sandbox.timeout_s).runtime_s[0])  # the platform's rule
        row = CaseCheck(case.id, case.modality, case.dim, run.status, run.reason, run.runtime_s, charged_s,
                        stderr_tail=(run.stderr_tail or run.stderr_head or "").strip()[-800:])
        if segs is not None:
            gts, spacing = load_ground_truth(data_root / case.gt.path)
            score = score_case(gts, segs, spacing=spacing, profile=metric)
            row.dsc, row.nsd = score.dsc, score.nsd
        for problem, fix in diagnose(run, case_name=name, dim=case.dim, runs_as_nonroot=runs_as_nonroot,
                                     image_is_root=image_is_root, timeout_s=sandbox.timeout_s,
                                     memory_text=sandbox.memory_text, out_dir=out_dir):
            add(problem, fix, case.id)
        return row
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(out_dir.parent / f"{out_dir.name}-in", ignore_errors=True)
