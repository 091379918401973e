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
from .serial_session import SerialLinkError, SerialSession, open_session
from .trace import TraceFile

log = logging.getLogger("possim.bridge")


class SerialTcpBridge:
    def __init__(
        self, url: str, profile: LinkProfile, host: str, port: int, dialect: Dialect,
        baud: int | None = None, trace: TraceFile | None = None, answer_timeout: float = 60.0,
    ):
        self.url, self.profile, self.dialect = url, profile, dialect
        self.host, self.port = host, port
        self.baud, self.trace, self.answer_timeout = baud, trace, answer_timeout
        self.framing = dialect.framing
        self.relayed = 0
        """Answers carried back to the serial side."""
        self._session: SerialSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._tcp: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def start(self) -> None:
        self._session = await open_session(self.url, self.profile, self.framing, self.baud)
        self._task = asyncio.create_task(self._relay(), name=f"bridge {self.url}")
        log.info("bridge: serial %s (%s) <-> tcp %s:%d (%s)", self.url, self.profile.name, self.host, self.port,
                 self.dialect.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._hang_up()
        if self._session is not None:
            await self._session.close()

    async def _relay(self) -> None:
        assert self._session is not None
        size = self.framing.length_size
        while True:
            try:
                data = await self._session.receive(None)
            except SerialLinkError as exc:
                log.error("bridge: %s", exc)
                return
            framed = data if self.profile.iso_length_header else encode_length(self.framing, len(data)) + data
            self._traced("serial->tcp", f"serial:{self.url}", framed)
            answer = await self._ask(framed)
            if answer is None:
                continue
            framed_answer = encode_length(self.framing, len(answer)) + answer
            self._traced("tcp->serial", f"{self.host}:{self.port}", framed_answer)
            try:
                await self._session.send(framed_answer if self.profile.iso_length_header else framed_answer[size:])
                self.relayed += 1
            except SerialLinkError as exc:
                log.warning("bridge: %s", exc)

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
