"""A serial↔TCP bridge: a terminal on a serial cable reaches any TCP host, ours or a third party's.

Each acknowledged frame from the port is one message: it goes to the host
over TCP with the dialect's length header, and the host's answer comes back
to the port as one frame. Both sides are traced redacted. The bridge keeps
one TCP connection and reopens it when the host drops it; a request the
host does not answer in time gets no answer on the serial side either, so
the terminal's own timeout and reversal take over — the bridge never
invents an answer.
"""

from __future__ import annotations

import asyncio
import logging

from .dialect import Dialect
from .framing import FrameReader, encode_length
from .link_profile import LinkProfile
from .serial_session import SerialService
from .trace import TraceFile

log = logging.getLogger("possim.bridge")


class SerialTcpBridge(SerialService):
    def __init__(
        self, url: str, profile: LinkProfile, host: str, port: int, dialect: Dialect,
        baud: int | None = None, trace: TraceFile | None = None, answer_timeout: float = 60.0,
    ):
        super().__init__(url, profile, dialect.framing, baud)
        self.dialect, self.host, self.port = dialect, host, port
        self.trace, self.answer_timeout = trace, answer_timeout
        self._tcp: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def start(self) -> None:
        await super().start()
        log.info("bridge: serial %s (%s) <-> tcp %s:%d (%s)", self.url, self.profile.name, self.host, self.port,
                 self.dialect.name)

    async def stop(self) -> None:
        await super().stop()
        await self._hang_up()

    async def handle(self, data: bytes) -> None:
        framed = data if self.profile.iso_length_header else encode_length(self.framing, len(data)) + data
        self._traced("serial->tcp", f"serial:{self.url}", framed)
        answer = await self._ask(framed)
        if answer is None:
            return
        framed_answer = encode_length(self.framing, len(answer)) + answer
        self._traced("tcp->serial", f"{self.host}:{self.port}", framed_answer)
        await self.reply(framed_answer if self.profile.iso_length_header else framed_answer[self.framing.length_size:])

    async def _ask(self, framed: bytes) -> bytes | None:
        """The host's answer payload, or None (logged) when the host cannot be reached or stays silent."""
        for attempt in range(2):  # a connection the host closed meanwhile is reopened once
            try:
                reader, writer = await self._connect()
                writer.write(framed)
                await writer.drain()
                async with asyncio.timeout(self.answer_timeout):
                    return await self._read_answer(reader)
            except TimeoutError:
                log.warning("bridge: host %s:%d gave no answer within %g s", self.host, self.port, self.answer_timeout)
                await self._hang_up()
                return None
            except (OSError, ConnectionError) as exc:
                await self._hang_up()
                if attempt:
                    log.warning("bridge: host %s:%d: %s", self.host, self.port, exc)
        return None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._tcp is None or self._tcp[0].at_eof():
            await self._hang_up()
            self._tcp = await asyncio.open_connection(self.host, self.port)
        return self._tcp

    async def _read_answer(self, reader: asyncio.StreamReader) -> bytes:
        frames = FrameReader(self.framing)
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionResetError("the host closed the connection before it answered")
            ready = frames.feed(chunk)
            if ready:
                return ready[0]

    async def _hang_up(self) -> None:
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp[1].close()
            try:
                await tcp[1].wait_closed()
            except OSError:
                pass

    def _traced(self, direction: str, peer: str, framed: bytes) -> None:
        if self.trace is not None:
            self.trace.frame(direction, peer, framed)
