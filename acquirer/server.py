"""The host's TCP front: a thin adapter that moves frames between sockets
and `HostCore.handle`, which owns every decision.

Each connection has its own FrameReader. A delayed answer (a `delay`
scenario rule) waits in its own task, so one late answer holds up neither
the next request on that connection nor any other terminal. A stream that
cannot be framed — a length the reader will not honour, or a partial frame
that stops arriving — closes only that connection. Logs and the optional
trace file carry redacted content only (wire.trace).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import TextIO

from possim.wire.framing import FrameReader, FramingError, encode_length
from possim.wire.trace import trace_record

from .core import HostCore

log = logging.getLogger("possim.host")

READ_SIZE = 65536
PARTIAL_FRAME_TIMEOUT = 30.0
"""Seconds a started frame may wait for its remaining bytes before the connection is dropped."""


class HostServer:
    """Serve a HostCore on TCP; typical use::

        server = HostServer(build_host("cup", "journal.sqlite"), trace="host.trace")
        await server.start("127.0.0.1", 8583)
        try:
            await server.serve_forever()
        finally:
            await server.stop()
    """

    def __init__(self, core: HostCore, trace: str | Path | None = None, partial_frame_timeout: float = PARTIAL_FRAME_TIMEOUT):
        self.core = core
        self.partial_frame_timeout = partial_frame_timeout
        self._trace_path = Path(trace) if trace is not None else None
        self._trace: TextIO | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self.address: tuple[str, int] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on host:port (port 0 picks a free one); returns the address actually bound."""
        if self._trace_path is not None:
            self._trace = self._trace_path.open("a", encoding="utf-8")
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])
        log.info("host listening on %s:%d (%s)", *self.address, self.core.dialect.name)
        return self.address

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop listening, drop every connection and cancel answers still waiting out a delay."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        self._stopped.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        address = writer.get_extra_info("peername")
        peer = f"{address[0]}:{address[1]}" if address else "?"
        frames = FrameReader(self.core.framing)
        late: set[asyncio.Task[None]] = set()
        clean_end = False
        log.debug("%s connected", peer)
        try:
            while True:
                if frames.pending:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), self.partial_frame_timeout)
                else:
                    data = await reader.read(READ_SIZE)
                if not data:
                    clean_end = True
                    break
                try:
                    payloads = frames.feed(data)
                except FramingError as exc:
                    log.warning("%s: %s; closing the connection", peer, exc)
                    self._note(peer, f"framing error: {exc}")
                    break
                if not self._answer(payloads, peer, writer, late):
                    break
                await writer.drain()
        except asyncio.TimeoutError:
            log.warning("%s: partial frame incomplete after %.1f s; closing the connection", peer, self.partial_frame_timeout)
            self._note(peer, "partial frame timed out")
        except ConnectionError:
            log.debug("%s: connection lost", peer)
        except asyncio.CancelledError:
            # stop() cancels; ending normally keeps asyncio's stream callback from logging the cancellation.
            pass
        finally:
            if clean_end and late:
                # The peer stopped sending; answers already promised still go out.
                try:
                    await asyncio.gather(*late, return_exceptions=True)
                except asyncio.CancelledError:
                    pass
            for pending in late:
                pending.cancel()
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass
            self._connections.discard(task)
            log.debug("%s disconnected", peer)

    def _answer(self, payloads: list[bytes], peer: str, writer: asyncio.StreamWriter, late: set[asyncio.Task[None]]) -> bool:
        """Hand each payload to the core and write or schedule its answer; False once the connection must close."""
        for payload in payloads:
            if self._trace is not None:
                self._record("IN", peer, encode_length(self.core.framing, len(payload)) + payload)
            reply = self.core.handle(payload, peer)
            if reply.data is not None:
                if reply.delay > 0:
                    sender = asyncio.create_task(self._send_later(reply.data, reply.delay, peer, writer))
                    late.add(sender)
                    sender.add_done_callback(late.discard)
                else:
                    self._send(reply.data, peer, writer)
            if reply.close:
                self._note(peer, "connection closed by the host")
                return False
        return True

    def _send(self, data: bytes, peer: str, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        if self._trace is not None:
            self._record("OUT", peer, data)

    async def _send_later(self, data: bytes, delay: float, peer: str, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        if writer.is_closing():
            return
        self._send(data, peer, writer)
        try:
            await writer.drain()
        except ConnectionError:
            log.debug("%s: connection lost before a delayed answer", peer)

    def _record(self, direction: str, peer: str, framed: bytes) -> None:
        assert self._trace is not None
        split = self.core.framing.length_size + self.core.framing.envelope_size
        self._trace.write(trace_record(self.core.clock(), direction, peer, self.core.codec, framed[split:], framed[:split]))
        self._trace.flush()

    def _note(self, peer: str, text: str) -> None:
        if self._trace is not None:
            self._trace.write(f"{self.core.clock().isoformat(timespec='milliseconds')} -- {peer} {text}\n")
            self._trace.flush()


class HostThread:
    """A HostServer on its own event loop in a background thread.

    For callers that drive the host from synchronous code — the demo, and
    tests whose terminals use plain blocking sockets. The core (and its
    journal) belong to that thread while it runs.
    """

    def __init__(self, core: HostCore, trace: str | Path | None = None, partial_frame_timeout: float = PARTIAL_FRAME_TIMEOUT):
        self.core = core
        self._trace = trace
        self._partial_frame_timeout = partial_frame_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: HostServer | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        loop = self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = HostServer(self.core, self._trace, self._partial_frame_timeout)
                self.address = loop.run_until_complete(self._server.start(host, port))
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_until_complete(self._server.serve_forever())
            loop.close()

        self._thread = threading.Thread(target=main, name="possim-host", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        assert self.address is not None
        return self.address

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._server is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=30)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> HostThread:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
