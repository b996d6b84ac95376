"""``segarena demo``: the whole platform at work on a running SegArena (embedded mode, one machine).

Steps, each skipped when its result already exists (so a second run finishes in seconds):
wait for ``/health``; generate the ``small`` synthetic test set into storage; create the ``demo``
challenge with its tracks main / booster / reproducibility; build the two baseline images
(``examples/box-fill``, ``examples/classic``) from ``settings.base_image`` and save them as archives
under the data dir; create two demo teams; submit both baselines to the main track through the HTTP
API (resumable uploads) and mark them as baselines; follow their runs, printing progress.

Needs the organizer token the API was started with (``SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN``). What it
made is remembered in ``<data dir>/demo/state.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from segarena.client import ClientConfig, CliError, SegArenaClient
from segarena.output import clean
from segarena.upload import UploadState, upload_archive

__all__ = ["run_demo", "DEMO_CHALLENGE", "BASELINES", "build_baseline", "save_archive", "example_dir"]

DEMO_CHALLENGE = "demo"
BASELINES = {  # example name → demo team
    "box-fill": "Baseline: box fill",
    "classic": "Baseline: classic (Otsu + LCC)",
}
TESTSET = os.environ.get("SEGARENA_DEMO_TESTSET", "small")  # tests use "tiny"
FINAL = {"succeeded", "failed", "cancelled"}


def _track(slug: str, kind: str, title: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"slug": slug, "title": title, "kind": kind, "description": description, "testset": TESTSET,
            "metric_profile": "default", "ranking_scheme": "rank_then_aggregate", "visibility": "public",
            "quota_per_day": 20, "cpus": 1.0, "memory_mb": 4096, "case_timeout_s": 120, "total_timeout_s": 7200,
            **extra}


DEMO_SPEC = {
    "slug": DEMO_CHALLENGE,
    "demo": True,  # uses the built-in synthetic set, whose ground truth is public
    "title": "SegArena demo: promptable segmentation on a laptop",
    "description": "A small synthetic stand-in for the CVPR 2024 'Segment Anything in Medical Images on Laptop' "
                   "challenge: box prompts, nine imaging modalities (plus two extra), CPU-only runtime per case.",
    "tracks": [
        _track("main", "main", "Main track", "Box-prompted segmentation; DSC, NSD and runtime per case."),
        _track("booster", "booster", "Performance booster", "Post-challenge: improve your main-track model."),
        _track("reproducibility", "reproducibility", "Reproducibility",
               "Independent re-implementations of main-track entries, compared case by case."),
    ],
}


def example_dir(name: str) -> Path:
    """The build context of a baseline (examples/<name> in the source tree)."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        d = root / "examples" / name
        if (d / "Dockerfile").is_file():
            return d
    raise CliError(f"examples/{name}/Dockerfile not found; run the demo from the SegArena source tree")


def _context_hash(d: Path, base_image: str) -> str:
    h = hashlib.sha256(base_image.encode())
    for p in sorted(d.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(d).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def build_baseline(docker_client, name: str, base_image: str, *, say=print) -> str:
    """Build examples/<name> FROM ``base_image`` unless an image of this exact source exists; its tag."""
    import docker

    d = example_dir(name)
    tag = f"segarena/example-{name}:{_context_hash(d, base_image)}"
    try:
        docker_client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    say(f"building the {name} baseline image {tag} from {base_image}")
    try:
        docker_client.images.build(path=str(d), tag=tag, buildargs={"BASE_IMAGE": base_image}, rm=True,
                                   forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        raise CliError(f"building examples/{name} failed: {exc}; is the base image {base_image} built? "
                       "(scripts/build-base-image.sh)") from None
    return tag


def save_archive(docker_client, tag: str, dest: Path, *, say=print) -> Path:
    """``docker save TAG | gzip > dest`` unless ``dest`` exists (written atomically)."""
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    say(f"saving {tag} to {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    image = docker_client.images.get(tag)
    gzip_bin = shutil.which("pigz") or shutil.which("gzip")
    with open(tmp, "wb") as raw:
        if gzip_bin:  # a separate process compresses while the engine streams
            proc = subprocess.Popen([gzip_bin, "-1", "-n", "-c"], stdin=subprocess.PIPE, stdout=raw)
            try:
                for chunk in image.save(named=True):
                    proc.stdin.write(chunk)
            finally:
                proc.stdin.close()
                if proc.wait() != 0:
                    raise CliError(f"{gzip_bin} failed while compressing {tag}")
        else:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
                for chunk in image.save(named=True):
                    gz.write(chunk)
    os.replace(tmp, dest)
    return dest


class _State:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds team tokens
        with os.fdopen(fd, "w") as fh:
            json.dump(self.data, fh, indent=1)
        os.replace(tmp, self.path)


def _wait_health(url: str, timeout: float, say) -> None:
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise CliError(f"SegArena did not answer at {url}/health within {timeout:.0f}s; start it with ./segarena.sh up")
        if not said:
            say(f"waiting for the API at {url} …")
            said = True
        time.sleep(0.5)


def _ensure_challenge(org: SegArenaClient, say) -> None:
    try:
        org.get(f"/api/challenges/{DEMO_CHALLENGE}")
        return
    except CliError as exc:
        if exc.status != 404:
            raise
    say(f"creating the '{DEMO_CHALLENGE}' challenge (tracks: main, booster, reproducibility; test set '{TESTSET}')")
    try:
        org.post("/api/challenges", json=DEMO_SPEC)
    except CliError as exc:
        if exc.status != 409:  # created meanwhile by another run
            raise


def _team_token(org: SegArenaClient, state: _State, name: str, say) -> str:
    teams = state.data.setdefault("teams", {})
    entry = teams.get(name) or {}
    if entry.get("token"):
        return entry["token"]
    team_id = entry.get("team_id")
    if team_id is None:
        try:
            team_id = org.post("/api/teams", json={"name": name, "affiliation": "SegArena demo"})["id"]
            say(f"created demo team '{name}'")
        except CliError as exc:
            if exc.status != 409:
                raise
            team_id = next(t["id"] for t in org.get("/api/teams") if t["name"] == name)
    created = org.post(f"/api/teams/{team_id}/members",
                       json={"name": "demo-bot", "email": "", "role": "participant"})
    teams[name] = {"team_id": team_id, "member_id": created["member"]["id"], "token": created["token"]}
    state.save()
    return created["token"]


def _existing_submission(team: SegArenaClient) -> dict[str, Any] | None:
    subs = team.get("/api/submissions", params={"challenge": DEMO_CHALLENGE, "track": "main"})
    live = [s for s in subs if s.get("state") != "cancelled" and not s.get("excluded")]
    return live[0] if live else None


def _settings():
    from api.settings import get_settings

    return get_settings()


def run_demo(*, timeout: float = 900.0, wait: bool = True, url: str | None = None, out=None) -> int:
    """Set up the demo (idempotently) and follow the baseline runs; the exit code."""
    stream = out or sys.stdout
    t_start = time.monotonic()

    def say(msg: str) -> None:
        print(clean(f"[demo {time.monotonic() - t_start:6.1f}s] {msg}"), file=stream, flush=True)

    settings = _settings()
    url = (url or os.environ.get("SEGARENA_URL") or settings.public_base_url).rstrip("/")
    org_token = settings.bootstrap_organizer_token or os.environ.get("SEGARENA_TOKEN")
    if not org_token:
        raise CliError("the demo needs the organizer token the API was started with: set "
                       "SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN (./segarena.sh up does)")
    _wait_health(url, 120, say)
    state = _State(settings.data_dir / "demo" / "state.json")

    # the test set, generated before the worker needs it (the worker would otherwise do it on the first run)
    from api.storage import Storage
    from data_manifests import materialize

    dest = Storage(settings.storage_dir).testset_dir(TESTSET)
    if not state.data.get("testset_ready"):
        say(f"generating the '{TESTSET}' synthetic test set into {dest} …")
    manifest, _root = materialize(TESTSET, dest)
    if not state.data.get("testset_ready"):
        say(f"test set ready: {len(manifest.cases)} cases, modalities {', '.join(manifest.modalities())}")
        state.data["testset_ready"] = True
        state.save()

    org = SegArenaClient(ClientConfig(url=url, token=org_token, challenge=DEMO_CHALLENGE), timeout=600)
    try:
        _ensure_challenge(org, say)
        sub_ids: dict[str, int] = {}
        docker_client = None
        for name, team_name in BASELINES.items():
            team = SegArenaClient(ClientConfig(url=url, token=_team_token(org, state, team_name, say),
                                               challenge=DEMO_CHALLENGE), timeout=600)
            try:
                existing = _existing_submission(team)
                if existing is None:
                    if docker_client is None:
                        from worker.sandbox import get_docker_client

                        docker_client = get_docker_client(settings)
                    tag = build_baseline(docker_client, name, settings.base_image, say=say)
                    archive = save_archive(docker_client, tag, settings.data_dir / "demo" /
                                           f"{tag.split('/')[-1].replace(':', '-')}.tar.gz", say=say)
                    size = archive.stat().st_size / 2**20
                    say(f"submitting {archive.name} ({size:.0f} MiB) to demo/main as '{team_name}'")
                    last = [0.0]

                    def progress(done: int, total: int, _last=last, _name=name) -> None:
                        if done == total or time.monotonic() - _last[0] > 2:
                            _last[0] = time.monotonic()
                            say(f"  upload {_name}: {100 * done / max(total, 1):.0f}%")

                    existing = upload_archive(team, archive, track="main", label=f"{name} baseline",
                                              chunk_bytes=32 * 2**20, on_progress=progress, on_event=say,
                                              state=UploadState(settings.data_dir / "demo" / "uploads.json"))
                    say(f"submission {existing['id']} queued")
                if not existing.get("is_baseline"):
                    org.post(f"/api/admin/submissions/{existing['id']}/baseline", json={"is_baseline": True})
                sub_ids[name] = int(existing["id"])
            finally:
                team.close()
        state.data["submissions"] = sub_ids
        state.save()
        board = f"{url}/challenges/{DEMO_CHALLENGE}/tracks/main"
        if wait:
            _follow(org, sub_ids, timeout, say)
        say(f"leaderboard: {board}  (JSON: {url}/api/challenges/{DEMO_CHALLENGE}/tracks/main/leaderboard)")
        return 0
    finally:
        org.close()


def _follow(org: SegArenaClient, sub_ids: dict[str, int], timeout: float, say) -> None:
    """Poll the baseline submissions, printing state changes and progress, until they finish."""
    deadline = time.monotonic() + timeout
    last: dict[str, tuple] = {}
    while True:
        states = {}
        for name, sid in sub_ids.items():
            s = org.get(f"/api/submissions/{sid}")
            p = s.get("progress") or {}
            key = (s["state"], p.get("done"), p.get("total"))
            if last.get(name) != key:
                line = f"{name} (submission {sid}): {s['state']}"
                if p.get("total"):
                    line += f" {p.get('done', 0)}/{p['total']} cases"
                if s["state"] == "succeeded":
                    line += f" — DSC {s.get('dsc') or 0:.4f}, NSD {s.get('nsd') or 0:.4f}, {s.get('runtime_s') or 0:.2f} s/case"
                elif s.get("reason"):
                    line += f" — {s['reason']}"
                say(line)
                last[name] = key
            states[name] = s["state"]
        if all(v in FINAL for v in states.values()):
            return
        if time.monotonic() > deadline:
            say(f"still running after {timeout:.0f}s; the worker goes on (watch: segarena status ID --watch)")
            return
        time.sleep(2)

