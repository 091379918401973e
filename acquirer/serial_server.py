"""The host on a serial port: a thin adapter that moves link-layer frames between a port and `HostCore`.

Like the TCP front, it decides nothing: each acknowledged frame is one
request, handed to the core (which journals it before answering), and the
answer goes back as one frame after the delay a scenario rule asks for.
A serial line has one terminal on it and no connection to close, so a rule
that closes or drops the answer sends nothing. It runs in the host's event
loop beside the TCP server; the core is used from that loop only.
"""

from __future__ import annotations

import asyncio
import logging

from possim.wire.framing import encode_length
from possim.wire.link_profile import LinkProfile
from possim.wire.serial_session import SerialLinkError, SerialSession, open_session
from possim.wire.trace import TraceFile

from .core import HostCore

log = logging.getLogger("possim.host")


class SerialHostServer:
    """Serve the terminal on one serial port; typical use::

        server = SerialHostServer(core, "/dev/ttyUSB0", load_link_profile("stx-etx-lrc"))
        await server.start()
        ...
        await server.stop()
    """

    def __init__(self, core: HostCore, url: str, profile: LinkProfile, baud: int | None = None,
                 trace: TraceFile | None = None):
        self.core = core
        self.url = url
        self.profile = profile
        self.baud = baud
        self.trace = trace
        self.peer = f"serial:{url}"
        self._session: SerialSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the port (SerialPortError names it when that fails) and begin answering."""
        self._session = await open_session(self.url, self.profile, self.core.framing, self.baud)
        self._task = asyncio.create_task(self._serve(), name=f"serial host {self.url}")
        log.info("host serving serial %s (%s, %d baud %d%s%g)", self.url, self.profile.name,
                 self.baud or self.profile.baud, self.profile.bytesize, self.profile.parity, self.profile.stopbits)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()

    async def _serve(self) -> None:
        assert self._session is not None
        size = self.core.framing.length_size
        while True:
            try:
                data = await self._session.receive(None)
            except SerialLinkError as exc:
                log.error("%s", exc)
                return
            payload = data[size:] if self.profile.iso_length_header else data
            if self.trace is not None:
                self.trace.frame("IN", self.peer, encode_length(self.core.framing, len(payload)) + payload)
            reply = self.core.handle(payload, self.peer)
            if reply.data is None:
                log.info("%s: no answer sent%s", self.peer, " (a rule closes the link)" if reply.close else "")
                continue
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if self.trace is not None:
                self.trace.frame("OUT", self.peer, reply.data)
            try:
                await self._session.send(reply.data if self.profile.iso_length_header else reply.data[size:])
            except SerialLinkError as exc:
                log.warning("%s", exc)  # the terminal will reverse what it got no answer to
