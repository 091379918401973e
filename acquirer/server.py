"""The host's TCP front: a thin adapter that moves frames between sockets
and `HostCore`, which owns every decision.

Each connection is an asyncio protocol with its own FrameReader. The frames
that arrive in one event-loop turn, from every connection, are answered
together in the next (`HostCore.handle_batch`: one journal commit for all of
them), and only then written — so an answer never leaves before its journal
row is committed, and a busy host pays for one commit per turn instead of
one per request. A delayed answer (a `delay` scenario rule) waits on a
timer, so it holds up neither the next request on that connection nor any
other terminal. A stream that cannot be framed — a length the reader will
not honour, or a partial frame that stops arriving — closes only that
connection. Logs and the optional trace file carry redacted content only
(wire.trace).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from possim.wire.framing import FrameReader, FramingError, encode_length
from possim.wire.server_thread import ServerThread
from possim.wire.trace import TraceFile

from .core import HostCore, Reply
from .pipeline import log_fault
from .http_api import HttpFront, OrderApi
from .order_timers import OrderTimers
from .partners import Partners

log = logging.getLogger("possim.host")

PARTIAL_FRAME_TIMEOUT = 30.0
"""Seconds a started frame may wait for its remaining bytes before the connection is dropped."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (an optional, faster drop-in), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class HostServer:
    """Serve a HostCore on TCP; typical use::

        server = HostServer(build_host("cup", "journal.sqlite"), trace="host.trace")
        await server.start("127.0.0.1", 8583)
        try:
            await server.serve_forever()
        finally:
            await server.stop()
    """

    def __init__(self, core: HostCore, trace: str | Path | None = None, partial_frame_timeout: float = PARTIAL_FRAME_TIMEOUT,
                 http: tuple[str, int] | None = None, partners: Partners | None = None):
        """`http`: also serve the order API (acquirer/http_api.py) there; `partners` may call it."""
        self.core = core
        self.partial_frame_timeout = partial_frame_timeout
        self._partners = partners or Partners([])
        self._http_at = http
        self._http: HttpFront | None = None
        self._timers: OrderTimers | None = None
        self.http_address: tuple[str, int] | None = None
        self._trace_path = Path(trace) if trace is not None else None
        self._trace: TraceFile | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._waiting: list[_Connection] = []
        """Connections holding frames for the next answering turn, in arrival order."""
        self._turn: asyncio.Handle | None = None
        self._stopped = asyncio.Event()
        self.address: tuple[str, int] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on host:port (port 0 picks a free one); returns the address actually bound."""
        if self._trace_path is not None:
            self._trace = TraceFile(self._trace_path, self.core.codec, self.core.clock)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])
        log.info("host listening on %s:%d (%s)", *self.address, self.core.dialect.name)
        self._timers = OrderTimers(self.core, self._partners)
        self._timers.start()
        self.core.fees.resume()
        if self._http_at is not None:
            self._http = HttpFront(OrderApi(self.core, self._partners))
            self.http_address = await self._http.start(*self._http_at)
        return self.address

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop listening, drop every connection and cancel answers still waiting out a delay."""
        if self._server is not None:
            self._server.close()
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._timers is not None:
            await self._timers.stop()
            self._timers = None
        await self.core.fees.stop()
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        self._waiting.clear()
        closing = [c.closed for c in self._connections]
        for connection in list(self._connections):
            connection.drop()
        await asyncio.gather(*closing)
        if self._server is not None:
            await self._server.wait_closed()
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        self._stopped.set()

    # ---- the answering turn ----

    def _frames_arrived(self, connection: _Connection) -> None:
        """A connection has frames to answer: make sure a turn is coming, and count it in."""
        self._waiting.append(connection)
        if self._turn is None:
            # A call_soon callback runs after the read callbacks of the current loop iteration
            # (in asyncio's loop and uvloop alike): the connections readable together share one
            # turn, and one commit.
            self._turn = asyncio.get_running_loop().call_soon(self._answer_turn)

    def _answer_turn(self) -> None:
        self._turn = None
        waiting, self._waiting = self._waiting, []
        arrivals = [(c.peer, c.take_frames()) for c in waiting]
        for connection, replies in zip(waiting, self.core.handle_batch(arrivals)):
            connection.answer(replies)

    # ---- trace ----

    def _trace_in(self, peer: str, payload: bytes) -> None:
        if self._trace is not None:
            self._trace.frame("IN", peer, encode_length(self.core.framing, len(payload)) + payload)

    def _trace_out(self, peer: str, data: bytes) -> None:
        if self._trace is not None:
            self._trace.frame("OUT", peer, data)

    def _note(self, peer: str, text: str) -> None:
        if self._trace is not None:
            self._trace.note(peer, text)


class _Connection(asyncio.Protocol):
    """One terminal's link: frames in to the server's next turn, answers out.

    When the host decides to close it (a framing error, a partial frame
    timing out, an answer that closes), it reads no more, answers the frames
    it already holds and cancels delayed answers. When the peer ends its
    side, every answer still owed — queued or waiting out a delay — goes out
    before the link closes.
    """

    def __init__(self, server: HostServer):
        self.server = server
        self.frames = FrameReader(server.core.framing)
        self.peer = "?"
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._queued: list[bytes] = []
        self._late: dict[int, asyncio.TimerHandle | asyncio.Task[None]] = {}
        """Answers owed later: delayed ones (timer handles) and ones still being worked out (tasks)."""
        self._late_ids = itertools.count()
        self._partial_timer: asyncio.TimerHandle | None = None
        self._closing = False
        """Set when the host closes the link or loses it: nothing more is read, no delayed answer waits."""
        self._peer_done = False

    # ---- asyncio callbacks ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one without subclassing it
        address = transport.get_extra_info("peername")
        self.peer = f"{address[0]}:{address[1]}" if address else "?"
        self.server._connections.add(self)
        log.debug("%s connected", self.peer)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            payloads = self.frames.feed(data)
        except FramingError as exc:
            log.warning("%s: %s; closing the connection", self.peer, exc)
            self.server._note(self.peer, f"framing error: {exc}")
            self._close_by_host()
            return
        self._watch_partial_frame()
        if not payloads:
            return
        for payload in payloads:
            self.server._trace_in(self.peer, payload)
        if not self._queued:
            self.server._frames_arrived(self)
        self._queued.extend(payloads)

    def eof_received(self) -> bool:
        self._peer_done = True
        self._cancel_partial_timer()
        self._close_when_done()
        return True  # keep our side open for the answers still owed

    def pause_writing(self) -> None:
        # A peer that does not read its answers is not read from either.
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        # Frames already queued are still handled (and journaled) in the coming turn; only their answers are lost.
        self._closing = True
        self._cancel_partial_timer()
        self._cancel_late()
        self.server._connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        log.debug("%s disconnected%s", self.peer, f" ({exc})" if exc else "")

    # ---- called by the server ----

    def take_frames(self) -> list[bytes]:
        frames, self._queued = self._queued, []
        return frames

    def answer(self, replies: list[Reply]) -> None:
        """Write (or schedule) the committed answers to the frames taken; close if one says so."""
        for reply in replies:
            if reply.later is not None:
                self._wait_for(reply.later)
                continue
            if reply.data is not None:
                if reply.delay <= 0:
                    self._send(reply.data)
                elif not self._closing:
                    key = next(self._late_ids)
                    self._late[key] = asyncio.get_running_loop().call_later(reply.delay, self._send_late, key, reply.data)
            if reply.close:
                self.server._note(self.peer, "connection closed by the host")
                self._close_by_host()
        self._close_when_done()

    def drop(self) -> None:
        """Close at once, answering nothing more: the host is stopping."""
        self._cancel_late()
        self._queued.clear()
        if self._transport is not None:
            self._transport.close()

    # ---- internals ----

    def _send(self, data: bytes) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        self._transport.write(data)
        self.server._trace_out(self.peer, data)

    def _wait_for(self, later: Coroutine[Any, Any, Reply]) -> None:
        """An answer the core is still working out: awaited on its own, so the link keeps being served and
        answered meanwhile; owed like a delayed answer (the link stays open for it). It is worked out even when
        the link is closing: the request arrived, and what it does (a payment, its confirmation) must finish
        and be journaled like any other; only the answer may find nobody to go to."""
        key = next(self._late_ids)

        async def answer_when_ready() -> None:
            try:
                reply = await later
            except Exception as exc:  # one request's failure must not end the link
                log_fault(f"answering {self.peer}", exc)
                reply = Reply()
            finally:
                self._late.pop(key, None)
            self.answer([reply])

        self._late[key] = asyncio.get_running_loop().create_task(answer_when_ready())

    def _send_late(self, key: int, data: bytes) -> None:
        del self._late[key]
        self._send(data)
        self._close_when_done()

    def _close_by_host(self) -> None:
        self._closing = True
        self._cancel_partial_timer()
        self._cancel_late()
        self._close_when_done()

    def _close_when_done(self) -> None:
        done = not self._queued and not self._late
        if (self._closing or self._peer_done) and done and self._transport is not None:
            self._transport.close()

    def _cancel_late(self) -> None:
        for handle in self._late.values():
            handle.cancel()
        self._late.clear()

    def _watch_partial_frame(self) -> None:
        """A frame started must be completed within the timeout, counted from the last bytes that came."""
        self._cancel_partial_timer()
        if self.frames.pending:
            loop = asyncio.get_running_loop()
            self._partial_timer = loop.call_later(self.server.partial_frame_timeout, self._partial_frame_timed_out)

    def _partial_frame_timed_out(self) -> None:
        self._partial_timer = None
        log.warning("%s: partial frame incomplete after %.1f s; closing the connection", self.peer, self.server.partial_frame_timeout)
        self.server._note(self.peer, "partial frame timed out")
        self._close_by_host()

    def _cancel_partial_timer(self) -> None:
        if self._partial_timer is not None:
            self._partial_timer.cancel()
            self._partial_timer = None


class HostThread(ServerThread):
    """A HostServer on its own event loop in a background thread.

    For callers that drive the host from synchronous code — the demo, and
    tests whose terminals use plain blocking sockets. The core (and its
    journal) belong to that thread while it runs.
    """

    def __init__(self, core: HostCore, trace: str | Path | None = None, partial_frame_timeout: float = PARTIAL_FRAME_TIMEOUT,
                 http: tuple[str, int] | None = None, partners: Partners | None = None):
        super().__init__(lambda: HostServer(core, trace, partial_frame_timeout, http, partners), "possim-host")
        self.core = core

    @property
    def http_address(self) -> tuple[str, int] | None:
        server = self._server
        return server.http_address if isinstance(server, HostServer) else None
