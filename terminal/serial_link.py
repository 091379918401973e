"""A `Link` over a serial port: the terminal's request goes out as one link-layer frame, its answer comes back as one.

The port is a device path or any pyserial URL (`socket://`, `rfc2217://`),
opened on first use with the profile's line settings. Whether the ISO 8583
message inside a frame keeps its dialect length header is the profile's
`iso_length_header`; the terminal always hands over and gets back what a
TCP link would (frame with its length header out, payload in).

A serial line cannot be hung up like a TCP connection, so an answer the
terminal gave up on could still arrive later: frames nobody asked for are
discarded before each request, and the terminal's own check of MTI and STAN
refuses an answer to another request.
"""

from __future__ import annotations

import asyncio

from possim.wire.framing import Framing
from possim.wire.link_profile import LinkProfile, LinkProfileError
from possim.wire.serial_port import SerialPortError
from possim.wire.serial_session import SerialLinkError, SerialSession, SerialTimeout, open_session

from .link import LinkError, LinkTimeout


class SerialLink:
    def __init__(self, url: str, profile: LinkProfile, framing: Framing, baud: int | None = None):
        self.url = url
        self.profile = profile
        self.framing = framing
        self.baud = baud
        self._session: SerialSession | None = None
        self._lock = asyncio.Lock()

    @property
    def peer(self) -> str:
        return f"serial {self.url}"

    async def exchange(self, frame: bytes, timeout: float) -> bytes:
        async with self._lock:
            session = await self._open()
            session.discard_pending()
            data = frame if self.profile.iso_length_header else frame[self.framing.length_size:]
            try:
                await session.send(data)
            except (SerialLinkError, LinkProfileError) as exc:
                raise LinkError(str(exc), sent=getattr(exc, "sent", False)) from None
            except SerialPortError as exc:
                await self._drop()
                raise LinkError(str(exc), sent=True) from None
            try:
                answer = await session.receive(timeout)
            except SerialTimeout:
                raise LinkTimeout(f"{self.peer}: no answer within {timeout:g} s", sent=True) from None
            except SerialLinkError as exc:
                await self._drop()
                raise LinkError(str(exc), sent=True) from None
            return answer[self.framing.length_size:] if self.profile.iso_length_header else answer

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _open(self) -> SerialSession:
        if self._session is None:
            try:
                self._session = await open_session(self.url, self.profile, self.framing, self.baud)
            except SerialPortError as exc:
                raise LinkError(str(exc), sent=False) from None
            except OSError as exc:  # anything else the port refused: nothing was sent
                raise LinkError(f"{self.peer}: {exc}", sent=False) from None
        return self._session

    async def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
