"""Opening serial ports from a link profile, and an asyncio byte stream over them.

pyserial is blocking and its backends differ: a PTY or COM port has a file
descriptor, `loop://` and `rfc2217://` do not. So the stream does not hand a
descriptor to the event loop; a reader thread polls the port with a short
timeout and passes chunks to the loop, and writes run in one worker thread
(one, so writes keep their order) bounded by the port's write timeout.

Ports open exclusively where the backend supports it (real ports and PTYs),
so two programs never interleave bytes on one cable: the second gets a
"busy" error instead. pyserial's own `inter_byte_timeout` is not used: it is
unreliable on POSIX; the serial session keeps its own inter-byte timer.

Linux PTYs ignore character size and parity (the pty driver forces CS8, no
parity): a 7E1 profile over a PtyPair still carries 8-bit bytes, so the 7-bit
rule is enforced in software (serial_frames.check_payload_fits), not by the line.
"""

from __future__ import annotations

import asyncio
import errno
import os
import termios
import threading
from concurrent.futures import ThreadPoolExecutor

import serial

from .link_profile import LinkProfile

READ_TIMEOUT = 0.05
WRITE_TIMEOUT = 2.0
_READ_SIZE = 4096

_OPEN_REASONS = {
    errno.ENOENT: "no such device",
    errno.ENODEV: "no such device",
    errno.ENXIO: "no such device",
    errno.EACCES: "permission denied",
    errno.EBUSY: "busy (another program has it open exclusively)",
    errno.EAGAIN: "busy (another program has it open exclusively)",
}


class SerialPortError(Exception):
    """A port that cannot be used; one line naming the port and the reason."""

    def __init__(self, port: str, reason: str):
        super().__init__(f"serial port {port}: {reason}")
        self.port = port
        self.reason = reason


def open_port(url: str, profile: LinkProfile, baud: int | None = None) -> serial.SerialBase:
    """Open `url` (a device path or a pyserial URL: socket://, rfc2217://, loop://) with the profile's line settings.

    `baud` overrides the profile's baud rate. Reads return after READ_TIMEOUT
    with what has arrived, writes fail after WRITE_TIMEOUT.
    """
    rate = profile.baud if baud is None else baud
    # LinkProfile checks its own line settings; the override is checked here.
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise SerialPortError(url, f"baud {rate!r} is not a valid baud rate (a positive integer)")
    try:
        port = serial.serial_for_url(url, do_not_open=True)
    except (ValueError, serial.SerialException) as exc:
        raise SerialPortError(url, f"unsupported URL ({_one_line(exc)})") from exc
    port.baudrate = rate
    port.bytesize = profile.bytesize
    port.parity = profile.parity  # pyserial's PARITY_* constants are these same letters
    port.stopbits = profile.stopbits
    port.timeout = READ_TIMEOUT
    port.write_timeout = WRITE_TIMEOUT
    port.exclusive = True
    try:
        port.open()
    except ValueError as exc:  # the driver refused the rate or framing
        raise SerialPortError(url, f"line settings rejected ({_one_line(exc)})") from exc
    except serial.SerialException as exc:
        raise SerialPortError(url, _OPEN_REASONS.get(exc.errno, _one_line(exc))) from exc
    except (OSError, termios.error) as exc:  # termios refused the line settings (pyserial has closed the port)
        if not (_pseudo_terminal(url) and (port.bytesize, port.parity) != (8, "N")):
            raise SerialPortError(url, f"line settings rejected ({_one_line(exc)})") from exc
        # A pseudo-terminal carries 8-bit bytes whatever its settings, and some kernels refuse 7-bit or parity
        # settings on one: open it 8N1. The 7-bit rule is enforced in software (serial_frames.check_payload_fits).
        port.bytesize, port.parity = 8, "N"
        try:
            port.open()
        except (OSError, termios.error, serial.SerialException) as again:
            raise SerialPortError(url, f"line settings rejected ({_one_line(again)})") from again
    return port


def _pseudo_terminal(url: str) -> bool:
    return os.path.realpath(url).startswith("/dev/pts/")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PortStream:
    """An asyncio byte stream over an open pyserial port: a reader thread feeds the event loop (works for every
    pyserial backend, file descriptor or not); writes run in a worker thread with the port's write timeout."""

    def __init__(self, port: serial.SerialBase, name: str):
        self._port = port
        self._name = name
        self._queue: asyncio.Queue[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"serial-write {name}")
        self._stopping = threading.Event()
        self._eof = False
        self._closed = False

    async def start(self) -> None:
        """Start the reader thread; call inside the event loop that will read."""
        if not self._port.is_open:
            raise SerialPortError(self._name, "port is closed")
        if self._port.timeout is None or self._port.timeout > READ_TIMEOUT:
            # The reader must wake up regularly so close() can stop it on backends without cancel_read.
            self._port.timeout = READ_TIMEOUT
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._reader = threading.Thread(target=self._read_loop, name=f"serial-read {self._name}", daemon=True)
        self._reader.start()

    async def read(self) -> bytes:
        """The next chunk of bytes; b"" once the port is closed or gone (and on every read after)."""
        if self._queue is None:
            raise RuntimeError(f"PortStream {self._name}: read before start()")
        if self._eof:
            return b""
        chunk = await self._queue.get()
        if not chunk:
            self._eof = True
        return chunk

    async def write(self, data: bytes) -> None:
        """Write all of `data`; SerialPortError on a write timeout or a closed port."""
        if self._closed:
            raise SerialPortError(self._name, "write to a closed port")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._write_all, bytes(data))

    async def close(self) -> None:
        """Stop the reader, close the port; pending and later reads return b""."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join)
        await asyncio.to_thread(self._writer.shutdown, True)
        self._port.close()
        if self._queue is not None:
            self._queue.put_nowait(b"")

    def _write_all(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except serial.PortNotOpenError as exc:
            raise SerialPortError(self._name, "write to a closed port") from exc
        except serial.SerialTimeoutException as exc:
            raise SerialPortError(
                self._name, f"write timed out after {self._port.write_timeout}s (the other end is not reading)"
            ) from exc
        except (serial.SerialException, OSError) as exc:
            raise SerialPortError(self._name, f"write failed: {_one_line(exc)}") from exc

    def _read_loop(self) -> None:
        """Poll the port until close(); a read error (port vanished, peer closed) ends the stream with b""."""
        while not self._stopping.is_set():
            try:
                chunk = self._port.read(1)
                waiting = self._port.in_waiting if chunk else 0
                if waiting:
                    chunk += self._port.read(min(waiting, _READ_SIZE))
            except (serial.SerialException, OSError, TypeError, AttributeError):
                # TypeError/AttributeError: pyserial's posix backend when the port is closed under the read.
                break
            if chunk and not self._deliver(chunk):
                return
        if not self._stopping.is_set():
            self._deliver(b"")

    def _deliver(self, chunk: bytes) -> bool:
        """Hand a chunk to the event loop; False once that loop is gone."""
        assert self._loop is not None and self._queue is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        except RuntimeError:
            return False
        return True
