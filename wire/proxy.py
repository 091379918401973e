"""A TCP proxy between terminals and a host that sees whole frames and nothing else.

`possim record` puts it in front of a host to capture a session; the
scenario runner puts it there to play a host-side fault on one request
(hold its answer, never forward it, or hang up instead of answering) while
the real host still receives and acts on that request. It reads only the
length header (wire.framing): no dialect, no field is looked at here.

Each client connection gets one upstream connection of its own, opened
when the client connects. Requests go up in the order they came; answers
come back in order and pair first-in first-out with the requests still
owed one, as a terminal that keeps one request outstanding expects. When
either side closes, or sends bytes that cannot be framed, the pair ends:
both connections close, every request still owed an answer is reported
without one, and no other pair notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from .clock import Clock, system_clock
from .framing import FrameReader, Framing, FramingError

log = logging.getLogger("possim.proxy")

FAULT_KINDS = ("delay", "drop", "close")
CONNECT_TIMEOUT = 10.0
"""Seconds the upstream host has to accept a connection before the client is turned away."""
_READ_SIZE = 65536


@dataclass(frozen=True)
class Exchange:
    """One request that passed the proxy and what became of it."""

    peer: str
    """The client's "host:port"."""
    request: bytes
    """The whole frame as received, length header included."""
    response: bytes | None
    """The whole answer frame as forwarded to the client; None when the client got none: the connection ended
    first, or a drop or close fault kept it back."""
    sent_at: datetime
    """When the request arrived from the client."""
    answered_at: datetime | None
    """When the host's answer arrived (before any delay); None when none came."""
    fault: str | None
    """The fault applied to this request: delay, drop or close."""


@dataclass(frozen=True)
class ProxyFault:
    """What to do to one request's answer: hold it `seconds` (delay), never forward it (drop), or close the
    connection once it has come instead of forwarding it (close). The request itself always goes up."""

    kind: str
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"proxy fault {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.seconds < 0:
            raise ValueError(f"proxy fault delay of {self.seconds} s: must not be negative")


RequestHook = Callable[[str, bytes], "ProxyFault | None"]
ExchangeHook = Callable[[Exchange], None]


class FrameProxy:
    """Forward framed traffic from clients to `upstream`; typical use::

        proxy = FrameProxy(("10.0.0.5", 8583), dialect.framing, on_exchange=exchanges.append)
        host, port = await proxy.start("127.0.0.1", 0)
        ...  # terminals connect to (host, port)
        await proxy.stop()
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        framing: Framing,
        *,
        on_request: RequestHook | None = None,
        on_exchange: ExchangeHook | None = None,
        clock: Clock = system_clock,
    ):
        """`on_request(peer, frame)` is asked for each client frame before it goes up: None forwards it plainly,
        a ProxyFault applies to its answer. `on_exchange` is told of every request once its fate is known."""
        self.upstream = upstream
        self.framing = framing
        self.on_request = on_request
        self.on_exchange = on_exchange
        self.clock = clock
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._pairs: set[asyncio.Task[None]] = set()
        """Each pair's own task; the server's connection callbacks only wait for them."""
        self._stopped = asyncio.Event()

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect; only once `start` has returned."""
        if self._address is None:
            raise RuntimeError("the proxy is not started")
        return self._address

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        self._stopped.clear()
        self._server = await asyncio.start_server(self._accept, host, port)
        bound = self._server.sockets[0].getsockname()
        self._address = (bound[0], bound[1])
        return self._address

    async def serve_forever(self) -> None:
        """Return once `stop` has run (from a signal handler, or a hook that has seen enough)."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, end every pair (their owed requests are reported unanswered), and return when done."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        pairs = list(self._pairs)
        for task in pairs:
            task.cancel()
        await asyncio.gather(*pairs, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        self._stopped.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The pair runs in a task of its own that `stop` may cancel: asyncio (3.11) logs a connection
        # callback that ends cancelled as an error, so this one always ends normally.
        task = asyncio.create_task(_Pair(self, reader, writer).run())
        self._pairs.add(task)
        try:
            with suppress(asyncio.CancelledError):
                await task
        finally:
            self._pairs.discard(task)


@dataclass
class _Owed:
    """A request that went up and is owed an answer."""

    frame: bytes
    sent_at: datetime
    fault: ProxyFault | None
    answered_at: datetime | None = None


class _Pair:
    """One client connection and its own upstream connection."""

    def __init__(self, proxy: FrameProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.proxy = proxy
        self.client = (reader, writer)
        address = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{address[0]}:{address[1]}"
        self.owed: deque[_Owed] = deque()
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def run(self) -> None:
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    self.upstream = await asyncio.open_connection(*self.proxy.upstream)
            except (OSError, TimeoutError) as exc:
                host, port = self.proxy.upstream
                log.warning("proxy: %s: upstream %s:%d refused the connection (%s); client closed", self.peer, host, port,
                            exc or type(exc).__name__)
                return
            ups = asyncio.create_task(self._from_upstream(), name="upstream")
            downs = asyncio.create_task(self._from_client(), name="client")
            try:
                done, _ = await asyncio.wait((ups, downs), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (ups, downs):
                    task.cancel()
                await asyncio.gather(ups, downs, return_exceptions=True)
            for task in done:
                self._log_end(task)
        finally:
            await self._close()

    def _log_end(self, task: asyncio.Task[None]) -> None:
        exc = task.exception()
        if isinstance(exc, FramingError):
            log.warning("proxy: %s: %s from %s; connection pair closed", self.peer, exc,
                        "the client" if task.get_name() == "client" else "upstream")
        elif isinstance(exc, OSError):
            log.info("proxy: %s: %s; connection pair closed", self.peer, exc.strerror or exc)
        elif exc is not None:
            log.error("proxy: %s: %s: %s; connection pair closed", self.peer, type(exc).__name__, exc)

    async def _from_client(self) -> None:
        reader, _ = self.client
        assert self.upstream is not None
        up = self.upstream[1]
        async for whole in _frames(reader, self.proxy.framing):
            hook = self.proxy.on_request
            fault = hook(self.peer, whole) if hook is not None else None
            self.owed.append(_Owed(whole, self.proxy.clock(), fault))
            up.write(whole)
            await up.drain()

    async def _from_upstream(self) -> None:
        assert self.upstream is not None
        _, down = self.client
        async for whole in _frames(self.upstream[0], self.proxy.framing):
            if not self.owed:
                # Nothing asked for it: the proxy stays transparent and lets the client judge it.
                down.write(whole)
                await down.drain()
                continue
            owed = self.owed[0]
            owed.answered_at = self.proxy.clock()
            kind = owed.fault.kind if owed.fault is not None else None
            if kind == "delay":
                assert owed.fault is not None
                await asyncio.sleep(owed.fault.seconds)
            elif kind in ("drop", "close"):
                self._report(self.owed.popleft(), None)
                if kind == "close":
                    return
                continue
            down.write(whole)
            await down.drain()
            self._report(self.owed.popleft(), whole)

    def _report(self, owed: _Owed, response: bytes | None) -> None:
        hook = self.proxy.on_exchange
        if hook is not None:
            hook(Exchange(self.peer, owed.frame, response, owed.sent_at, owed.answered_at,
                          owed.fault.kind if owed.fault is not None else None))

    async def _close(self) -> None:
        """Close both connections; the requests still owed an answer end without one."""
        while self.owed:
            self._report(self.owed.popleft(), None)
        for pair in (self.client, self.upstream):
            if pair is None:
                continue
            pair[1].close()
            with suppress(OSError, asyncio.CancelledError):
                await pair[1].wait_closed()


async def _frames(reader: asyncio.StreamReader, framing: Framing) -> AsyncIterator[bytes]:
    """Whole frames, length header included and byte for byte as received, until the stream ends.

    Raises FramingError on a length header that cannot be honoured: the
    stream cannot be resynchronised after that.
    """
    frames = FrameReader(framing)
    raw = bytearray()
    while True:
        data = await reader.read(_READ_SIZE)
        if not data:
            return
        raw += data
        for payload in frames.feed(data):
            end = framing.length_size + len(payload)
            yield bytes(raw[:end])
            del raw[:end]
