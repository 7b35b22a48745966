"""Connection settings, the server API client and pid-file signals for the ops CLI.

Stdlib only (urllib): the CLI must work on a bare operator box with just the package.
Every failure becomes a :class:`CtlError` carrying one line for the terminal.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_API_URL", "ENV_API_KEY", "ENV_API_URL", "ApiClient", "CtlError", "Settings",
    "pid_from_file", "resolve_pid_file", "resolve_settings", "send_signal", "wait_exit",
]

ENV_API_URL = "SHARDGATE_API_URL"
ENV_API_KEY = "SHARDGATE_API_KEY"
DEFAULT_API_URL = "http://127.0.0.1:8001"


class CtlError(Exception):
    """A failure the CLI reports as one line on stderr with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True)
class Settings:
    api_url: str  # base URL of the internal port, without /api
    api_key: str
    timeout: float


def _load_config(path: str) -> Any:
    """The gateway's own loader, so the CLI reads a config exactly as ``serve`` does."""
    from gateway.config import ConfigError, load_config

    try:
        return load_config(path)
    except FileNotFoundError:
        raise CtlError(f"config file not found: {path}") from None
    except ConfigError as exc:
        raise CtlError(f"{path}: {exc}") from None
    except OSError as exc:
        raise CtlError(f"cannot read config {path}: {exc.strerror or exc}") from None


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/api"):
        url = url[: -len("/api")]
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CtlError(f"bad API URL {url!r}: expected http://HOST:PORT", exit_code=2)
    return url


def _url_from_config(config: Any) -> str:
    host = config.http_server.internal_address or "127.0.0.1"
    # A wildcard listen address is reachable through loopback.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    port = config.http_server.internal_port
    if not port:
        raise CtlError("the config's http_server.internal_port is 0 (picked at start): pass --api-url", 2)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def resolve_settings(api_url: str | None, api_key: str | None, config_path: str | None,
                     timeout: float) -> Settings:
    """Flags win over the environment, which wins over --config; the URL defaults to 127.0.0.1:8001."""
    config = _load_config(config_path) if config_path else None
    url = api_url or os.environ.get(ENV_API_URL) or (_url_from_config(config) if config else DEFAULT_API_URL)
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if key is None:
        key = config.http_api.key if config else ""
    return Settings(normalize_url(url), key, timeout)


class ApiClient:
    """``POST {url}/api/<method>`` with ``X-API-Key``; returns the ``result`` object."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.settings.api_url}/api/{method}"
        body = json.dumps(params or {}).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "shardgate-ctl"}
        if self.settings.api_key:
            headers["X-API-Key"] = self.settings.api_key
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:
            raise CtlError(f"cannot reach the gateway API at {self.settings.api_url}: {_reason(exc.reason)} "
                           f"(is it running? set --api-url or {ENV_API_URL})") from None
        except TimeoutError:
            raise CtlError(f"the gateway API at {self.settings.api_url} did not answer within "
                           f"{self.settings.timeout:g}s") from None
        except (ConnectionError, OSError) as exc:
            raise CtlError(f"cannot reach the gateway API at {self.settings.api_url}: {_reason(exc)}") from None
        try:
            reply = json.loads(raw)
        except ValueError:
            raise CtlError(f"{url} answered something that is not JSON: {_first_line(raw)!r}") from None
        if not isinstance(reply, dict):
            raise CtlError(f"{url} answered unexpected JSON: {_first_line(raw)!r}")
        error = reply.get("error")
        if error:
            code = error.get("code", "?") if isinstance(error, dict) else "?"
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            raise CtlError(f"API error {code} from {method}: {message}")
        result = reply.get("result", {})
        return result if isinstance(result, dict) else {"result": result}

    def _http_error(self, exc: urllib.error.HTTPError) -> CtlError:
        if exc.code == 401:
            if not self.settings.api_key:
                return CtlError(f"the gateway API at {self.settings.api_url} needs a key (HTTP 401): "
                                f"pass --api-key, set {ENV_API_KEY}, or --config with http_api.key")
            return CtlError(f"the gateway API at {self.settings.api_url} refused the API key (HTTP 401): "
                            f"check --api-key / {ENV_API_KEY} / http_api.key")
        try:
            detail = _first_line(exc.read())
        except OSError:
            detail = ""
        text = f"HTTP {exc.code} {exc.reason} from {exc.url}"
        return CtlError(f"{text}: {detail}" if detail else text)


def _reason(reason: Any) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return str(reason.strerror).lower()
    return str(reason)


def _first_line(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return text.splitlines()[0][:200] if text else ""


# -- signals to the supervisor through its pid file --------------------------------------------


def resolve_pid_file(pid_file: str | None, config_path: str | None) -> str:
    if pid_file:
        return pid_file
    if config_path:
        path = str(_load_config(config_path).shardgate.pid_file)
        if path:
            return path
        raise CtlError(f"{config_path} sets no shardgate.pid_file: pass --pid-file", exit_code=2)
    raise CtlError("no pid file: pass --pid-file PATH, or --config FILE with shardgate.pid_file", exit_code=2)


def pid_from_file(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise CtlError(f"pid file {path} does not exist (is the gateway running with this pid file?)") from None
    except OSError as exc:
        raise CtlError(f"cannot read pid file {path}: {exc.strerror or exc}") from None
    try:
        pid = int(text)
    except ValueError:
        raise CtlError(f"pid file {path} does not hold a pid: {text[:40]!r}") from None
    if pid <= 1:
        raise CtlError(f"pid file {path} holds an invalid pid {pid}")
    return pid


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its parent, counts as gone)."""
    try:
        import psutil

        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except ImportError:  # pragma: no cover - psutil is a dependency of the gateway
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except Exception:  # psutil.NoSuchProcess and friends
        return False


def _looks_like_shardgate(pid: int) -> bool | None:
    try:
        import psutil

        args = psutil.Process(pid).cmdline()
    except Exception:
        return None  # cannot tell (no psutil, no permission): do not block the signal
    if not args:
        return None
    # `shardgate serve ...` or `python -m gateway serve ...`
    joined = " ".join(args)
    return "serve" in args and ("shardgate" in joined or "gateway" in joined)


def send_signal(path: str, sig: signal.Signals, force: bool = False) -> int:
    pid = pid_from_file(path)
    if not _alive(pid):
        raise CtlError(f"process {pid} from pid file {path} is not running (stale pid file)")
    if not force and _looks_like_shardgate(pid) is False:
        raise CtlError(f"process {pid} from pid file {path} is not a shardgate supervisor "
                       f"(stale pid file, pid reused?); --force sends the signal anyway")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise CtlError(f"process {pid} from pid file {path} is not running (stale pid file)") from None
    except PermissionError:
        raise CtlError(f"no permission to signal process {pid} (from {path}): run as its user") from None
    return pid


def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
