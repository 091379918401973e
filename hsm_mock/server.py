"""The HSM's TCP front: a thin adapter that moves frames between sockets and `Hsm`.

Frames carry a 2-byte binary length, as payShield's host port does. Each
request gets exactly one reply, in order; a bad or unknown command is
answered with its error code and the connection stays open. Only a stream
that cannot be framed (a length the reader will not honour) closes that one
connection. The log carries command codes, error codes and field-naming
reasons, never a request's fields: those hold PIN blocks and keys.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from possim.wire.framing import FrameReader, Framing, FramingError, frame
from possim.wire.server_thread import ServerThread

from .device import Hsm

log = logging.getLogger("possim.hsm")

HSM_FRAMING = Framing(length="binary2")


class HsmServer:
    """Serve an Hsm on TCP; typical use::

        server = HsmServer(Hsm(VariantLmk.test()))
        await server.start("127.0.0.1", 1500)
        try:
            await server.serve_forever()
        finally:
            await server.stop()
    """

    def __init__(self, hsm: Hsm, framing: Framing = HSM_FRAMING):
        self.hsm = hsm
        self.framing = framing
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopped = asyncio.Event()
        self.address: tuple[str, int] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on host:port (port 0 picks a free one); returns the address actually bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])
        log.info("hsm listening on %s:%d (commands %s)", *self.address, " ".join(self.hsm.commands))
        return self.address

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()


class _Connection(asyncio.Protocol):
    """One host's link: each complete frame is answered at once, in arrival order."""

    def __init__(self, server: HsmServer):
        self.server = server
        self.frames = FrameReader(server.framing)
        self.peer = "?"
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        address = transport.get_extra_info("peername")
        self.peer = f"{address[0]}:{address[1]}" if address else "?"
        self.server._connections.add(self)
        log.debug("%s connected", self.peer)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        try:
            payloads = self.frames.feed(data)
        except FramingError as exc:
            log.warning("%s: %s; closing the connection", self.peer, exc)
            self.close()
            return
        for payload in payloads:
            answer = self.server.hsm.answer(payload)
            if answer.error_code != "00":
                log.info("%s: %r -> error %s: %s", self.peer, answer.command, answer.error_code, answer.reason)
            else:
                log.debug("%s: %r -> 00", self.peer, answer.command)
            self._transport.write(frame(self.server.framing, answer.reply))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        log.debug("%s disconnected%s", self.peer, f" ({exc})" if exc else "")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class HsmThread(ServerThread):
    """An HsmServer in a background thread: a host on another loop (or synchronous code) calls it over TCP."""

    def __init__(self, hsm: Hsm, framing: Framing = HSM_FRAMING):
        super().__init__(lambda: HsmServer(hsm, framing), "possim-hsm")
        self.hsm = hsm
