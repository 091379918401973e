"""One end of a serial link: frames out with ACK/NAK and retries, frames in acknowledged.

The link layer the serial profiles describe (wire/link_profile.py): each
frame is answered ACK when its check byte is right and NAK when not; the
sender retransmits on a NAK or when no answer comes within the ACK wait,
up to the profile's retry limit, then sends EOT and gives up. A frame that
stops arriving mid-way is dropped after the inter-byte timeout (a timer of
ours: pyserial's is unreliable on POSIX). Bytes outside frames are skipped.

Timeouts use `asyncio.timeout`, not `wait_for`, whose Python 3.11 form can
swallow a cancellation that races a result (a session being stopped would
then wait forever). Both directions run at once: a pump task reads the port all the time,
acknowledging data frames and routing ACK/NAK/EOT to whichever `send` is
waiting, so a terminal's request and the host's answer can cross. The
session knows nothing of ISO 8583; `inner_length` (`iso_inner_length`)
tells the frame reader how long a message that keeps its own length
header is, for profiles whose frames have no length field.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from .framing import Framing, FramingError, decode_length
from .link_profile import LinkProfile
from .serial_port import PortStream, open_port
from .serial_frames import BadFrame, Control, Frame, FrameReader, Noise, check_payload_fits, encode_frame

log = logging.getLogger("possim.serial")


class ByteStream(Protocol):
    async def read(self) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


class SerialLinkError(Exception):
    """The link failed: the peer never acknowledged, or the port went away. One line naming the port.

    `sent` says whether the frame may have reached the peer (it was written at least once).
    """

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.sent = sent


class SerialTimeout(SerialLinkError):
    """No frame came within the time allowed."""


def iso_inner_length(framing: Framing) -> Callable[[bytes], int | None]:
    """For frames without a length field: the data's length, read from the ISO message's own length header."""
    size = framing.length_size

    def length(data: bytes) -> int | None:
        if len(data) < size:
            return None
        try:
            return size + decode_length(framing, data[:size])
        except FramingError:
            return size  # unreadable: let the frame end there and fail its ETX/check byte
    return length


class SerialSession:
    def __init__(
        self,
        stream: ByteStream,
        profile: LinkProfile,
        name: str,
        inner_length: Callable[[bytes], int | None] | None = None,
    ):
        self.stream = stream
        self.profile = profile
        self.name = name
        self._reader = FrameReader(profile, inner_length)
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._controls: asyncio.Queue[str] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self.noise = 0
        """Bytes skipped outside frames so far."""
        self.bad_frames = 0

    async def start(self) -> None:
        self._pump = asyncio.create_task(self._run(), name=f"serial pump {self.name}")

    async def close(self) -> None:
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except asyncio.CancelledError:
                pass
        await self.stream.close()

    # ---- sending ----

    async def send(self, data: bytes) -> None:
        """Deliver one frame, acknowledged; SerialLinkError when the peer never says ACK."""
        check_payload_fits(self.profile, data)
        frame = encode_frame(self.profile, data)
        async with self._send_lock:
            self._drain_controls()
            if self.profile.use_enq:
                await self._handshake(bytes([self.profile.enq]), "ENQ", sent=False)
            await self._handshake(frame, "frame", sent=True)

    async def _handshake(self, data: bytes, what: str, sent: bool) -> None:
        attempts = 1 + self.profile.retries
        last = "no answer"
        for attempt in range(1, attempts + 1):
            await self._write(data)
            try:
                async with asyncio.timeout(self.profile.ack_timeout):
                    answer = await self._controls.get()
            except TimeoutError:
                last = f"no ACK within {self.profile.ack_timeout:g} s"
                continue
            if answer == "ACK":
                return
            last = f"{answer} from the peer"
            if answer == "EOT":
                break
        await self._write(bytes([self.profile.eot]))
        raise SerialLinkError(
            f"serial {self.name}: {what} not acknowledged after {attempt} tries ({last}); sent EOT", sent=sent,
        )

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            await self.stream.write(data)

    def _drain_controls(self) -> None:
        """An ACK or NAK that arrives while nothing waits belongs to no frame of ours."""
        while not self._controls.empty():
            self._controls.get_nowait()

    # ---- receiving ----

    async def receive(self, timeout: float | None) -> bytes:
        """The next acknowledged data frame; SerialTimeout when none comes in time."""
        if self._closed and self._inbox.empty():
            raise SerialLinkError(f"serial {self.name}: the port is closed", sent=False)
        try:
            async with asyncio.timeout(timeout):
                return await self._inbox.get()
        except TimeoutError:
            raise SerialTimeout(f"serial {self.name}: no frame within {timeout:g} s", sent=False) from None

    def discard_pending(self) -> None:
        """Forget frames nobody asked for: a late answer must not be taken for the next one."""
        while not self._inbox.empty():
            self._inbox.get_nowait()

    async def _run(self) -> None:
        try:
            while True:
                timeout = self.profile.inter_byte_timeout if self._reader.in_frame else None
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await self.stream.read()
                except TimeoutError:
                    log.warning("serial %s: frame stopped arriving for %g s; dropped", self.name, timeout)
                    self._reader.reset()
                    continue
                if not chunk:
                    log.info("serial %s: port closed", self.name)
                    self._closed = True
                    return
                for event in self._reader.feed(chunk):
                    await self._on(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the pump must not die silently: the port is unusable from here
            log.error("serial %s: link stopped: %s", self.name, exc)
            self._closed = True

    async def _on(self, event: Frame | BadFrame | Control | Noise) -> None:
        if isinstance(event, Frame):
            await self._write(bytes([self.profile.ack]))
            await self._inbox.put(event.data)
        elif isinstance(event, BadFrame):
            self.bad_frames += 1
            log.warning("serial %s: bad frame (%s); NAK", self.name, event.reason)
            await self._write(bytes([self.profile.nak]))
        elif isinstance(event, Control):
            if event.kind == "ENQ":
                await self._write(bytes([self.profile.ack]))
            else:
                await self._controls.put(event.kind)
        else:
            self.noise += event.count
            log.debug("serial %s: %d byte(s) of noise skipped", self.name, event.count)


async def open_session(url: str, profile: LinkProfile, framing: Framing, baud: int | None = None) -> SerialSession:
    """Open the port (SerialPortError names it when that fails) and start a session on it; the ISO messages
    inside are framed by `framing` (whose length header a profile with `iso_length_header` keeps)."""
    port = open_port(url, profile, baud)
    stream = PortStream(port, url)
    await stream.start()
    session = SerialSession(stream, profile, url, iso_inner_length(framing) if profile.iso_length_header else None)
    await session.start()
    return session


class SerialService:
    """Something that serves one serial port for as long as it runs: the host's serial front, the bridge.

    A subclass says what to do with each frame (`handle`); this class owns the port's session and the task.
    """

    def __init__(self, url: str, profile: LinkProfile, framing: Framing, baud: int | None = None):
        self.url, self.profile, self.framing, self.baud = url, profile, framing, baud
        self.session: SerialSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the port (SerialPortError names it when that fails) and begin serving."""
        self.session = await open_session(self.url, self.profile, self.framing, self.baud)
        self._task = asyncio.create_task(self._run(), name=f"serial {self.url}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.session is not None:
            await self.session.close()

    async def handle(self, data: bytes) -> None:
        """One acknowledged frame from the port."""
        raise NotImplementedError

    async def _run(self) -> None:
        assert self.session is not None
        while True:
            try:
                data = await self.session.receive(None)
            except SerialLinkError as exc:
                log.error("%s", exc)
                return
            await self.handle(data)

    async def reply(self, data: bytes) -> None:
        """Send one frame back; a peer that never acknowledges is logged (it will time out and reverse)."""
        assert self.session is not None
        try:
            await self.session.send(data)
        except SerialLinkError as exc:
            log.warning("%s", exc)
