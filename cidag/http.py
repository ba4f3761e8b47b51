"""The one HTTP client every network source uses, on `http.client` (cheap to import).

What it does that `urllib` does not, because a probe runs at boot against a
metadata service that may be absent, slow or broken:

- a per-request timeout *and* a total deadline on the monotonic clock (the
  probe's `ctx.deadline`): no request, retry or backoff sleep outlives it;
- retries with exponential backoff and full jitter (sleep uniform in
  [0, min(cap, base * 2**n)]), so a fleet booting at once does not retry in step;
- connection refused, no route to host, network unreachable and unknown host
  raise `SourceUnavailable` at once: nothing listens there, waiting will not help;
- a response size cap (default 16 MiB): a larger body fails, it is never buffered;
- redirects are followed only on the configured host and port;
- `cancelled` (a threading.Event) aborts sleeps and open connections.

Errors are one line that says what was tried:
`connection refused at http://127.0.0.1:1 (1 try in 0.00s)`.
"""
from __future__ import annotations

import errno
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping
from urllib.parse import urljoin, urlsplit

from .errors import SourceUnavailable

DEFAULT_MAX_SIZE = 16 << 20
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.25
DEFAULT_MAX_BACKOFF = 4.0
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
)
_CHUNK = 65536

# Client settings every HTTP source accepts (merged into their SETTINGS schema).
CLIENT_SETTINGS = {
    "request_timeout": {"format": "duration", "default": DEFAULT_TIMEOUT,
                        "description": "timeout of one request (the source's timeout bounds them all)"},
    "retries": {"type": "integer", "minimum": 0, "default": DEFAULT_RETRIES,
                "description": "retries after the first try (5xx, 429, timeouts, resets)"},
    "backoff": {"format": "duration", "default": DEFAULT_BACKOFF,
                "description": "base of the exponential backoff (full jitter)"},
    "max_backoff": {"format": "duration", "default": DEFAULT_MAX_BACKOFF,
                    "description": "cap of one backoff sleep"},
    "max_size": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_SIZE,
                 "description": "largest response body accepted, in bytes"},
    "max_parallel": {"type": "integer", "minimum": 1, "default": 8,
                     "description": "documents fetched at once (1 = one after another, as cloud-init does)"},
}


class HTTPFailure(RuntimeError):
    """A request failed (timeout, too large, bad redirect, retries exhausted); one-line message."""


@dataclass
class Response:
    """A complete response: `body` is at most the client's size cap."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    url: str

    def text(self) -> str:
        """The body decoded as UTF-8; raises HTTPFailure if it is not."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPFailure(f"{self.url}: body is not UTF-8 text") from None


@dataclass
class _Attempts:
    url: str
    started: float = field(default_factory=time.monotonic)
    tries: int = 0

    def summary(self) -> str:
        n = self.tries
        return f"({n} tr{'y' if n == 1 else 'ies'} in {time.monotonic() - self.started:.2f}s)"


class Client:
    """Requests against one base URL, bounded by `deadline` (monotonic seconds)."""

    def __init__(
        self,
        base_url: str,
        *,
        deadline: float,
        cancelled: threading.Event | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_size: int = DEFAULT_MAX_SIZE,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.origin = _origin(self.base_url)
        self.deadline = deadline
        self.cancelled = cancelled
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_size = max_size
        self.headers = dict(headers or {})
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, url: str, settings: Mapping, ctx) -> "Client":
        """A client for `url` using CLIENT_SETTINGS keys and the probe's deadline and cancel event."""
        return cls(
            url,
            deadline=ctx.deadline,
            cancelled=ctx.cancelled,
            timeout=settings.get("request_timeout", DEFAULT_TIMEOUT),
            retries=settings.get("retries", DEFAULT_RETRIES),
            backoff=settings.get("backoff", DEFAULT_BACKOFF),
            max_backoff=settings.get("max_backoff", DEFAULT_MAX_BACKOFF),
            max_size=settings.get("max_size", DEFAULT_MAX_SIZE),
        )

    def url(self, path: str) -> str:
        """Absolute URL of `path` (relative to the base URL)."""
        return urljoin(self.base_url, path.lstrip("/")) if path else self.base_url

    def get(self, path: str, **kw) -> Response:
        """GET `path`; see request()."""
        return self.request("GET", path, **kw)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
        no_retry_statuses: Iterable[int] = (),
    ) -> Response:
        """Send one request with retries; return the first response that is not retried.

        Any status may be returned (4xx included): the caller decides what a 404
        means. 5xx/429/408 are retried unless listed in `no_retry_statuses` (an
        HTTPFailure when retries run out). Raises SourceUnavailable when nothing
        listens at the host, HTTPFailure on timeout, oversize, a redirect off the
        host, or exhausted retries.
        """
        url = self.url(path)
        attempts = _Attempts(url)
        no_retry = frozenset(no_retry_statuses)
        last_error = ""
        while True:
            self._check_cancelled(attempts)
            if time.monotonic() >= self.deadline:
                raise HTTPFailure(f"timeout at {url} {attempts.summary()}" + _why(last_error))
            attempts.tries += 1
            try:
                resp = self._follow(method, url, body, headers)
            except _Unreachable as exc:
                raise SourceUnavailable(f"{exc} at {_origin_of(url)} {attempts.summary()}") from None
            except _Retryable as exc:
                last_error = str(exc)
            else:
                if resp.status not in RETRY_STATUSES or resp.status in no_retry or not retry:
                    return resp
                last_error = f"HTTP {resp.status} {resp.reason}".rstrip()
            if not retry or attempts.tries > self.retries:
                raise HTTPFailure(f"{last_error} at {url} {attempts.summary()}")
            # Full jitter: uniform in [0, min(cap, base * 2**n)].
            sleep = random.uniform(0, min(self.max_backoff, self.backoff * (2 ** (attempts.tries - 1))))
            left = self.deadline - time.monotonic()
            if sleep >= left:
                # Sleeping would pass the deadline: fail now, not later.
                raise HTTPFailure(f"timeout at {url} {attempts.summary()}" + _why(last_error))
            if self.cancelled is not None:
                if self.cancelled.wait(sleep):
                    self._check_cancelled(attempts)
            else:
                time.sleep(sleep)

    # -- one try, following same-host redirects

    def _follow(self, method: str, url: str, body: bytes | None, headers) -> Response:
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._once(method, url, body, headers)
            if resp.status not in REDIRECT_STATUSES or "location" not in resp.headers:
                return resp
            target = urljoin(url, resp.headers["location"])
            if _origin(target) != self.origin:
                raise HTTPFailure(
                    f"redirect off host refused: {url} -> {_origin(target)} (only {self.origin} is trusted)"
                )
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
            url = target
        raise HTTPFailure(f"too many redirects from {url}")

    def _once(self, method: str, url: str, body: bytes | None, headers) -> Response:
        import http.client  # here, not at the top: a local-only boot never pays for it

        parts = urlsplit(url)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Retryable("timeout")
        timeout = min(self.timeout, left)
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        sock = None
        try:
            try:
                conn.connect()
            except socket.gaierror as exc:
                if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
                    raise _Retryable(f"name lookup of {parts.hostname!r} failed for now") from None
                raise _Unreachable(f"unknown host {parts.hostname!r}") from None
            except socket.timeout:
                raise _Retryable("connect timeout") from None
            except OSError as exc:
                if exc.errno in _UNREACHABLE_ERRNOS:
                    raise _Unreachable(_errno_text(exc)) from None
                raise _Retryable(_errno_text(exc)) from None
            sock = conn.sock
            self._track(sock, True)
            all_headers = {"User-Agent": "cidag", "Accept-Encoding": "identity", **self.headers}
            all_headers.update(headers or {})
            conn.request(method, target, body=body, headers=all_headers)
            resp = conn.getresponse()
            length = resp.getheader("content-length")
            if length and length.isdigit() and int(length) > self.max_size:
                raise HTTPFailure(
                    f"response too large: {url} announces {int(length)} bytes, cap is {self.max_size}"
                )
            chunks: list[bytes] = []
            size = 0
            while not resp.isclosed():  # a response read to its end closes the socket
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise _Retryable("timeout reading body")
                sock.settimeout(min(self.timeout, left))
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_size:
                    raise HTTPFailure(f"response too large: {url} sent more than {self.max_size} bytes")
                chunks.append(chunk)
            if length and length.isdigit() and size < int(length):
                # read(amt) returns short instead of raising IncompleteRead.
                raise _Retryable(f"connection closed mid-body ({size} of {length} bytes read)")
            return Response(resp.status, resp.reason, _Headers(resp.getheaders()), b"".join(chunks), url)
        except HTTPFailure:
            raise
        except (_Retryable, _Unreachable):
            raise
        except socket.timeout:
            raise _Retryable("timeout") from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            if self.cancelled is not None and self.cancelled.is_set():
                raise _Retryable("cancelled") from None
            raise _Retryable(_describe(exc)) from None
        finally:
            if sock is not None:
                self._track(sock, False)
            conn.close()

    # -- cancellation: a watcher shuts open sockets so a blocked read returns at once

    def _track(self, sock: socket.socket, add: bool) -> None:
        if self.cancelled is None:
            return
        with self._lock:
            if add:
                self._open.add(sock)
                if len(self._open) == 1:
                    threading.Thread(target=self._watch, daemon=True).start()
            else:
                self._open.discard(sock)

    def _watch(self) -> None:
        while True:
            with self._lock:
                if not self._open:
                    return
            if self.cancelled.wait(0.1):
                with self._lock:
                    for sock in self._open:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                return

    def _check_cancelled(self, attempts: _Attempts) -> None:
        if self.cancelled is not None and self.cancelled.is_set():
            raise HTTPFailure(f"cancelled at {attempts.url} {attempts.summary()}")


def fetch_all(client: Client, paths: Iterable[str], fetch, max_parallel: int = 8) -> dict:
    """Run `fetch(client, path)` for every path, up to `max_parallel` at once.

    Returns {path: result}; the first exception raised by any fetch is re-raised
    (SourceUnavailable before other errors, so "nothing there" wins over noise).
    """
    paths = list(dict.fromkeys(paths))
    results: dict = {}
    errors: list[BaseException] = []
    queue = list(reversed(paths))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue or errors:
                    return
                path = queue.pop()
            try:
                value = fetch(client, path)
            except BaseException as exc:  # re-raised in the caller's thread
                with lock:
                    errors.append(exc)
                return
            with lock:
                results[path] = value

    n = max(1, min(max_parallel, len(paths)))
    if n == 1:
        worker()
    else:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        unavailable = [e for e in errors if isinstance(e, SourceUnavailable)]
        raise (unavailable or errors)[0]
    return results


class _Headers(dict):
    """Case-insensitive enough: keys lower-cased."""

    def __init__(self, pairs) -> None:
        super().__init__((k.lower(), v) for k, v in pairs)

    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key) -> bool:
        return super().__contains__(str(key).lower())


class _Retryable(Exception):
    pass


class _Unreachable(Exception):
    pass


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, (parts.hostname or "").lower(), port)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _errno_text(exc: OSError) -> str:
    names = {
        errno.ECONNREFUSED: "connection refused",
        errno.EHOSTUNREACH: "no route to host",
        errno.ENETUNREACH: "network unreachable",
        errno.EADDRNOTAVAIL: "address not available",
        errno.ECONNRESET: "connection reset",
    }
    return names.get(exc.errno, (exc.strerror or str(exc)).lower())


def _describe(exc: BaseException) -> str:
    import http.client

    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed mid-body ({len(exc.partial)} bytes read)"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(exc, OSError) and exc.errno:
        return _errno_text(exc)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _why(last_error: str) -> str:
    return f"; last error: {last_error}" if last_error and last_error != "timeout" else ""
