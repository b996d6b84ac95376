"""Limits of the anonymous participant routes: who the client is, and a small sliding-window limiter.

Sign-up requests are counted in the database (``signups.client``, :func:`api.participants.service.register`), so
the limit holds across API processes and restarts. Claim look-ups (a 256-bit code: guessing is hopeless anyway)
are limited per process by :class:`SlidingWindow`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

from starlette.requests import Request

from api.settings import Settings

__all__ = ["client_address", "SlidingWindow", "CLAIM_PER_HOUR", "claim_limiter"]


def client_address(request: Request, settings: Settings) -> str:
    """The requesting address: the TCP peer, or behind a trusted reverse proxy (``SEGARENA_TRUST_PROXY_HEADERS``) the
    last address of ``X-Forwarded-For`` (the one the proxy itself appended; earlier entries come from the client)."""
    if settings.trust_proxy_headers:
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return (request.client.host if request.client else "unknown")[:64]


class SlidingWindow:
    """At most ``limit`` events per ``window_s`` seconds per key (bounded memory: the least recently used keys
    beyond ``max_keys`` are forgotten)."""

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 10000) -> None:
        self.limit, self.window_s, self.max_keys = limit, window_s, max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str, *, now: float | None = None) -> float | None:
        """Count one event of ``key``; None when allowed, else the seconds until the next one is."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._events.pop(key, None) or deque()
            while q and q[0] <= now - self.window_s:
                q.popleft()
            self._events[key] = q
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
            if len(q) >= self.limit:
                return max(0.0, q[0] + self.window_s - now)
            q.append(now)
            return None

    def reset(self) -> None:
        with self._lock:
            self._events.clear()


CLAIM_PER_HOUR = 120
_LOCK = threading.Lock()


def claim_limiter(request: Request) -> SlidingWindow:
    """The claim look-up limiter of the app serving ``request`` (one per app: API processes count separately)."""
    state = request.app.state
    with _LOCK:
        lim = getattr(state, "participant_claims", None)
        if lim is None:
            lim = state.participant_claims = SlidingWindow(CLAIM_PER_HOUR, 3600.0)
    return lim
