"""The finance bureau's TCP front: a thin adapter that moves length-prefixed
documents between sockets and `FinanceBureau`, which owns every decision.

Each connection reads frames in order and answers each as the bureau says:
at once, after a delay (on a timer, so neither that connection's next
request nor any other connection waits for it), or not at all. A stream
that cannot be framed closes that connection only. When the peer ends its
side, answers still waiting out a delay go out before the link closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Callable

from possim.wire.clock import Clock, system_clock
from possim.wire.nontax import FrameReader, NontaxError, frame
from possim.wire.server_thread import ServerThread

from .bureau import FinanceBureau, open_bureau

log = logging.getLogger("possim.finance")


class FinanceServer:
    """Serve a FinanceBureau on TCP; typical use::

        server = FinanceServer(open_bureau("finance.sqlite"))
        await server.start("127.0.0.1", 9100)
        try:
            await server.serve_forever()
        finally:
            await server.stop()
    """

    def __init__(self, bureau: FinanceBureau):
        self.bureau = bureau
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._links: dict[asyncio.Task[None], _Link] = {}
        self._stopped = asyncio.Event()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on host:port (port 0 picks a free one); returns the address actually bound."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])
        log.info("%s listening on %s:%d", self.bureau.name, *self.address)
        return self.address

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop listening and drop every connection, with the answers still waiting out a delay."""
        if self._server is not None:
            self._server.close()
        # Each link is closed rather than its task cancelled: Python 3.11's stream server logs a
        # cancelled handler as an error. A closed link ends its handler's read loop.
        for link in self._links.values():
            link.drop()
        await asyncio.gather(*self._links, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        link = self._links[task] = _Link(writer)
        frames = FrameReader()
        try:
            while data := await reader.read(65536):
                try:
                    documents = frames.feed(data)
                except NontaxError as exc:
                    log.warning("%s: %s; closing the connection", link.peer, exc)
                    return
                for document in documents:
                    answer = self.bureau.handle(document)
                    if answer.xml is not None:
                        link.send(frame(answer.xml), answer.delay)
                await writer.drain()
            await link.owed()
        except ConnectionError as exc:
            log.debug("%s: %s", link.peer, exc)
        finally:
            link.drop()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            del self._links[task]


class _Link:
    """One bank connection's writing side: answers now, or on a timer."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        address = writer.get_extra_info("peername")
        self.peer = f"{address[0]}:{address[1]}" if address else "?"
        self._late: set[asyncio.TimerHandle] = set()
        self._done = asyncio.Event()
        self._done.set()

    def send(self, data: bytes, delay: float) -> None:
        if delay <= 0:
            self.writer.write(data)
            return
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._late.discard(handle)
            if not self.writer.is_closing():
                self.writer.write(data)
            if not self._late:
                self._done.set()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._late.add(handle)
        self._done.clear()

    async def owed(self) -> None:
        """Wait until every delayed answer has gone out."""
        await self._done.wait()

    def drop(self) -> None:
        for handle in self._late:
            handle.cancel()
        self._late.clear()
        self._done.set()
        self.writer.close()


class FinanceThread(ServerThread):
    """A FinanceServer on its own event loop in a background thread, for tests and the demo.

    The bureau's store is shared with the calling thread (it serialises
    access itself), so a test can read what the bureau recorded.
    """

    def __init__(self, bureau: FinanceBureau):
        super().__init__(lambda: FinanceServer(bureau), "possim-finance")
        self.bureau = bureau


async def run_finance(host: str, port: int, db_path: str | Path, fixtures_dir: str | Path | None = None,
                      faults_file: str | Path | None = None,
                      ready: Callable[[tuple[str, int]], None] | None = None, clock: Clock = system_clock) -> None:
    """Serve the bureau until cancelled (the CLI cancels it on a signal); `ready` hears the bound address.

    Configuration errors (FixtureError, NoticeError, FaultError — all
    ValueError) are raised before anything listens.
    """
    bureau = open_bureau(db_path, fixtures_dir, faults_file, clock)
    server = FinanceServer(bureau)
    try:
        address = await server.start(host, port)
        if ready is not None:
            ready(address)
        await server.serve_forever()
    finally:
        await server.stop()
        bureau.store.close()
