"""HTTP client of the worker routes (``/api/worker/*``, docs/worker-protocol.md).

Bearer worker token on every request; timeouts; retries with exponential backoff on connection errors
and 5xx answers (a ``claim`` is retried only when the request never reached the server, so a lost
answer never takes a second shard); downloads are streamed to disk and verified against their sha256
(a mismatch deletes the file); a case's output is uploaded as multipart (``meta`` JSON + ``output``).

An ``httpx.Client`` may be injected (tests pass Starlette's ``TestClient`` for an in-process API).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["WorkerClient", "APIError", "InfraError", "DigestMismatch", "LeaseLost", "Forbidden"]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
RETRY_STATUS = {500, 502, 503, 504}


class InfraError(RuntimeError):
    """The API could not be reached or failed (after the retries), or a download was bad: not the
    participant's fault; the shard is handed back (finish ``infra``)."""


class DigestMismatch(InfraError):
    """A downloaded file's sha256 or size differs from the one announced (the file was deleted)."""


class APIError(RuntimeError):
    """The API answered a 4xx: ``status``, ``code`` and ``message`` from its ``{code, message}`` body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class LeaseLost(APIError):
    """409: this worker no longer holds the shard (it was requeued): stop it."""


class Forbidden(APIError):
    """401/403: the token is wrong, revoked, or may not serve this queue."""


class WorkerClient:
    """The worker routes over HTTP."""

    def __init__(self, config: Any = None, *, base_url: str | None = None, token: str | None = None,
                 http: httpx.Client | None = None, timeout_s: float | None = None, retries: int | None = None,
                 backoff_s: float | None = None) -> None:
        self.base_url = (base_url or getattr(config, "api_url", "") or "").rstrip("/")
        self.token = token if token is not None else getattr(config, "worker_token", "")
        self.timeout_s = float(timeout_s if timeout_s is not None else getattr(config, "http_timeout_s", 60.0))
        self.retries = int(retries if retries is not None else getattr(config, "http_retries", 5))
        self.backoff_s = float(backoff_s if backoff_s is not None else getattr(config, "http_backoff_s", 0.5))
        self._own = http is None
        if http is None:
            timeout = httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
            http = httpx.Client(base_url=self.base_url + "/", timeout=timeout, follow_redirects=False,
                                trust_env=False)
        self.http = http
        self._headers = {"Authorization": f"Bearer {self.token}", "User-Agent": "segarena-worker"}

    # -- plumbing ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._own:
            self.http.close()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if self.base_url and not str(self.http.base_url):
            return f"{self.base_url}/{path.lstrip('/')}"  # an injected client without a base URL
        return path  # merged with the client's base URL (a path prefix of the API URL is kept)

    def _delay(self, attempt: int) -> float:
        return min(30.0, self.backoff_s * (2 ** attempt))

    @staticmethod
    def _raise_for(resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        code, message = "http_error", resp.reason_phrase or ""
        try:
            body = resp.json()
            if isinstance(body, dict):
                code = str(body.get("code") or code)
                message = str(body.get("message") or body.get("detail") or message)
        except (ValueError, UnicodeDecodeError):
            message = (resp.text or message)[:500]
        if resp.status_code == 409:
            raise LeaseLost(409, code, message)
        if resp.status_code in (401, 403):
            raise Forbidden(resp.status_code, code, message)
        if resp.status_code >= 500:
            raise InfraError(f"the API answered {resp.status_code} {code}: {message}")
        raise APIError(resp.status_code, code, message)

    def _request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> httpx.Response:
        """One request with retries; returns a response below 500 (a 4xx is raised by the caller)."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        files_factory = kwargs.pop("files_factory", None)
        last: str = ""
        for attempt in range(self.retries + 1):
            opened: list[Any] = []
            try:
                if files_factory is not None:
                    kwargs["files"], opened = files_factory()
                resp = self.http.request(method, self._url(path), headers=headers, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = f"cannot reach the API at {self.base_url or path}: {exc}"
            except httpx.TransportError as exc:
                if not idempotent:
                    raise InfraError(f"{method} {path}: the connection failed mid-request: {exc}") from exc
                last = f"{method} {path}: {exc.__class__.__name__}: {exc}"
            else:
                if resp.status_code not in RETRY_STATUS or not idempotent:
                    return resp
                last = f"{method} {path}: the API answered {resp.status_code}"
                resp.close()
            finally:
                for fh in opened:
                    fh.close()
            if attempt < self.retries:
                delay = self._delay(attempt)
                log.warning("%s; retrying in %.1f s (%d/%d)", last, delay, attempt + 1, self.retries)
                time.sleep(delay)
        raise InfraError(last + f" (after {self.retries + 1} tries)")

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None, *, idempotent: bool = True) -> Any:
        resp = self._request(method, path, json=body, idempotent=idempotent)
        self._raise_for(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise InfraError(f"{method} {path}: the API's answer is not JSON") from exc

    # -- the routes -------------------------------------------------------------------------------
    def hello(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/worker/hello``: announce this worker; answers ``{name, queues, heartbeat_s}``."""
        return self._json("POST", "/api/worker/hello", payload) or {}

    def ping(self, name: str, *, offline: bool = False) -> None:
        """``POST /api/worker/ping``: still here (idle workers call it every ``worker_heartbeat_s``); ``offline``
        says this worker is stopping cleanly."""
        self._json("POST", "/api/worker/ping", {"name": name, "offline": bool(offline)})

    def claim(self, name: str, queue: str) -> dict[str, Any] | None:
        """``POST /api/worker/claim``: the fairest queued shard of ``queue`` (its spec), or None (204)."""
        return self._json("POST", "/api/worker/claim", {"name": name, "queue": queue}, idempotent=False)

    def heartbeat(self, shard_id: int, lease: str) -> dict[str, Any]:
        """``POST …/heartbeat``: ``{cancel: bool}``; raises :class:`LeaseLost` on 409."""
        return self._json("POST", f"/api/worker/shards/{int(shard_id)}/heartbeat", {"lease": lease}) or {}

    def finish(self, shard_id: int, lease: str, outcome: str, reason: str = "") -> dict[str, Any]:
        """``POST …/finish``: ``outcome`` done or infra (infra requeues the shard)."""
        return self._json("POST", f"/api/worker/shards/{int(shard_id)}/finish",
                          {"lease": lease, "outcome": outcome, "reason": reason[:2000]}) or {}

    def upload_case(self, shard_id: int, case_id: str, meta: dict[str, Any],
                    output: Path | None = None) -> dict[str, Any]:
        """``POST …/cases/{case_id}``: multipart ``meta`` (JSON) and the optional ``output`` file
        (streamed from disk; idempotent per case on the server, so it is retried)."""
        return self._upload(f"/api/worker/shards/{int(shard_id)}/cases/{case_id}", meta, output, "case upload")

    def upload_iteration(self, shard_id: int, case_id: str, iteration: int, meta: dict[str, Any],
                         output: Path | None = None) -> dict[str, Any]:
        """``POST …/cases/{case_id}/iterations/{iteration}`` (interactive tracks): multipart ``meta`` and the
        optional ``output``; answers ``{valid, done, next: {clicks, clicks_order}, cancel, …}``. Idempotent per
        (case, iteration, lease) on the server, so it is retried."""
        return self._upload(f"/api/worker/shards/{int(shard_id)}/cases/{case_id}/iterations/{int(iteration)}",
                            meta, output, "iteration upload")

    def _upload(self, path: str, meta: dict[str, Any], output: Path | None, what: str) -> dict[str, Any]:
        """``POST path`` as multipart: the ``meta`` part (JSON) and the optional ``output`` file, streamed from disk
        (reopened on each retry); the answer's JSON object."""
        text = json.dumps(meta, ensure_ascii=False, default=str)

        def files_factory():
            # always multipart/form-data (the API refuses anything else), also without an output file: the meta
            # part is a plain field (no filename) listed with the files, which makes httpx encode multipart
            meta_part = ("meta", (None, text.encode("utf-8"), "application/json"))
            if output is None:
                return [meta_part], []
            fh = open(output, "rb")  # noqa: SIM115 - closed by _request
            return [meta_part, ("output", (Path(output).name, fh, "application/octet-stream"))], [fh]

        resp = self._request("POST", path, files_factory=files_factory)
        self._raise_for(resp)
        try:
            return resp.json() if resp.content else {}
        except ValueError as exc:
            raise InfraError(f"{what}: the API's answer is not JSON") from exc

    def download(self, path: str, dest: Path, *, sha256: str, size: int | None = None,
                 params: dict[str, Any] | None = None) -> Path:
        """Stream ``GET path`` into ``dest`` (via a temporary file in its directory), checking its size
        (when given) and sha256 against the announced ones (and the ``X-Content-SHA256`` header when
        the server sends one). A mismatch deletes the file and raises :class:`DigestMismatch`."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        expected = sha256.lower().removeprefix("sha256:")
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        last = ""
        for attempt in range(self.retries + 1):
            try:
                with self.http.stream("GET", self._url(path), headers=self._headers, params=params) as resp:
                    if resp.status_code in RETRY_STATUS:
                        last = f"GET {path}: the API answered {resp.status_code}"
                    else:
                        if resp.status_code >= 400:
                            resp.read()
                            self._raise_for(resp)
                        header = (resp.headers.get("x-content-sha256") or "").lower().removeprefix("sha256:")
                        if header and header != expected:
                            raise DigestMismatch(f"GET {path}: the server announces sha256 {header[:16]}…, the "
                                                 f"spec {expected[:16]}…")
                        digest, n = hashlib.sha256(), 0
                        with open(tmp, "wb") as fh:
                            for chunk in resp.iter_bytes(CHUNK):
                                n += len(chunk)
                                if size is not None and n > size:
                                    raise DigestMismatch(f"GET {path}: more than the announced {size} bytes")
                                digest.update(chunk)
                                fh.write(chunk)
                        if size is not None and n != size:
                            raise DigestMismatch(f"GET {path}: {n} bytes, the spec announces {size}")
                        if digest.hexdigest() != expected:
                            raise DigestMismatch(f"GET {path}: sha256 {digest.hexdigest()[:16]}… differs from the "
                                                 f"announced {expected[:16]}…; the file was deleted")
                        os.replace(tmp, dest)
                        return dest
            except (DigestMismatch, APIError):
                _unlink(tmp)
                raise
            except httpx.TransportError as exc:
                last = f"GET {path}: {exc.__class__.__name__}: {exc}"
            except OSError as exc:
                _unlink(tmp)
                raise InfraError(f"cannot write {dest}: {exc}") from exc
            _unlink(tmp)
            if attempt < self.retries:
                delay = self._delay(attempt)
                log.warning("%s; retrying in %.1f s (%d/%d)", last, delay, attempt + 1, self.retries)
                time.sleep(delay)
        raise InfraError(last + f" (after {self.retries + 1} tries)")


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
