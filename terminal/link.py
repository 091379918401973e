"""How a terminal reaches its host: send one frame, get one answer back.

A `Link` moves bytes and knows nothing of ISO 8583: which answer belongs
to which request is the terminal's business. What a link does guarantee is
that an answer it gives up on can never come back later as the answer to
something else: on a timeout it hangs up.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from possim.wire.framing import FrameReader, Framing

_READ_SIZE = 65536


class LinkError(Exception):
    """The host could not be reached, or stopped talking. One line naming host:port.

    `sent` says whether the request may have reached the host: when it did,
    the host may have acted on it and the terminal owes it a reversal.
    """

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.sent = sent


class LinkTimeout(LinkError):
    """No answer (or no connection) within the time allowed."""


class Link(Protocol):
    async def exchange(self, frame: bytes, timeout: float) -> bytes:
        """Send a whole frame (length header included); return the answer's payload (TPDU + header + body).

        Raises LinkTimeout, LinkError, or FramingError for an answer whose
        length header cannot be honoured.
        """
        ...

    async def close(self) -> None: ...


class TcpLink:
    """A `Link` over one TCP connection, opened on first use and reopened after any failure.

    One request is outstanding at a time: concurrent `exchange` calls on the
    same link (several terminals sharing it) wait their turn. Many links can
    run in one event loop; each must stay in the loop it was first used in.
    """

    def __init__(self, host: str, port: int, framing: Framing):
        self.host = host
        self.port = port
        self.framing = framing
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames = FrameReader(framing)
        self._ready: list[bytes] = []

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    async def exchange(self, frame: bytes, timeout: float) -> bytes:
        async with self._lock:
            sent = False
            try:
                async with asyncio.timeout(timeout):
                    await self._connect()
                    assert self._writer is not None
                    self._writer.write(frame)
                    sent = True
                    await self._writer.drain()
                    return await self._read_answer()
            except TimeoutError:
                await self._hang_up()
                what = f"no answer within {timeout:g} s" if sent else f"could not connect within {timeout:g} s"
                raise LinkTimeout(f"host {self.peer}: {what}", sent=sent) from None
            except OSError as exc:
                await self._hang_up()
                raise LinkError(f"host {self.peer}: {connect_problem(exc)}", sent=sent) from None
            except BaseException:
                await self._hang_up()
                raise

    async def close(self) -> None:
        async with self._lock:
            await self._hang_up()

    async def _connect(self) -> None:
        if self._writer is not None and not self._clean():
            await self._hang_up()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._frames = FrameReader(self.framing)
            self._ready = []

    def _clean(self) -> bool:
        """Whether the open connection can carry a new request: still up, and holding no stray bytes.

        Anything read before a request is sent cannot be its answer; a
        fresh connection is the only way to be sure it is not taken for one.
        """
        assert self._reader is not None and self._writer is not None
        return not (self._reader.at_eof() or self._writer.is_closing() or self._frames.pending or self._ready)

    async def _read_answer(self) -> bytes:
        assert self._reader is not None
        while not self._ready:
            data = await self._reader.read(_READ_SIZE)
            if not data:
                raise ConnectionResetError(
                    "connection closed by the host before it answered"
                    " (a host hangs up on frames it cannot read: do dialect and framing match?)"
                )
            self._ready.extend(self._frames.feed(data))
        return self._ready.pop(0)

    async def _hang_up(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        self._ready = []
        if writer is None:
            return
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def connect_problem(exc: OSError) -> str:
    """A socket error as a few words after "host H:P: " (the runner names an unreachable host the same way)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
