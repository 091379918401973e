"""How a host talks to the HSM: one interface, in-process (`LocalHsm`) or over TCP (`TcpHsm`).

A host sends a command code and its fields and gets back the response code,
error code and reply fields; the header, framing and reconnects are the
client's business. `HsmUnavailable` means "no usable answer" (refused,
timed out, closed, or a reply that does not belong to the request); an
error code in a reply is an answer, not an exception.

Messages name the HSM's address and what went wrong, never a request's or a
reply's fields: those hold PIN blocks and keys.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Protocol

from .device import Hsm

HEADER_LENGTH = 4
"""The server's `Hsm` reads a 4-character header (device.DEFAULT_HEADER_LENGTH)."""


class HsmUnavailable(RuntimeError):
    """No usable answer from the HSM; the message names its address."""


@dataclass(frozen=True)
class HsmReply:
    """One reply without its header: response code (e.g. DD), error code, fields (latin-1 text)."""

    response: str
    error_code: str
    fields: str

    @property
    def ok(self) -> bool:
        return self.error_code == "00"


class HsmClient(Protocol):
    def call(self, command: str, fields: str) -> HsmReply: ...

    def close(self) -> None: ...


def _check_command(command: str) -> None:
    if len(command) != 2 or not command.isascii() or not command.isalnum():
        raise ValueError(f"command: {len(command)} characters given; a command code is 2 letters or digits")


def _response_code(command: str) -> str:
    """The reply code an HSM gives to `command`: its second character advanced (DC -> DD)."""
    return command[0] + chr(ord(command[1]) + 1)


def _parse(reply: bytes, header: str, command: str, where: str) -> HsmReply:
    """Split a reply body; any reply that does not answer this request is HsmUnavailable."""
    text = reply.decode("latin-1")
    if len(text) < len(header) + 4:
        raise HsmUnavailable(f"HSM at {where}: reply of {len(reply)} bytes is too short to hold a response and error code")
    if text[: len(header)] != header:
        raise HsmUnavailable(f"HSM at {where}: reply header does not echo request header {header}")
    response = text[len(header) : len(header) + 2]
    expected = _response_code(command)
    if response.upper() != expected.upper():
        raise HsmUnavailable(f"HSM at {where}: response code {response!r} does not answer command {command} (expected {expected})")
    error_code = text[len(header) + 2 : len(header) + 4]
    if not error_code.isdigit():
        raise HsmUnavailable(f"HSM at {where}: error code after {response} is not 2 digits")
    return HsmReply(response, error_code, text[len(header) + 4 :])


class LocalHsm:
    """An `Hsm` in this process behind the client interface (tests, demos, one-box labs)."""

    def __init__(self, hsm: Hsm) -> None:
        self.hsm = hsm
        self._header = "0" * hsm.header_length

    def call(self, command: str, fields: str) -> HsmReply:
        _check_command(command)
        reply = self.hsm.handle((self._header + command + fields).encode("latin-1"))
        return _parse(reply, self._header, command, "local")

    def close(self) -> None:
        """Nothing to release: the Hsm object lives as long as its owner keeps it."""


class _Broken(Exception):
    """The kept connection failed before a reply: worth one reconnect."""


class TcpHsm:
    """A blocking client for `HsmServer`: 2-byte big-endian length frames, 4-digit running header.

    It connects on the first call and keeps the connection. If a kept connection
    turns out to be closed or reset, it reconnects once and resends; a refused
    connect, a timeout or a second failure is `HsmUnavailable`. A lock makes one
    request-reply exchange at a time, so threads may share one client.
    """

    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.address = f"{host}:{port}"
        self._sock: socket.socket | None = None
        self._sequence = 0
        self._lock = threading.Lock()

    def call(self, command: str, fields: str) -> HsmReply:
        _check_command(command)
        with self._lock:
            self._sequence = (self._sequence + 1) % 10_000
            header = f"{self._sequence:04d}"
            body = (header + command + fields).encode("latin-1")
            if len(body) > 0xFFFF:
                raise ValueError(f"fields: request of {len(body)} bytes does not fit a 2-byte length")
            reused = self._sock is not None
            try:
                reply = self._exchange(body)
            except _Broken as exc:
                if not reused:
                    raise HsmUnavailable(f"HSM at {self.address}: {exc}") from None
                try:
                    reply = self._exchange(body)  # the kept connection had gone stale: one fresh try
                except _Broken as again:
                    raise HsmUnavailable(f"HSM at {self.address}: {again} (after reconnecting)") from None
            try:
                return _parse(reply, header, command, self.address)
            except HsmUnavailable:
                self._drop()  # the stream is out of step with our requests
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _exchange(self, body: bytes) -> bytes:
        """Send one frame and read one; a failure drops the connection."""
        sock = self._connect()
        try:
            sock.sendall(len(body).to_bytes(2, "big") + body)
            size = int.from_bytes(self._read(sock, 2), "big")
            return self._read(sock, size)
        except socket.timeout:
            self._drop()
            raise HsmUnavailable(f"HSM at {self.address}: no reply within {self.timeout:g}s") from None
        except OSError as exc:
            self._drop()
            raise _Broken(f"connection failed ({exc.strerror or type(exc).__name__})") from None
        except _Broken:
            self._drop()
            raise

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except socket.timeout:
                raise HsmUnavailable(f"HSM at {self.address}: connect timed out after {self.timeout:g}s") from None
            except OSError as exc:
                raise HsmUnavailable(f"HSM at {self.address}: cannot connect ({exc.strerror or type(exc).__name__})") from None
        return self._sock

    @staticmethod
    def _read(sock: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise _Broken("connection closed by the HSM")
            data += chunk
        return data

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def connect_hsm(address: str | None, hsm: Hsm | None = None) -> HsmClient:
    """`host:port` -> a TcpHsm; None -> a LocalHsm over `hsm` (default: a new Hsm on the test LMK)."""
    if address is None:
        return LocalHsm(hsm if hsm is not None else Hsm())
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"address {address!r} must be HOST:PORT, e.g. 127.0.0.1:1500")
    return TcpHsm(host, int(port))
