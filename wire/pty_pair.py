"""Two pseudo-terminals joined like a null-modem cable, in-process.

A terminal and an ECR (or a test) each open one slave path with pyserial as if
it were a real COM port; a copier thread moves bytes between the two masters.
This is `socat pty,raw pty,raw` without needing socat installed.

Why the details matter:
- Both slaves are set raw so no echo, CR/LF mapping or XON/XOFF handling alters
  a byte: the link carries binary frames whose check byte may be any value.
- The pair keeps its own slave descriptors open, so a user closing its path is
  not the last close: no hangup, and the path can be opened again.
- Masters are non-blocking and each direction buffers at most `_MAX_PENDING`
  bytes, so a side nobody reads back-pressures the writer (its write times
  out, as on a real cable) instead of blocking the copier or growing memory.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from types import TracebackType

_READ_SIZE = 4096
_MAX_PENDING = 65536


class PtyPair:
    """Two pseudo-terminals joined like a null-modem cable (`socat pty pty`): what is written to one's slave path
    comes out of the other's. Paths stay usable until stop()."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._masters: tuple[int, int] | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.paths: tuple[str, str] | None = None

    def start(self) -> tuple[str, str]:
        """Create both PTYs and start copying; returns the two slave paths."""
        if self._thread is not None:
            raise RuntimeError("PtyPair: already started")
        try:
            master1, slave1 = os.openpty()
            self._fds += [master1, slave1]
            master2, slave2 = os.openpty()
            self._fds += [master2, slave2]
            wake_r, wake_w = os.pipe()
            self._fds += [wake_r, wake_w]
            for slave in (slave1, slave2):
                tty.setraw(slave)
            for master in (master1, master2):
                os.set_blocking(master, False)
            self.paths = (os.ttyname(slave1), os.ttyname(slave2))
        except OSError:
            self._close_fds()
            raise
        self._masters = (master1, master2)
        self._wake = (wake_r, wake_w)
        self._thread = threading.Thread(target=self._copy, name=f"pty-pair {self.paths[0]}<->{self.paths[1]}", daemon=True)
        self._thread.start()
        return self.paths

    def stop(self) -> None:
        """Stop the copier and close every descriptor; users of the paths then see EOF/EIO."""
        if self._thread is not None and self._wake is not None:
            self._stopping.set()
            os.write(self._wake[1], b"x")
            self._thread.join()
            self._thread = None
        self._close_fds()

    def __enter__(self) -> PtyPair:
        """Start the pair; the paths are then in `.paths`."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _close_fds(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def _copy(self) -> None:
        """Move bytes master1 -> master2 and master2 -> master1 until stop()."""
        assert self._masters is not None and self._wake is not None
        master1, master2 = self._masters
        wake = self._wake[0]
        # pending[src] holds bytes read from master src, not yet written to the other master.
        pending = {master1: bytearray(), master2: bytearray()}
        peer = {master1: master2, master2: master1}
        while not self._stopping.is_set():
            readable = [fd for fd in (master1, master2) if len(pending[fd]) < _MAX_PENDING]
            writable = [peer[fd] for fd in (master1, master2) if pending[fd]]
            ready_r, ready_w, _ = select.select(readable + [wake], writable, [])
            for src in (master1, master2):
                if src in ready_r:
                    pending[src] += _read(src, _MAX_PENDING - len(pending[src]))
                dst = peer[src]
                if pending[src] and (dst in ready_w or src in ready_r):
                    written = _write(dst, pending[src])
                    del pending[src][:written]


def _read(fd: int, limit: int) -> bytes:
    """Read what is there; empty after a spurious wake-up."""
    try:
        return os.read(fd, min(limit, _READ_SIZE))
    except BlockingIOError:
        return b""


def _write(fd: int, data: bytearray) -> int:
    """Write as much as the other PTY takes now; the rest waits for it to be writable."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
