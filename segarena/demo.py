"""``segarena demo``: the whole platform at work on a running SegArena (embedded mode, one machine).

Steps, each skipped when its result already exists (so a second run finishes in seconds):
wait for ``/health``; generate the ``small`` synthetic test set into storage; create the ``demo``
challenge with its tracks main / booster / reproducibility; build the baseline images
(``examples/box-fill``, ``examples/classic`` and variants of classic with other parameters) from
``settings.base_image`` and save them as archives under the data dir; create the demo teams; submit
through the HTTP API (resumable uploads), as :data:`ENTRIES` says: two unranked baselines and three
ranked teams on main, two booster entries (their ΔDSC/ΔNSD and speed-up against the team's main entry),
and once the original has succeeded, a reproduction of one main entry by another team (its verdict);
follow the runs, printing progress.

Needs the organizer token the API was started with (``SEGARENA_BOOTSTRAP_ORGANIZER_TOKEN``). What it
made is remembered in ``<data dir>/demo/state.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from segarena.client import ClientConfig, CliError, SegArenaClient
from segarena.output import clean
from segarena.upload import UploadState, upload_archive

__all__ = ["run_demo", "DEMO_CHALLENGE", "BASELINES", "ENTRIES", "Entry", "baseline_tag", "build_baseline", "save_archive",
           "example_dir"]

DEMO_CHALLENGE = "demo"
BASELINES = {  # example name → demo team
    "box-fill": "Baseline: box fill",
    "classic": "Baseline: classic (Otsu + LCC)",
}


@dataclass(frozen=True)
class Entry:
    """One demo submission: ``example`` built with ``params`` (build args of its Dockerfile), submitted by
    ``team`` to ``track``; ``reproduces`` names the key of the entry a reproduction reproduces."""

    key: str
    team: str
    example: str
    track: str = "main"
    label: str = ""
    params: dict[str, str] = field(default_factory=dict)
    baseline: bool = False
    reproduces: str | None = None


# Scores and runtimes differ between the variants (small set, seed of the built-in set): strong smoothing
# loses detail, a two-level Otsu is quicker but coarser, a strict box fit falls back to the ellipse more often.
ENTRIES: tuple[Entry, ...] = (
    Entry("box-fill", BASELINES["box-fill"], "box-fill", label="box-fill baseline", baseline=True),
    Entry("classic", BASELINES["classic"], "classic", label="classic baseline", baseline=True),
    Entry("aurora-main", "Aurora Lab", "classic", label="Otsu + LCC, strong smoothing (sigma 2.5)",
          params={"CLASSIC_SIGMA": "2.5"}),
    Entry("birch-main", "Birch Imaging", "classic", label="Otsu + LCC, two-level threshold",
          params={"CLASSIC_THREE_LEVEL": "0"}),
    Entry("cedar-main", "Cedar AI", "classic", label="Otsu + LCC, strict box fit (0.95)",
          params={"CLASSIC_MIN_FIT": "0.95"}),
    Entry("aurora-booster", "Aurora Lab", "classic", track="booster", label="booster: lighter smoothing (sigma 1)",
          params={"CLASSIC_SIGMA": "1.0"}),
    Entry("birch-booster", "Birch Imaging", "classic", track="booster", label="booster: three-level threshold, no smoothing",
          params={"CLASSIC_SIGMA": "0", "CLASSIC_THREE_LEVEL": "1"}),
    Entry("cedar-repro", "Cedar AI", "classic", track="reproducibility",
          label="reproduction of Birch Imaging's two-level Otsu (own build)",
          params={"CLASSIC_THREE_LEVEL": "0", "CLASSIC_SIGMA": "1"},
          reproduces="birch-main"),
    # the CVPR 2025 interactive protocol (box and point prompts, then simulated clicks) on the tiny set
    Entry("aurora-interactive", "Aurora Lab", "click-refine", track="interactive",
          label="click-refine baseline: box, then region growing from each click"),
    Entry("birch-interactive", "Birch Imaging", "point-grow", track="interactive",
          label="point-grow baseline: growing from the point and each click, bounded by the box"),
)
# By default main, booster and reproducibility run "small" and the interactive track, a container per iteration
# (1 + ITERATIONS per case), "tiny". SEGARENA_DEMO_TESTSET sets the test set of every track and
# SEGARENA_DEMO_INTERACTIVE_TESTSET that of the interactive track alone: a built-in set's name or, as for any track,
# the path of a manifest JSON on this machine (its data under the manifest's folder; the system test: "micro" for
# the other tracks, three of micro's cases, one of each kind of input, for the interactive one).
TESTSET = os.environ.get("SEGARENA_DEMO_TESTSET", "small")
INTERACTIVE_TESTSET = (os.environ.get("SEGARENA_DEMO_INTERACTIVE_TESTSET") or os.environ.get("SEGARENA_DEMO_TESTSET")
                       or "tiny")
INTERACTIVE_ITERATIONS = 3
FINAL = {"succeeded", "failed", "cancelled"}


def _track(slug: str, kind: str, title: str, description: str, **extra: Any) -> dict[str, Any]:
    """A demo track: only what the demo changes; every other setting is the server's default
    (``api.challenges.track_settings.TRACK_DEFAULTS``)."""
    return {"slug": slug, "title": title, "kind": kind, "description": description, "testset": TESTSET,
            "quota_per_day": 20, "memory_mb": 4096, "case_timeout_s": 120, "total_timeout_s": 7200, **extra}


DEMO_SPEC: dict[str, Any] = {
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
        _track("interactive", "interactive", "Interactive (CVPR 2025 protocol)",
               "Box and point prompts, then refinement from simulated clicks (one per imperfect class and "
               f"iteration, from the trusted side); DSC and NSD after each of {INTERACTIVE_ITERATIONS + 1} runs, "
               "ranked on their areas under the curve.",
               testset=INTERACTIVE_TESTSET, prompt="box+point", iterations=INTERACTIVE_ITERATIONS),
    ],
}


def example_dir(name: str) -> Path:
    """The build context of a baseline (examples/<name> in the source tree)."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        d = root / "examples" / name
        if (d / "Dockerfile").is_file():
            return d
    raise CliError(f"examples/{name}/Dockerfile not found; run the demo from the SegArena source tree")


def _context_hash(d: Path, base_image: str, params: dict[str, str] | None = None) -> str:
    """A hash of the sources in ``d``, the build parameters and ``base_image`` (:func:`baseline_tag` gives the base's
    name and id: a base rebuilt under the same tag makes every baseline built on it anew)."""
    h = hashlib.sha256(base_image.encode())
    for k, v in sorted((params or {}).items()):
        h.update(f"\0{k}={v}".encode())
    for p in sorted(d.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(d).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def baseline_tag(docker_client, name: str, base_image: str, *, params: dict[str, str] | None = None) -> str:
    """The tag of examples/<name> built FROM ``base_image`` with ``params``: its hash covers the sources, the
    parameters and the base image's id when the engine has it (else its name: it is pulled by the build)."""
    import docker

    try:
        base = f"{base_image}@{docker_client.images.get(base_image).id}"
    except docker.errors.ImageNotFound:
        base = base_image
    return f"segarena/example-{name}:{_context_hash(example_dir(name), base, params)}"


def build_baseline(docker_client, name: str, base_image: str, *, params: dict[str, str] | None = None,
                   say=print) -> str:
    """Build examples/<name> FROM ``base_image`` (``params``: further build args) unless an image of this exact
    source and parameters exists; its tag."""
    import docker

    d = example_dir(name)
    tag = baseline_tag(docker_client, name, base_image, params=params)
    try:
        docker_client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    extra = " with " + " ".join(f"{k}={v}" for k, v in sorted(params.items())) if params else ""
    say(f"building the {name} baseline image {tag} from {base_image}{extra}")
    try:
        docker_client.images.build(path=str(d), tag=tag, buildargs={"BASE_IMAGE": base_image, **(params or {})}, rm=True,
                                   forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        raise CliError(f"building examples/{name} failed: {exc}; is the base image {base_image} built? "
                       "(scripts/build-base-image.sh)") from None
    return tag


def save_archive(docker_client, tag: str, dest: Path, *, compress: bool = True, say=print) -> Path:
    """``docker save TAG | gzip > dest`` (``compress``; else the plain tar) unless ``dest`` exists (written
    atomically)."""
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    say(f"saving {tag} to {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    image = docker_client.images.get(tag)
    gzip_bin = shutil.which("pigz") or shutil.which("gzip")
    with open(tmp, "wb") as raw:
        if not compress:
            for chunk in image.save(named=True):
                raw.write(chunk)
        elif gzip_bin:  # a separate process compresses while the engine streams
            proc = subprocess.Popen([gzip_bin, "-1", "-n", "-c"], stdin=subprocess.PIPE, stdout=raw)
            stdin = proc.stdin
            assert stdin is not None  # stdin=PIPE
            try:
                for chunk in image.save(named=True):
                    stdin.write(chunk)
            finally:
                stdin.close()
                if proc.wait() != 0:
                    raise CliError(f"{gzip_bin} failed while compressing {tag}")
        else:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
                for chunk in image.save(named=True):
                    gz.write(chunk)
    os.replace(tmp, dest)
    return dest


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.0/8, ::1, localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _ensure_challenge(org: SegArenaClient, say) -> set[str]:
    """Create the demo challenge unless it exists; the slugs of its tracks."""
    try:
        return {t["slug"] for t in org.get(f"/api/challenges/{DEMO_CHALLENGE}").get("tracks", [])}
    except CliError as exc:
        if exc.status != 404:
            raise
    say(f"creating the '{DEMO_CHALLENGE}' challenge (tracks: main, booster, reproducibility on test set '{TESTSET}', "
        f"interactive on '{INTERACTIVE_TESTSET}')")
    try:
        org.post("/api/challenges", json=DEMO_SPEC)
    except CliError as exc:
        if exc.status != 409:  # created meanwhile by another run
            raise
    return {t["slug"] for t in DEMO_SPEC["tracks"]}


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


def _existing_submission(team: SegArenaClient, track: str) -> dict[str, Any] | None:
    subs = team.get("/api/submissions", params={"challenge": DEMO_CHALLENGE, "track": track})
    live = [s for s in subs if s.get("state") != "cancelled" and not s.get("excluded")]
    return live[0] if live else None


def _settings():
    from api.settings import get_settings

    return get_settings()


class _Submitter:
    """Builds, saves and uploads the demo entries. Images are built and saved once per example and parameters, on
    one background thread, ahead of the uploads (``prefetch``): the next archive is written while one uploads.
    To an API on this machine the archives go uncompressed (the CPU is what is short, not the link: gzip costs ~6 s
    of CPU per 350 MB archive to write and again to read); elsewhere gzip-compressed. An archive is removed once
    uploaded (the API keeps its copy; a later run needs none, or saves it again)."""

    def __init__(self, settings, org: SegArenaClient, state: _State, url: str, say):
        self.settings, self.org, self.state, self.url, self.say = settings, org, state, url, say
        self.docker_client = None
        self.compress = not is_loopback(url)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-build")
        self._archives: dict[tuple, Future[Path]] = {}
        self._uploaded: set[Path] = set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for path in self._uploaded:
            path.unlink(missing_ok=True)

    @staticmethod
    def _image_key(entry: Entry) -> tuple:
        return entry.example, tuple(sorted(entry.params.items()))

    def _build_and_save(self, entry: Entry) -> Path:
        if self.docker_client is None:
            from worker.sandbox import get_docker_client

            self.docker_client = get_docker_client(self.settings)
        tag = build_baseline(self.docker_client, entry.example, self.settings.base_image, params=entry.params,
                             say=self.say)
        name = f"{tag.split('/')[-1].replace(':', '-')}.tar{'.gz' if self.compress else ''}"
        return save_archive(self.docker_client, tag, self.settings.data_dir / "demo" / name, compress=self.compress,
                            say=self.say)

    def needs_submission(self, entry: Entry) -> bool:
        team = SegArenaClient(ClientConfig(url=self.url, token=_team_token(self.org, self.state, entry.team, self.say),
                                           challenge=DEMO_CHALLENGE), timeout=600)
        try:
            return _existing_submission(team, entry.track) is None
        finally:
            team.close()

    def prefetch(self, entries: list[Entry]) -> None:
        for entry in entries:
            key = self._image_key(entry)
            if key not in self._archives:
                self._archives[key] = self._pool.submit(self._build_and_save, entry)

    def archive(self, entry: Entry) -> Path:
        self.prefetch([entry])
        return self._archives[self._image_key(entry)].result()

    def submit(self, entry: Entry, reproduces: int | None = None) -> int:
        """The id of ``entry``'s submission, submitted now unless the team has one on the track."""
        team = SegArenaClient(ClientConfig(url=self.url, token=_team_token(self.org, self.state, entry.team, self.say),
                                           challenge=DEMO_CHALLENGE), timeout=600)
        try:
            existing = _existing_submission(team, entry.track)
            if existing is None:
                archive = self.archive(entry)
                size = archive.stat().st_size / 2**20
                self.say(f"submitting {archive.name} ({size:.0f} MiB) to demo/{entry.track} as '{entry.team}'")
                last = [0.0]

                def progress(done: int, total: int, _last=last, _name=entry.key) -> None:
                    if done == total or time.monotonic() - _last[0] > 2:
                        _last[0] = time.monotonic()
                        self.say(f"  upload {_name}: {100 * done / max(total, 1):.0f}%")

                existing = upload_archive(team, archive, track=entry.track, label=entry.label or entry.key,
                                          reproduces=reproduces, chunk_bytes=32 * 2**20, on_progress=progress,
                                          on_event=self.say,
                                          state=UploadState(self.settings.data_dir / "demo" / "uploads.json"))
                self.say(f"submission {existing['id']} queued ({entry.key})")
                self._uploaded.add(archive)
            if entry.baseline and not existing.get("is_baseline"):
                self.org.post(f"/api/admin/submissions/{existing['id']}/baseline", json={"is_baseline": True})
            return int(existing["id"])
        finally:
            team.close()


def _prepare_testsets(settings, state: _State, say) -> None:
    """The test sets, generated before the worker needs them (the worker would otherwise do it on the first run)."""
    from api.storage import Storage
    from data_manifests import builtin_sets, materialize

    for name in dict.fromkeys((TESTSET, INTERACTIVE_TESTSET)):
        if name not in builtin_sets():
            continue  # a manifest path: its data are already there (the track's validation reads it)
        dest = Storage(settings.storage_dir).testset_dir(name)
        ready = name in state.data.get("testsets_ready", []) or (name == TESTSET and state.data.get("testset_ready"))
        if not ready:
            say(f"generating the '{name}' synthetic test set into {dest} …")
        manifest, _root = materialize(name, dest)
        if not ready:
            say(f"test set ready: {len(manifest.cases)} cases, modalities {', '.join(manifest.modalities())}")
            state.data.setdefault("testsets_ready", []).append(name)
            state.save()


def _submit_all(org: SegArenaClient, submitter: _Submitter, state: _State, entries: list[Entry], *, wait: bool,
                deadline: float, say) -> dict[str, int]:
    """Submit every entry (reproductions once their original succeeded); the submission id per entry key."""
    sub_ids: dict[str, int] = {}

    def submitted(entry: Entry, reproduces: int | None = None) -> None:
        sub_ids[entry.key] = submitter.submit(entry, reproduces=reproduces)
        state.data["submissions"] = sub_ids
        state.save()

    for entry in entries:  # all but reproductions first: the runs start while the next images are built
        if entry.reproduces is None:
            submitted(entry)
    for entry in entries:  # a reproduction names a succeeded submission: wait for the original
        if entry.reproduces is None:
            continue
        original = sub_ids[entry.reproduces]
        if not wait:
            say(f"{entry.key}: not submitted (--no-wait); run the demo again once submission {original} succeeded")
            continue
        say(f"{entry.key} waits for the submission it reproduces ({entry.reproduces}, {original}) to succeed")
        if _follow(org, {entry.reproduces: original}, max(deadline - time.monotonic(), 1), say) != "succeeded":
            say(f"{entry.key}: not submitted, {entry.reproduces} did not succeed")
            continue
        submitted(entry, reproduces=original)
    return sub_ids


def run_demo(*, timeout: float = 1800.0, wait: bool = True, url: str | None = None, out=None) -> int:
    """Set up the demo (idempotently) and follow its runs; the exit code."""
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
    _prepare_testsets(settings, state, say)

    org = SegArenaClient(ClientConfig(url=url, token=org_token, challenge=DEMO_CHALLENGE), timeout=600)
    deadline = time.monotonic() + timeout
    submitter: _Submitter | None = None
    try:
        tracks = _ensure_challenge(org, say)
        entries = [e for e in ENTRIES if e.track in tracks]
        for missing in sorted({e.track for e in ENTRIES} - tracks):
            say(f"the demo challenge was made by an older SegArena and has no '{missing}' track: its entries are "
                "skipped (remove the data dir, e.g. .segarena, to set the demo up anew)")
        submitter = _Submitter(settings, org, state, url, say)
        submitter.prefetch([e for e in entries if submitter.needs_submission(e)])
        sub_ids = _submit_all(org, submitter, state, entries, wait=wait, deadline=deadline, say=say)
        if wait:
            _follow(org, sub_ids, max(deadline - time.monotonic(), 1), say)
        for track in sorted(tracks, key=[t["slug"] for t in DEMO_SPEC["tracks"]].index):
            say(f"leaderboard {track}: {url}/challenges/{DEMO_CHALLENGE}/tracks/{track}")
        say(f"JSON: {url}/api/challenges/{DEMO_CHALLENGE}/tracks/main/leaderboard · "
            f"took {time.monotonic() - t_start:.0f} s")
        return 0
    finally:
        if submitter is not None:
            submitter.close()
        org.close()


def _follow(org: SegArenaClient, sub_ids: dict[str, int], timeout: float, say) -> str | None:
    """Poll the submissions, printing state changes and progress, until they finish; the state of the last one."""
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
            return states[name]
        if time.monotonic() > deadline:
            say(f"still running after {timeout:.0f}s; the worker goes on (watch: segarena status ID --watch)")
            return None
        time.sleep(2)

