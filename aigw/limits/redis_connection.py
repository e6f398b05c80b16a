"""One pipelined connection to Redis for the counter store's scripts.

A check is on every request's path, so it is kept to a write, a read and a future: an
asyncio protocol with hiredis's reply parser, instead of redis-py's pool checkout, send task
and per-step timeouts (measured on the benchmark machine: a take's round trip ~55 µs instead
of ~165 µs, and about a quarter of the CPU; two calls per request).

Every request's commands share the connection: Redis answers in order, so each command waits
for the reply at its place in a queue. Each has a deadline; when the oldest one passes it
unanswered (Redis frozen or unreachable), the connection is closed and everything waiting on
it fails. The next command connects again, so a restarted Redis is used without a gateway
restart. The address comes from a `redis://` or `rediss://` URL (user, password, database,
TLS); anything else in the URL is refused when the config loads.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import hiredis

_TLS_QUERY = {"ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname"}
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


class RedisReplyError(Exception):
    """Redis answered with an error (`NOSCRIPT …`, `NOAUTH …`, `ERR …`)."""


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and the name Redis gives it (EVALSHA)."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> Script:
        # The name Redis gives a script, not a security measure.
        return cls(text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())


def describe_url(url: str) -> tuple[str, list[str]]:
    """`host:port` of a Redis URL for messages, and the secrets they must not show."""
    try:
        parts = _split(url)
    except ValueError:
        return "(unparseable URL)", []  # what it names may be part of the password
    secrets = [s for s in (parts.password, unquote(parts.password or "")) if s]
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or 'localhost'}:{port}", secrets


def unavailable_text(where: str, secrets: list[str], exc: BaseException) -> str:
    """Why Redis could not answer, naming the server and never its password."""
    detail = str(exc) or "timed out"
    for secret in secrets:
        detail = detail.replace(secret, "***")
    return f"Redis at {where} is unavailable: {type(exc).__name__}: {detail}"


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    db: int
    tls: ssl.SSLContext | None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """The parts of a `redis://[[user]:password@]host[:port][/db]` URL (`rediss://` for
        TLS, with `ssl_cert_reqs`, `ssl_ca_certs` and `ssl_check_hostname` as redis-py
        reads them). ValueError names what is not supported, never quoting the URL: where
        it is misread, any piece of it may be part of the password."""
        parts = _split(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("the counter store's URL must start with redis:// or rediss://")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        allowed = {"db"} | (_TLS_QUERY if parts.scheme == "rediss" else set())
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise ValueError(
                f"the counter store does not support {', '.join(unknown)} in its URL "
                f"(supported: {', '.join(sorted(allowed))})"
            )
        path = parts.path.strip("/")
        db_text = query.get("db", path or "0")
        if not (db_text.isascii() and db_text.isdigit()):
            raise ValueError("the database in the counter store's URL is not a number")
        try:
            port = parts.port or 6379
        except ValueError:  # its text quotes the port, which may be part of the password
            raise ValueError(
                "the counter store's URL has a bad port (not a number from 0 to 65535)"
            ) from None
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            db=int(db_text),
            tls=_tls_context(query) if parts.scheme == "rediss" else None,
        )

    def setup(self) -> list[tuple[bytes | str | int, ...]]:
        """The commands that make a new connection ready: AUTH and SELECT."""
        commands: list[tuple[bytes | str | int, ...]] = []
        if self.password is not None:
            user = (self.username,) if self.username else ()
            commands.append(("AUTH", *user, self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def _split(url: str) -> SplitResult:
    """The URL's parts, or ValueError if they were not read as written."""
    try:
        parts = urlsplit(url)
    except ValueError:  # its text quotes the host part, which may hold the password
        raise ValueError(
            "the counter store's URL cannot be parsed: an IPv6 address needs both brackets;"
            " '[', ']' and non-ASCII characters in the password must be percent-encoded"
        ) from None
    # A '/', '?' or '#' in the password ends the host part early: the password's '@' lands
    # after it, and the rest of the password reads as the port, database or query.
    if "#" in url or "@" in parts.path + parts.query:
        raise ValueError(
            "the counter store's URL must percent-encode reserved characters in the"
            " password ('/' as %2F, '?' as %3F, '#' as %23, '@' as %40)"
        )
    return parts


def _tls_context(query: dict[str, str]) -> ssl.SSLContext:
    cafile = query.get("ssl_ca_certs") or None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ssl_ca_certs {cafile!r} cannot be read: {exc}") from None
    check = query.get("ssl_check_hostname", "true").lower()
    if check not in _TRUE | _FALSE:
        raise ValueError(f"ssl_check_hostname must be true or false, not {check!r}")
    context.check_hostname = check in _TRUE
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, not {reqs!r}")
    if _CERT_REQS[reqs] != ssl.CERT_REQUIRED:
        context.check_hostname = False  # hostname checks need a verified certificate
    context.verify_mode = _CERT_REQS[reqs]
    return context


def pack(args: tuple[bytes | str | int, ...]) -> bytes:
    """A command in Redis's wire format (RESP arrays of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class _Replies(asyncio.Protocol):
    """Hands each reply to the command at the head of the queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = math.inf  # when the watchdog fires
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is one without subclassing asyncio's).
        self._transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes, deadline: float) -> asyncio.Future[Any]:
        if self.lost or self._transport is None:
            raise ConnectionError("the connection to Redis is closed")
        future = self._loop.create_future()
        self._waiting.append((future, deadline))
        self._transport.write(command)
        # One timer per connection, not one per command: it is set for the earliest deadline
        # of what is waiting, and moved only when a command comes with an earlier one.
        if deadline < self._watch_at:
            self._watch(deadline)
        return future

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._waiting:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                future, _ = self._waiting.popleft()
                if not future.done():  # its caller may have given up (cancelled)
                    future.set_result(reply)
        except hiredis.ProtocolError as exc:
            self.close(ConnectionError(f"unreadable reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def close(self, reason: Exception) -> None:
        self._fail(reason)
        if self._transport is not None:
            self._transport.abort()  # nothing queued is worth flushing

    def _watch(self, deadline: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self._loop.call_at(deadline, self._check_overdue)
        self._watch_at = deadline

    def _check_overdue(self) -> None:
        self._watchdog, self._watch_at = None, math.inf
        if not self._waiting:
            return
        earliest = min(deadline for _, deadline in self._waiting)
        # The timer may fire a clock tick early; that is still the deadline it was set for.
        if earliest <= self._loop.time() + 0.001:
            self.close(TimeoutError("Redis did not answer in time"))
        else:
            self._watch(earliest)

    def _fail(self, reason: Exception) -> None:
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog, self._watch_at = None, math.inf
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(reason)


class RedisConnection:
    """Sends commands on one connection, opened on first use and again after it was lost."""

    def __init__(self, address: RedisAddress) -> None:
        self._address = address
        self._replies: _Replies | None = None
        self._opening: asyncio.Task[_Replies] | None = None
        self._closed = False

    async def call(self, args: tuple[bytes | str | int, ...], deadline: float) -> Any:
        """The reply to one command; `deadline` (event-loop time) bounds connecting too.
        Raises RedisReplyError, ConnectionError / OSError, or TimeoutError."""
        replies = self._replies
        if replies is None or replies.lost:
            replies = await self._connected(deadline)
        return _checked(await replies.send(pack(args), deadline))

    async def run(
        self, script: Script, keys: tuple[str, ...], args: tuple[str | int, ...], deadline: float
    ) -> Any:
        """A script's reply: EVALSHA, or EVAL (which also caches it) when Redis lost it after
        a restart or a flush. No other retry: a script run twice could count twice."""
        tail = (len(keys), *keys, *args)
        try:
            return await self.call(("EVALSHA", script.sha, *tail), deadline)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.call(("EVAL", script.text, *tail), deadline)

    def close(self) -> None:
        # A connection being opened is closed when it is ready (cancelling it would cancel
        # the requests waiting for it, not fail them).
        self._closed = True
        if self._replies is not None:
            self._replies.close(ConnectionError("the counter store is closed"))
            self._replies = None

    async def _connected(self, deadline: float) -> _Replies:
        # Callers arriving while a connection is being opened wait for that one.
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._open(deadline))
            self._opening.add_done_callback(_retrieve)
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(self._opening)

    async def _open(self, deadline: float) -> _Replies:
        loop = asyncio.get_running_loop()
        address = self._address
        async with asyncio.timeout_at(deadline):
            _, replies = await loop.create_connection(
                lambda: _Replies(loop),
                address.host,
                address.port,
                ssl=address.tls,
                server_hostname=address.host if address.tls else None,
            )
            try:
                for command in address.setup():
                    _checked(await replies.send(pack(command), deadline))
            except BaseException:
                replies.close(ConnectionError("connection setup failed"))
                raise
        if self._closed:
            replies.close(ConnectionError("the counter store is closed"))
            raise ConnectionError("the counter store is closed")
        self._replies = replies
        return replies


def _checked(reply: Any) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        raise RedisReplyError(str(reply))
    return reply


def _retrieve(task: asyncio.Task[_Replies]) -> None:
    # Every caller may have given up before the connection attempt ended: its error is
    # still read here, so asyncio does not log it as never retrieved.
    if not task.cancelled():
        task.exception()
