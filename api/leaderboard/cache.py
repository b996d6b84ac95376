"""The leaderboard's response cache: boards and rendered responses (page, JSON, CSV), per process.

A response is rendered once per board version and served as bytes with an ``ETag`` (``If-None-Match`` → 304)
and, when large, pre-gzipped. A cached entry is trusted for :data:`CACHE_TTL_S` seconds, then revalidated with
:func:`api.leaderboard.service.board_version` (a few cheap aggregate queries) and rebuilt only when the data
changed; :func:`invalidate` (call it from anything in this process that changes results) makes the next request
revalidate at once. While one request revalidates, concurrent ones keep getting the stale entry (no thundering herd).

Bounded: both caches are LRUs of ``SEGARENA_LEADERBOARD_CACHE_ENTRIES`` entries, and a 404 is never kept (its
key is whatever the client typed).
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.leaderboard import service
from api.leaderboard.board import Board, to_json_bytes
from api.leaderboard.viewer import is_organizer, member_of, request_credentials, request_session, request_settings
from api.models import Track, Visibility

__all__ = ["CACHE_TTL_S", "invalidate", "generation", "clear", "Rendered", "board_response", "cached_response",
           "entries", "boards"]

CACHE_TTL_S = 1.0

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_gen_lock = threading.Lock()
_generation: dict[int | None, int] = {None: 0}


def invalidate(track_id: int | None = None) -> None:
    """Mark cached boards stale in this process (one track, or all with ``None``)."""
    with _gen_lock:
        _generation[None] += 1
        if track_id is not None:
            _generation[track_id] = _generation.get(track_id, 0) + 1


def generation() -> int:
    """The in-process invalidation counter (part of every cache key)."""
    return _generation[None]


def _version(session: Session, track: Track) -> tuple[Any, ...]:
    return (*service.board_version(session, track), _generation.get(track.id, 0))


class LRU(Generic[K, V]):
    """A thread-safe mapping that keeps at most ``limit`` entries (the ``limit`` of the latest ``put``),
    evicting the least recently used: keys come from request paths, so the cache must stay bounded."""

    def __init__(self) -> None:
        self._d: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._d.get(key)
            if value is not None:
                self._d.move_to_end(key)
            return value

    def put(self, key: K, value: V, limit: int) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > max(1, limit):
                self._d.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._d.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._d)

    def __len__(self) -> int:
        return len(self._d)


@dataclass
class Rendered:
    """What a renderer returns: status, body, media type and extra headers."""

    status: int
    body: bytes
    media: str
    headers: dict[str, str]


@dataclass
class _Entry:
    version: tuple[Any, ...]
    gen: int
    checked: float
    rendered: Rendered
    etag: str
    gzipped: bytes | None = None  # compressed once, when the entry is built
    revalidating: bool = False

    @classmethod
    def of(cls, version: tuple[Any, ...], gen: int, rendered: Rendered) -> _Entry:
        body = rendered.body
        return cls(version, gen, time.monotonic(), rendered,
                   '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"',
                   gzip.compress(body, compresslevel=6, mtime=0) if len(body) > 1024 else None)


CacheKey = tuple[str, str, str, str, str]  # (kind, challenge, track, audience, database url)

entries: LRU[CacheKey, _Entry] = LRU()  # rendered responses; a 404 is never kept
boards: LRU[tuple[str, str, str, str], tuple[tuple[Any, ...], Board]] = LRU()  # one board serves page, JSON, CSV
_gc_frozen = threading.Event()


def clear() -> None:
    """Drop every cached board and response of this process."""
    entries.clear()
    boards.clear()


def _respond(request: Request, e: _Entry) -> Response:
    out = e.rendered
    headers = {"ETag": e.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding", **out.headers}
    if out.status == 200 and request.headers.get("if-none-match") == e.etag:
        return Response(status_code=304, headers=headers)
    if e.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(e.gzipped, status_code=out.status, media_type=out.media, headers=headers)
    return Response(out.body, status_code=out.status, media_type=out.media, headers=headers)


def _keep(request: Request, key: CacheKey, entry: _Entry) -> None:
    if entry.rendered.status != 200:
        entries.pop(key)  # never cache a miss (unbounded keys); drop what this key served before
    else:
        entries.put(key, entry, request_settings(request).leaderboard_cache_entries)
    if not _gc_frozen.is_set():
        # once per process, after the first build: move the (long-lived) modules, app and first board
        # out of the cyclic GC's scans, so full collections under load stay short
        _gc_frozen.set()
        gc.collect()
        gc.freeze()


def json_not_found(message: str) -> Rendered:
    return Rendered(404, to_json_bytes({"code": "not_found", "message": message}), "application/json", {})


BoardRenderer = Callable[[Session, Track, Board], Rendered]
NotFound = Callable[[str], Rendered]


def _build_board_entry(request: Request, key: CacheKey, organizer: bool, render: BoardRenderer,
                       not_found: NotFound) -> _Entry:
    """Revalidate (or build) the cache entry ``key`` of a board — runs in a worker thread."""
    _kind, challenge, track_slug, audience, db = key
    gen = generation()
    with request_session(request) as session:
        track = service.find_track(session, challenge, track_slug)
        version = ("missing",) if track is None else _version(session, track)
        old = entries.get(key)
        if old is not None and old.version == version:
            old.checked, old.gen = time.monotonic(), gen
            return old
        if track is None or (track.visibility == Visibility.hidden and not organizer):
            rendered = not_found(f"no track {track_slug!r} in challenge {challenge!r}")
        else:
            bkey = (challenge, track_slug, audience, db)
            cached = boards.get(bkey)
            if cached is not None and cached[0] == version:
                board = cached[1]
            else:
                board = service.build_board(session, track, organizer=organizer)
                boards.put(bkey, (version, board), request_settings(request).leaderboard_cache_entries)
            rendered = render(session, track, board)
    entry = _Entry.of(version, gen, rendered)
    _keep(request, key, entry)
    return entry


async def _serve(request: Request, key: CacheKey, build: Callable[[], _Entry]) -> Response:
    e = entries.get(key)
    if e is None or e.gen != generation():
        e = await run_in_threadpool(build)
    elif time.monotonic() - e.checked > CACHE_TTL_S and not e.revalidating:
        # one request revalidates; concurrent ones keep getting the entry meanwhile (no thundering herd)
        stale = e
        stale.revalidating = True
        try:
            e = await run_in_threadpool(build)
        finally:
            stale.revalidating = False
    return _respond(request, e)


async def board_response(request: Request, kind: str, challenge: str, track: str, render: BoardRenderer,
                         not_found: NotFound = json_not_found) -> Response:
    """The cached response ``kind`` (page, json, csv …) of track ``track`` of challenge ``challenge`` for this viewer:
    organizers (Bearer token or web session) get the organizer board, everyone else the public one."""
    token, source = request_credentials(request)
    organizer = False
    if token:
        def _who() -> bool:
            with request_session(request) as s:
                return is_organizer(member_of(s, token, source))
        organizer = await run_in_threadpool(_who)
    key: CacheKey = (kind, challenge, track, "organizer" if organizer else "public", request_settings(request).database_url)
    return await _serve(request, key, lambda: _build_board_entry(request, key, organizer, render, not_found))


async def cached_response(request: Request, key: CacheKey, version: Callable[[Session], tuple[Any, ...] | None],
                          render: Callable[[], Rendered]) -> Response:
    """A cached public response that is not one board (the challenge overview): ``version`` fingerprints what it
    shows (None: missing, never cached), ``render`` builds it."""
    def build() -> _Entry:
        gen = generation()
        with request_session(request) as session:
            v = version(session)
        old = entries.get(key)
        if v is not None and old is not None and old.version == v:
            old.checked, old.gen = time.monotonic(), gen
            return old
        entry = _Entry.of(v if v is not None else ("missing",), gen, render())
        _keep(request, key, entry)
        return entry
    return await _serve(request, key, build)


def track_version(session: Session, track: Track) -> tuple[Any, ...]:
    """The cache version of ``track``'s board (its data fingerprint and this process's invalidations)."""
    return _version(session, track)
