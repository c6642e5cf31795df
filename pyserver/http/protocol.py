"""pyserver's HTTP/1.1 server: one asyncio protocol per connection over httptools (llhttp, the
parser Node.js uses), with the route table's handlers behind it.

Why not aiohttp's web application: per request it builds a Request and a Response object, a
header multidict, a task, and runs routing and middleware in Python, which cost as much CPU as
pyserver's own request handling. Here a request costs the parser's callbacks, one dict of
headers, and for inference no task at all: the body is decoded and queued on the core as soon as
its last byte arrives, and the answer is written from the completion callback.

Per connection:
- requests are answered in the order they arrived (HTTP/1.1 pipelining), each in a slot that
  fills when its response is ready; reading pauses when too many are waiting or the socket's
  write buffer is full;
- deadlines: a request's headers must arrive within `header_timeout` of its first byte, its body
  within `body_timeout` of its headers (progress does not extend it), and an idle keep-alive
  connection closes after `keepalive_timeout`. A request that misses its deadline is answered
  408 and the connection closed; one sweep timer per server checks every connection;
- limits: header count and size (431), body size (413, the body is read and thrown away up to a
  bound so that the client can read the answer), malformed framing (400, then close);
- a client that goes away cancels its requests: queued ones leave the model's queue, running
  ones finish unheard, handler tasks are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httptools

from pyserver.errors import ServerError, internal_message
from pyserver.http.router import Router
from pyserver.http.wire import Handler, Request, Response, error_response
from pyserver.logs import CURRENT_REQUEST, RequestContext

log = logging.getLogger("pyserver.http")
request_log = logging.getLogger("pyserver.http.request")

SWEEP_INTERVAL_S = 0.25
DEFAULT_MAX_REQUEST_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class HttpLimits:
    """What a client may take: sizes, and time (seconds; 0 turns a deadline off)."""

    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    header_timeout: float = 10.0  # a request's headers, from its first byte
    body_timeout: float = 60.0  # its body, from its headers (progress does not extend it)
    keepalive_timeout: float = 75.0  # an idle connection between requests
    max_header_count: int = 100
    max_header_bytes: int = 64 * 1024  # the request line and every header, together
    max_pipelined: int = 32


class StreamHandler(Protocol):
    """A route answered without a task (inference): `begin` runs when the headers are in (and
    may refuse the request before its body is read), `finish` when the body is; `finish`
    answers through `Slot.answer`, now or later."""

    def begin(self, slot: Slot, match_info: dict[str, str], headers: dict[str, str]) -> object:
        ...

    def finish(self, slot: Slot, state: object, body: bytes, headers: dict[str, str]) -> None:
        ...

    def abort(self, slot: Slot, state: object) -> None:
        """The request will not be finished (its client went away, or its body failed)."""


class Slot:
    """One request's place in its connection's answer order."""

    __slots__ = ("_conn", "cancel", "context", "keep_alive", "method", "path", "response",
                 "started", "task")

    def __init__(self, conn: HttpProtocol, method: str, path: str, keep_alive: bool) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.keep_alive = keep_alive
        self.response: Response | None = None
        self.task: asyncio.Task[None] | None = None
        # called (once) when the client goes away before its answer
        self.cancel: Callable[[], None] | None = None
        self.context = RequestContext()
        self.started = time.monotonic_ns()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._conn.server.loop

    def answer(self, response: Response) -> None:
        if self.response is None:
            self.cancel = None
            self.response = response
            self._conn.flush()

    def fail(self, exc: BaseException) -> None:
        self.answer(response_for(exc, self.method, self.path))


def response_for(exc: BaseException, method: str, path: str) -> Response:
    if isinstance(exc, ServerError):
        return error_response(str(exc), exc.http_status)
    log.error("internal error on %s %s", method, path, exc_info=exc)
    return error_response(internal_message(exc), 500)


class HttpServer:
    """The connections of one listening port, their routes, limits and deadline sweep."""

    def __init__(self, router: Router, limits: HttpLimits) -> None:
        self.router = router
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "no connection was made yet"
        return self._loop

    def __call__(self) -> HttpProtocol:
        """A protocol for a new connection (the loop's create_server calls this)."""
        if self._sweeper is None:
            self._loop = asyncio.get_running_loop()
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)
        return HttpProtocol(self)

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check_deadline(now)
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def busy(self) -> int:
        """Requests read and not yet answered, on every connection."""
        return sum(len(c.slots) for c in self.connections)

    async def close(self, timeout: float) -> None:
        """Answer what is in flight (up to `timeout`), then close every connection."""
        deadline = time.monotonic() + timeout
        for conn in list(self.connections):
            conn.close_when_idle()
        while self.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


# What a connection is waiting for, and so which deadline applies.
_IDLE, _HEADERS, _BODY, _BUSY = range(4)


class HttpProtocol(asyncio.Protocol):
    """One connection (see the module's docstring)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.slots: deque[Slot] = deque()
        self._phase = _IDLE
        self._deadline = 0.0
        self._closing = False  # close once every slot is answered
        self._reading_paused = False
        self._writing_paused = False
        # the request being read
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._discard = False  # answered early (413, 503, ...): the body is read and dropped
        self._refused = False  # the parser stopped: nothing more is read
        self._header_count = 0
        self._slot: Slot | None = None
        self._route: tuple[Any, Any] | None = None  # (handler, its begin() state or match_info)

    # -- the connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._abort_request()
        for slot in self.slots:
            if slot.response is None:
                if slot.cancel is not None:
                    cancel, slot.cancel = slot.cancel, None
                    cancel()
                if slot.task is not None:
                    slot.task.cancel()
        self.slots.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the parser cannot go on after a refusal; the connection is closing
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Refused):
                log.error("HTTP connection: internal error", exc_info=exc.__context__)
                self._reply_and_close(500, f"internal error: {exc.__context__!r}")
        except httptools.HttpParserUpgrade:
            self._reply_and_close(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reply_and_close(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._maybe_resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (self._reading_paused and not self._writing_paused and self.transport is not None
                and len(self.slots) < self.limits.max_pipelined):
            self._reading_paused = False
            self.transport.resume_reading()

    # -- deadlines ------------------------------------------------------------------------------

    def _set_deadline(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds if seconds > 0 else 0.0

    def _idle(self) -> None:
        self._phase = _IDLE
        self._set_deadline(self.limits.keepalive_timeout)

    def check_deadline(self, now: float) -> None:
        if not self._deadline or now < self._deadline or self.transport is None:
            return
        if self._phase == _IDLE:
            self.abort()  # an idle keep-alive connection: nothing to answer
        elif self._phase == _HEADERS:
            self._reply_and_close(408, "the request's headers did not arrive within "
                                       f"{self.limits.header_timeout:g} s")
        elif self._phase == _BODY:
            self._reply_and_close(408, "the request's body did not arrive within "
                                       f"{self.limits.body_timeout:g} s")

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._phase = _HEADERS
        self._set_deadline(self.limits.header_timeout)
        self._url.clear()
        self._headers = {}
        self._header_bytes = 0
        self._header_count = 0
        self._body = []
        self._body_size = 0
        self._discard = False
        self._slot = None
        self._route = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse(414, f"the request line is longer than {self.limits.max_header_bytes} "
                              "bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"the request's headers are larger than "
                              f"{self.limits.max_header_bytes} bytes")
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            self._refuse(431, f"the request has more than {self.limits.max_header_count} "
                              "headers")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known}, {text}"

    def on_headers_complete(self) -> None:
        parser = self.parser
        method = parser.get_method().decode("latin-1")
        url = self._url.decode("latin-1")
        path = url.partition("?")[0]
        slot = self._slot = Slot(self, method, path, parser.should_keep_alive())
        self.slots.append(slot)
        if len(self.slots) >= self.limits.max_pipelined:
            self._pause_reading()
        self._phase = _BODY
        self._set_deadline(self.limits.body_timeout)
        headers = self._headers
        length_text = headers.get("content-length")
        if length_text is not None and length_text.isdigit() and \
                int(length_text) > self.limits.max_request_size:
            self._early(slot, error_response(
                f"request body is larger than the limit of {self.limits.max_request_size} bytes "
                f"({length_text} bytes)", 413), close=True)
            return
        match = self.server.router.match(path)
        if match is None:
            self._early(slot, error_response(f"no such endpoint: {method} {path}", 404))
            return
        handler = match.methods.get(method)
        if handler is None:
            allowed = ", ".join(sorted(match.methods))
            self._early(slot, error_response(f"method {method} is not allowed on {path}", 405,
                                             [("Allow", allowed)]))
            return
        if isinstance(handler, StreamRoute):
            token = CURRENT_REQUEST.set(slot.context)
            try:
                state = handler.stream.begin(slot, match.match_info, headers)
            except Exception as exc:
                self._early(slot, response_for(exc, method, path))
                return
            finally:
                CURRENT_REQUEST.reset(token)
            self._route = (handler, state)
        else:
            self._route = (handler, match.match_info)
        if (headers.get("expect", "").lower() == "100-continue" and self.transport is not None
                and self.slots[0] is slot):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._discard:
            self._body_size += len(body)
            if self._body_size > 4 * self.limits.max_request_size:
                self.abort()  # not worth reading any further
            return
        self._body_size += len(body)
        if self._body_size > self.limits.max_request_size:
            self._abort_request()
            assert self._slot is not None
            self._early(self._slot, error_response(
                f"request body is larger than the limit of {self.limits.max_request_size} "
                "bytes", 413), close=True)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        slot, route = self._slot, self._route
        self._slot = self._route = None
        self._phase = _BUSY
        self._deadline = 0.0
        if self._discard or slot is None or route is None:
            self._discard = False
            self._after_message()
            return
        chunks = self._body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._body = []
        handler, state = route
        if isinstance(handler, StreamRoute):
            token = CURRENT_REQUEST.set(slot.context)
            try:
                handler.stream.finish(slot, state, body, self._headers)
            except Exception as exc:
                slot.fail(exc)
            finally:
                CURRENT_REQUEST.reset(token)
        else:
            request = Request(slot.method, slot.path, self._headers, body, state)
            slot.task = self.server.loop.create_task(self._run(slot, handler, request))
        self._after_message()

    def _after_message(self) -> None:
        if self.slots and not self.slots[-1].keep_alive:
            self._closing = True
        if not self.slots:
            if self._closing:
                self.abort()  # its answer went out while its body was still arriving
            else:
                self._idle()

    # -- answering ------------------------------------------------------------------------------

    async def _run(self, slot: Slot, handler: Handler, request: Request) -> None:
        CURRENT_REQUEST.set(slot.context)
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            slot.fail(exc)
            return
        slot.answer(response)

    def _early(self, slot: Slot, response: Response, close: bool = False) -> None:
        """Answer now, before the body is read (which is then read and thrown away)."""
        self._discard = True
        self._route = None
        self._body = []
        if close:
            slot.keep_alive = False
        slot.answer(response)

    def flush(self) -> None:
        """Write the answers that are ready, in order."""
        slots = self.slots
        transport = self.transport
        while slots and slots[0].response is not None:
            slot = slots.popleft()
            response = slot.response
            assert response is not None
            if transport is None:
                continue
            if request_log.isEnabledFor(logging.DEBUG):
                # before the write: a client that reads its answer finds the line logged
                token = CURRENT_REQUEST.set(slot.context)
                request_log.debug("%s %s -> %d in %.3f ms", slot.method, slot.path,
                                  response.status, (time.monotonic_ns() - slot.started) / 1e6)
                CURRENT_REQUEST.reset(token)
            keep_alive = slot.keep_alive and not (self._closing and not slots)
            head = response.head(keep_alive)
            chunks = response.chunks if slot.method != "HEAD" else ()
            if response.size < 65536 or not chunks:
                transport.write(b"".join((head, *chunks)) if chunks else head)
            else:
                transport.write(head)
                for chunk in chunks:
                    transport.write(memoryview(chunk).cast("B"))
            if not keep_alive:
                self._closing = True
                if self._phase == _BODY and self._discard:
                    return  # answered early: close once the client has sent its body
                transport.close()
                self.transport = None
                return
        if not slots:
            if self._closing and transport is not None:
                transport.close()
                self.transport = None
                return
            if self._phase == _BUSY:
                self._idle()
        self._maybe_resume_reading()

    def _abort_request(self) -> None:
        """The request being read will not complete."""
        slot, route = self._slot, self._route
        self._route = None
        if slot is not None and route is not None and isinstance(route[0], StreamRoute):
            route[0].stream.abort(slot, route[1])

    def _refuse(self, status: int, message: str) -> None:
        """From a parser callback: a request that cannot go on. Answer it (in order), stop
        reading and close once the answers ahead of it are written."""
        self._reply_and_close(status, message)
        raise _Refused

    def _reply_and_close(self, status: int, message: str) -> None:
        self._abort_request()
        self._refused = True
        self._pause_reading()
        slot = self._slot
        if slot is None or slot.response is not None:
            slot = Slot(self, "", "", False)
            self.slots.append(slot)
        self._slot = None
        self._discard = False
        slot.keep_alive = False
        self._closing = True
        self._phase = _BUSY
        self._deadline = 0.0
        slot.answer(error_response(message, status))

    def close_when_idle(self) -> None:
        """Shutting down: close once the requests read so far are answered."""
        self._closing = True
        if not self.slots and self.transport is not None:
            self.transport.close()
            self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class _Refused(Exception):
    """Stops the parser after a request was refused (the connection closes)."""


class StreamRoute:
    """Marks a route table entry answered by a StreamHandler (no task)."""

    __slots__ = ("stream",)

    def __init__(self, stream: StreamHandler) -> None:
        self.stream = stream


def stream(handler: StreamHandler) -> StreamRoute:
    return StreamRoute(handler)

