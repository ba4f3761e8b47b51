"""The one HTTP client every network source uses, on `http.client` (cheap to import).

What it does that `urllib` does not, because a probe runs at boot against a
metadata service that may be absent, slow, broken or loaded by a fleet:

- one deadline: the probe's `ctx.deadline` (the source's `timeout`, monotonic
  clock) bounds every name lookup, connect, request, retry and sleep;
- keep-alive: a source's requests go one after another on one connection
  (`max_parallel` > 1: on that many, and on one again once the service has
  said it is busy); a connection that timed out or broke is closed, never
  tried again;
- a retry budget per source (`retries`, shared by all its requests), each
  retry after an exponential backoff with full jitter (sleep uniform in
  [0, min(cap, base * 2**n)], n counting the source's retries), so a fleet
  booting at once does not retry in step;
- `Retry-After` (429, 503) honoured: the sleep is Retry-After (at least the
  `backoff` base: a `0` or a past date does not mean "now") plus a jitter
  uniform in [0, min(cap, Retry-After * 2**n)], never past the deadline; n
  grows with the request's tries and with how often the service said it is
  busy (+1 per round of 429/503, -1 per answer);
- connection refused, no route to host, network unreachable and unknown host
  raise `SourceUnavailable` at once: nothing listens there, waiting will not help;
- a response size cap (default 16 MiB): a larger body fails, it is never buffered;
- redirects are followed only on the configured host and port;
- `cancelled` (a threading.Event) aborts lookups, sleeps and open connections.

Errors are one line that says what was tried:
`connection refused at http://127.0.0.1:1 (1 try in 0.00s)`.
What a source sent is counted in `stats` (requests, retries, connections,
throttled answers, seconds slept), which the run record keeps per node.
"""
from __future__ import annotations

import errno
import ipaddress
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, MutableMapping
from urllib.parse import urljoin, urlsplit

from .errors import SourceUnavailable

DEFAULT_MAX_SIZE = 16 << 20
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 10
DEFAULT_BACKOFF = 0.25
DEFAULT_MAX_BACKOFF = 8.0
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
BUSY_STATUSES = frozenset({429, 503})  # the service says it is loaded: go one request at a time
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
)
_CHUNK = 65536
_POLL = 0.05  # how often a name lookup checks the cancel event

# Client settings every HTTP source accepts (merged into their SETTINGS schema).
CLIENT_SETTINGS = {
    "request_timeout": {"format": "duration", "default": DEFAULT_TIMEOUT,
                        "description": "timeout of one request (the source's timeout bounds them all)"},
    "retries": {"type": "integer", "minimum": 0, "default": DEFAULT_RETRIES,
                "description": "retry budget of the source: retries in all, shared by its requests"},
    "backoff": {"format": "duration", "default": DEFAULT_BACKOFF,
                "description": "base of the exponential backoff (full jitter)"},
    "max_backoff": {"format": "duration", "default": DEFAULT_MAX_BACKOFF,
                    "description": "cap of the jitter window of one backoff sleep"},
    "max_size": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_SIZE,
                 "description": "largest response body accepted, in bytes"},
    "max_parallel": {"type": "integer", "minimum": 1, "default": 1,
                     "description": "documents fetched at once, each on its own connection (1: one "
                                    "kept-alive connection, one request after another)"},
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
    """Requests against one base URL, bounded by `deadline` (monotonic seconds).

    One Client is one source's session: its connections, its retry budget and
    its `stats`. Use it as a context manager (or call close()) to close the
    kept-alive connections.
    """

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
        stats: MutableMapping[str, float] | None = None,
        source_address: tuple[str, int] | None = None,
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
        self.stats: MutableMapping[str, float] = stats if stats is not None else {}
        self.source_address = source_address  # local address to connect from (fleet benchmark)
        self.retries_left = retries
        self.busy = False  # the service answered 429/503: one request at a time from here on
        self._level = 0  # how busy the service says it is: +1 per round of 429/503, -1 per answer
        self._level_at = 0.0  # when _level last went up
        self._one_lane = threading.Lock()
        self._idle: list = []  # kept-alive connections, free for the next request
        self._addresses: dict[str, str] = {}  # host name -> resolved address, once per session
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, url: str, settings: Mapping, ctx) -> "Client":
        """A client for `url` using CLIENT_SETTINGS keys, the probe's deadline, cancel event and counters."""
        return cls(
            url,
            deadline=ctx.deadline,
            cancelled=ctx.cancelled,
            timeout=settings.get("request_timeout", DEFAULT_TIMEOUT),
            retries=settings.get("retries", DEFAULT_RETRIES),
            backoff=settings.get("backoff", DEFAULT_BACKOFF),
            max_backoff=settings.get("max_backoff", DEFAULT_MAX_BACKOFF),
            max_size=settings.get("max_size", DEFAULT_MAX_SIZE),
            stats=getattr(ctx, "counters", None),
        )

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

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
        HTTPFailure when the source's retry budget is spent). Raises
        SourceUnavailable when nothing listens at the host, HTTPFailure on
        timeout, oversize, a redirect off the host, or a spent budget.
        """
        url = self.url(path)
        attempts = _Attempts(url)
        no_retry = frozenset(no_retry_statuses)
        last_error = ""
        while True:
            self._check_cancelled(attempts)
            if time.monotonic() >= self.deadline:
                raise HTTPFailure(_out_of_time(url, attempts, last_error))
            attempts.tries += 1
            retry_after = None
            sent = time.monotonic()
            try:
                if self.busy:
                    with self._one_lane:
                        resp = self._follow(method, url, body, headers)
                else:
                    resp = self._follow(method, url, body, headers)
            except _Unreachable as exc:
                raise SourceUnavailable(f"{exc} at {_origin_of(url)} {attempts.summary()}") from None
            except _Retryable as exc:
                last_error = str(exc)
            else:
                if resp.status not in RETRY_STATUSES or resp.status in no_retry or not retry:
                    with self._lock:
                        self._level = max(0, self._level - 1)  # an answer: the service is less busy
                    return resp
                last_error = f"HTTP {resp.status} {resp.reason}".rstrip()
                if resp.status in BUSY_STATUSES:
                    self._count("throttled")
                    retry_after = _retry_after(resp.headers.get("retry-after"))
                    with self._lock:
                        self.busy = True
                        # One step per round: refusals of requests sent before the last step are old news.
                        if sent >= self._level_at:
                            self._level += 1
                            self._level_at = time.monotonic()
            if not retry:
                raise HTTPFailure(f"{last_error} at {url} {attempts.summary()}")
            with self._lock:
                spent = self.retries_left <= 0
                if not spent:
                    self.retries_left -= 1
            # The backoff grows with this request's failures, or with how busy the service has
            # said it is (429/503), whichever is more; the budget is the source's.
            n = max(attempts.tries, self._level)
            if spent:
                raise HTTPFailure(f"{last_error} at {url} {attempts.summary()}; "
                                  f"retry budget of the source ({self.retries}) spent")
            self._count("retries")
            left = self.deadline - time.monotonic()
            if retry_after is not None:
                if retry_after >= left:
                    raise HTTPFailure(f"{last_error} at {url} {attempts.summary()}; Retry-After "
                                      f"{retry_after:g}s would pass the deadline ({left:.2f}s left)")
                # Honour Retry-After, and spread the fleet behind it: a window of twice Retry-After
                # at first (a fleet refused at once comes back over 2R, not in one instant), doubling.
                # `Retry-After: 0` or a date in the past is no licence to hammer: the plain
                # backoff's base is the floor of both the wait and the window.
                retry_after = max(retry_after, self.backoff)
                window = min(self.max_backoff, retry_after * 2 ** n)
                sleep = retry_after + random.uniform(0, min(window, left - retry_after))
            else:
                # Full jitter: uniform in [0, min(cap, base * 2**n)].
                sleep = random.uniform(0, min(self.max_backoff, self.backoff * (2 ** (n - 1))))
                if sleep >= left:
                    # Sleeping would pass the deadline: fail now, not later.
                    raise HTTPFailure(_out_of_time(url, attempts, last_error))
            self._count("wait_s", sleep)
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
        # A kept-alive connection the service has closed meanwhile fails before any
        # answer: that is not the service's fault, so try once more on a new one.
        conn = self._take_idle() if method != "POST" else None
        if conn is not None:
            try:
                return self._exchange(conn, method, url, body, headers, reused=True)
            except _StaleConnection:
                pass
        return self._exchange(self._connect(url), method, url, body, headers, reused=False)

    def _connect(self, url: str):
        import http.client  # here, not at the top: a local-only boot never pays for it

        parts = urlsplit(url)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Retryable("timeout")
        address = self._resolve(parts.hostname)
        timeout = min(self.timeout, left)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=timeout, source_address=self.source_address)
        # Connect to the address resolved within the deadline; TLS still checks the host name.
        conn._create_connection = lambda addr, timeout=None, source=None: socket.create_connection(
            (address, addr[1]), timeout, source)
        try:
            conn.connect()
        except socket.timeout:
            conn.close()
            raise _Retryable("connect timeout") from None
        except OSError as exc:
            conn.close()
            if exc.errno in _UNREACHABLE_ERRNOS:
                raise _Unreachable(_errno_text(exc)) from None
            raise _Retryable(_errno_text(exc)) from None
        self._count("connections")
        return conn

    def _resolve(self, host: str) -> str:
        """The address of `host`, looked up within the deadline and the cancel event."""
        try:
            ipaddress.ip_address(host)
            return host  # a literal (169.254.169.254): nothing to look up
        except ValueError:
            pass
        if host in self._addresses:
            return self._addresses[host]
        # getaddrinfo cannot be interrupted: run it on a daemon thread and stop waiting for it.
        box: list = []
        done = threading.Event()

        def lookup() -> None:
            try:
                box.append(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
            except BaseException as exc:  # handed to the waiting thread
                box.append(exc)
            done.set()

        threading.Thread(target=lookup, daemon=True, name=f"cidag-resolve-{host}").start()
        while not done.wait(min(_POLL, max(0.0, self.deadline - time.monotonic()))):
            if self.cancelled is not None and self.cancelled.is_set():
                raise _Retryable("cancelled")
            if time.monotonic() >= self.deadline:
                raise _Retryable(f"name lookup of {host!r} timed out")
        result = box[0]
        if isinstance(result, socket.gaierror):
            if result.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
                raise _Retryable(f"name lookup of {host!r} failed for now")
            raise _Unreachable(f"unknown host {host!r}")
        if isinstance(result, BaseException):
            raise _Retryable(f"name lookup of {host!r} failed: {result}")
        self._addresses[host] = result
        return result

    def _exchange(self, conn, method: str, url: str, body: bytes | None, headers, *, reused: bool) -> Response:
        import http.client

        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        sock = conn.sock
        keep = False
        got_answer = False
        self._track(sock, True)
        try:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _Retryable("timeout")
            sock.settimeout(min(self.timeout, left))
            all_headers = {"User-Agent": "cidag", "Accept-Encoding": "identity", **self.headers}
            all_headers.update(headers or {})
            self._count("requests")
            conn.request(method, target, body=body, headers=all_headers)
            resp = conn.getresponse()
            got_answer = True
            length = resp.getheader("content-length")
            if length and length.isdigit() and int(length) > self.max_size:
                raise HTTPFailure(
                    f"response too large: {url} announces {int(length)} bytes, cap is {self.max_size}"
                )
            chunks: list[bytes] = []
            size = 0
            while not resp.isclosed():  # a response read to its end closes itself
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
            keep = conn.sock is not None and not resp.will_close
            return Response(resp.status, resp.reason, _Headers(resp.getheaders()), b"".join(chunks), url)
        except HTTPFailure:
            raise
        except (_Retryable, _Unreachable):
            raise
        except socket.timeout:
            # A stalled connection is closed (finally) and never asked again.
            raise _Retryable("timeout") from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            if self.cancelled is not None and self.cancelled.is_set():
                raise _Retryable("cancelled") from None
            if reused and not got_answer and isinstance(
                    exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                raise _StaleConnection() from None
            raise _Retryable(_describe(exc)) from None
        finally:
            self._track(sock, False)
            if keep:
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.close()

    def _take_idle(self):
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _count(self, key: str, amount: float = 1) -> None:
        with self._lock:
            value = self.stats.get(key, 0) + amount
            self.stats[key] = round(value, 3) if isinstance(amount, float) else value

    # -- cancellation: a watcher shuts open sockets so a blocked read returns at once

    def _track(self, sock: socket.socket | None, add: bool) -> None:
        if self.cancelled is None or sock is None:
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


class _StaleConnection(Exception):
    """A kept-alive connection was closed by the service before this request got an answer."""


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 86400))
    try:
        import email.utils  # only for a Retry-After date

        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())  # a date is wall-clock by definition


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


def _out_of_time(url: str, attempts: _Attempts, last_error: str) -> str:
    """The failure of a request the deadline ended. It is a timeout only when the last try
    timed out (or nothing was tried); a try that failed otherwise (connection reset, HTTP
    500) is reported as what it was, the deadline as why there was no other try."""
    if not last_error or "timeout" in last_error or "timed out" in last_error:
        return f"timeout at {url} {attempts.summary()}" + _why(last_error)
    return f"{last_error} at {url} {attempts.summary()}; no time left for another try before the source's deadline"


def _why(last_error: str) -> str:
    return f"; last error: {last_error}" if last_error and last_error != "timeout" else ""
