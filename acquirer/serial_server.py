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
from possim.wire.serial_session import SerialService
from possim.wire.trace import TraceFile

from .core import HostCore

log = logging.getLogger("possim.host")


class SerialHostServer(SerialService):
    """Serve the terminal on one serial port; typical use::

        server = SerialHostServer(core, "/dev/ttyUSB0", load_link_profile("stx-etx-lrc"))
        await server.start()
        ...
        await server.stop()
    """

    def __init__(self, core: HostCore, url: str, profile: LinkProfile, baud: int | None = None,
                 trace: TraceFile | None = None):
        super().__init__(url, profile, core.framing, baud)
        self.core = core
        self.trace = trace
        self.peer = f"serial:{url}"

    async def start(self) -> None:
        await super().start()
        log.info("host serving serial %s (%s, %d baud %d%s%g)", self.url, self.profile.name,
                 self.baud or self.profile.baud, self.profile.bytesize, self.profile.parity, self.profile.stopbits)

    async def handle(self, data: bytes) -> None:
        size = self.core.framing.length_size
        payload = data[size:] if self.profile.iso_length_header else data
        if self.trace is not None:
            self.trace.frame("IN", self.peer, encode_length(self.core.framing, len(payload)) + payload)
        reply = self.core.handle(payload, self.peer)
        if reply.later is not None:  # the serial session answers frame by frame: waiting here is its order
            reply = await reply.later
        if reply.data is None:
            log.info("%s: no answer sent%s", self.peer, " (a rule closes the link)" if reply.close else "")
            return
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if self.trace is not None:
            self.trace.frame("OUT", self.peer, reply.data)
        await self.reply(reply.data if self.profile.iso_length_header else reply.data[size:])
