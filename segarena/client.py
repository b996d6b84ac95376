"""The SegArena HTTP client used by the command line: configuration, auth and one-line errors.

Configuration, first match wins: command-line options, then the environment (``SEGARENA_URL``,
``SEGARENA_TOKEN``, ``SEGARENA_CHALLENGE``), then the config file
(``$SEGARENA_CONFIG`` or ``~/.config/segarena/config.toml``, keys ``url``, ``token``, ``challenge``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # httpx is imported when a client is made: `segarena --help` stays fast
    import httpx

__all__ = ["ClientConfig", "CliError", "error_from_response", "SegArenaClient", "config_path", "load_config", "save_config"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CHALLENGE = "demo"


class CliError(Exception):
    """An error the command line prints as one line (no traceback) before exiting with ``code``."""

    def __init__(self, message: str, *, exit_code: int = 1, api_code: str | None = None, status: int | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.message = message
        self.body = body or {}
        self.exit_code = exit_code
        self.api_code = api_code
        self.status = status


def config_path() -> Path:
    """Where the config file lives (``$SEGARENA_CONFIG`` or ``$XDG_CONFIG_HOME/segarena/config.toml``)."""
    if os.environ.get("SEGARENA_CONFIG"):
        return Path(os.environ["SEGARENA_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "segarena" / "config.toml"


def cache_dir() -> Path:
    """Where the client keeps resumable-upload state (``$SEGARENA_CACHE_DIR`` or ``~/.cache/segarena``)."""
    if os.environ.get("SEGARENA_CACHE_DIR"):
        return Path(os.environ["SEGARENA_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "segarena"


def _read_file_config() -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read the config file {path}: {exc}; fix or delete it") from None
    return data.get("segarena", data) if isinstance(data, dict) else {}


@dataclass
class ClientConfig:
    url: str = DEFAULT_URL
    token: str | None = None
    challenge: str = DEFAULT_CHALLENGE


def load_config(*, url: str | None = None, token: str | None = None, challenge: str | None = None) -> ClientConfig:
    """The effective configuration: options, then environment, then the config file, then defaults."""
    file = _read_file_config()
    return ClientConfig(
        url=(url or os.environ.get("SEGARENA_URL") or file.get("url") or DEFAULT_URL).rstrip("/"),
        token=token or os.environ.get("SEGARENA_TOKEN") or file.get("token") or None,
        challenge=challenge or os.environ.get("SEGARENA_CHALLENGE") or file.get("challenge") or DEFAULT_CHALLENGE,
    )


def _toml_value(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_config(**values: str | None) -> Path:
    """Merge ``values`` into the config file (created with mode 0600: it may hold a token)."""
    path = config_path()
    current = _read_file_config()
    current.update({k: v for k, v in values.items() if v is not None})
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{k} = {_toml_value(str(v))}\n" for k, v in sorted(current.items()))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def error_from_response(resp: httpx.Response) -> CliError:
    code, message = None, None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code")
        message = body.get("message")
        if message is None and "detail" in body:  # FastAPI's default shape, in case a route uses it
            detail = body["detail"]
            message = detail if isinstance(detail, str) else "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail if isinstance(d, dict))
    if not message:
        message = (resp.text or resp.reason_phrase or "no details").strip().splitlines()[0][:300]
    hint = ""
    if resp.status_code == 401 and "token" not in message.lower():
        hint = " (set SEGARENA_TOKEN or run 'segarena configure --token ...')"
    return CliError(f"{message}{hint} [HTTP {resp.status_code}{', ' + code if code else ''}]",
                    api_code=code, status=resp.status_code, body=body if isinstance(body, dict) else None)


class SegArenaClient:
    """A thin synchronous client of the SegArena HTTP API."""

    def __init__(self, config: ClientConfig, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.config = config
        headers = {"User-Agent": "segarena-cli"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        import httpx

        self._http = httpx.Client(base_url=config.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SegArenaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, *, expect_json: bool = True, raw: bool = False, **kw) -> Any:
        """Send a request; API errors and unreachable servers become :class:`CliError`."""
        import httpx

        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach SegArena at {self.config.url} ({exc.__class__.__name__}: {exc}); "
                           "is it running? Set SEGARENA_URL to its address") from None
        if resp.status_code >= 400:
            raise error_from_response(resp)
        if raw:
            return resp
        if not expect_json:
            return resp.text
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    # raw access for the resumable upload loop, which handles transport errors itself
    @property
    def http(self) -> httpx.Client:
        return self._http

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw) -> Any:
        return self.request("PATCH", path, **kw)

    def track_path(self, track: str, challenge: str | None = None) -> str:
        return f"/api/challenges/{challenge or self.config.challenge}/tracks/{track}"
