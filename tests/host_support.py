"""Shared pieces of the host tests (no tests here): a host on an ephemeral
loopback port, a blocking-socket terminal that speaks the wire contract of
docs/messages.md, and request builders for each dialect.

The terminal side is written against `possim.wire` only, as a third-party
terminal would be: the host is reached only through TCP bytes.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

from possim.acquirer.core import HostCore, build_host
from possim.acquirer.journal import Journal
from possim.acquirer.server import HostThread
from possim.fixtures import load_fixture
from possim.hsm_mock.key_download import KeyDownloadError, unpack
from possim.hsm_mock.message_mac import MessageMac
from possim.wire.clock import SteppingClock
from possim.wire.codec import Codec
from possim.wire.dialect import Dialect
from possim.wire.framing import FrameReader, frame, split_envelope
from possim.wire.message import Message

DIALECTS = ("iso87ascii", "iso87binary", "cup")
TID, MID = "10000001", "898310048160001"
TID_NO_KEYED, MID_NO_KEYED = "10000002", "898310048160002"
START = datetime(2026, 6, 15, 10, 0, 0)
CARDS = {c["name"]: c for c in load_fixture("cards.yaml")["cards"]}
OPENING = {a["id"]: a["balance"] for a in load_fixture("accounts.yaml")["accounts"]}
TMKS = {t["tid"]: bytes.fromhex(t["tmk"]) for t in load_fixture("terminals.yaml")["terminals"] if "tmk" in t}
MACED_KINDS = ("10", "20", "22", "40", "42", "50", "32")


def host_clock() -> SteppingClock:
    return SteppingClock(START, timedelta(milliseconds=1))


@dataclass
class RunningHost:
    core: HostCore
    thread: HostThread
    db_path: Path
    dialect: Dialect
    port: int
    mac_keys: dict[str, bytes] = field(default_factory=dict)
    """Working MAC keys per terminal, as sign-ons downloaded them: shared by this host's test terminals."""

    def terminal(self, timeout: float = 5.0) -> TestTerminal:
        return TestTerminal(self.port, self.dialect, timeout, self.mac_keys)

    def journal(self) -> Journal:
        """A second connection to the journal file, as any reader (the demo, sqlite3) would open it."""
        return Journal(self.db_path)

    def balance(self, account_id: str) -> int | None:
        journal = self.journal()
        try:
            return journal.balance(account_id)
        finally:
            journal.close()


@contextmanager
def running_host(
    tmp_path: Path,
    dialect: str,
    fixtures_dir: Path | None = None,
    db_name: str = "journal.sqlite",
    trace: Path | None = None,
    partial_frame_timeout: float = 0.5,
    core: HostCore | None = None,
) -> Iterator[RunningHost]:
    db_path = tmp_path / db_name
    core = core or build_host(dialect, db_path, fixtures_dir, clock=host_clock())
    thread = HostThread(core, trace=trace, partial_frame_timeout=partial_frame_timeout)
    _, port = thread.start()
    try:
        yield RunningHost(core, thread, db_path, core.dialect, port)
    finally:
        thread.stop()
        core.close()


class TestTerminal:
    """A minimal terminal over a blocking socket: frames out, frames in.

    Like a real terminal it takes the working keys a sign-on answer carries
    (under the fixture TMK) and MACs its financial requests and reversals from then on.
    """

    __test__ = False

    def __init__(self, port: int, dialect: Dialect, timeout: float = 5.0, mac_keys: dict[str, bytes] | None = None):
        self.dialect = dialect
        self.codec = Codec(dialect)
        self.mac = MessageMac(self.codec)
        self.mac_keys = mac_keys if mac_keys is not None else {}
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.frames = FrameReader(dialect.framing)
        self.received: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TestTerminal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def framed(self, message: Message) -> bytes:
        key = self.mac_keys.get(message.get(41) or "")
        if key is not None and message.mti[1:3] in MACED_KINDS:
            return frame(self.dialect.framing, self.mac.sign(message, key))
        return frame(self.dialect.framing, self.codec.encode(message))

    def send(self, message: Message) -> None:
        self.sock.sendall(self.framed(message))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive_payload(self, timeout: float | None = None) -> bytes:
        """The next answer's payload (TPDU + header + body); socket.timeout when none arrives in time."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while not self.received:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("host closed the connection")
            self.received.extend(self.frames.feed(data))
        return self.received.pop(0)

    def receive(self, timeout: float | None = None) -> Message:
        _, body = split_envelope(self.dialect.framing, self.receive_payload(timeout))
        answer = self.codec.decode(body)
        self._take_keys(answer)
        return answer

    def _take_keys(self, answer: Message) -> None:
        block = self.dialect.get_role(answer, "working_keys")
        tmk = TMKS.get(answer.get(41) or "")
        if answer.mti != "0810" or block is None or tmk is None:
            return
        try:
            _, keys = unpack(tmk, bytes.fromhex(block))
        except (KeyDownloadError, ValueError):
            return
        self.mac_keys[answer[41]] = keys.mac_key

    def exchange(self, message: Message) -> Message:
        self.send(message)
        return self.receive()

    def closed_by_host(self, timeout: float = 5.0) -> bool:
        """True once the host closes this connection (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


# ---- request builders (docs/messages.md) ----


def _sent(dialect: Dialect, message: Message, when: datetime) -> Message:
    if dialect.convention("transmission_datetime"):
        message[7] = when.strftime("%m%d%H%M%S")
    return message


def sign_on(dialect: Dialect, stan: str, tid: str = TID, mid: str = MID, code: str = "001", when: datetime = START) -> Message:
    message = Message("0800", {11: stan, 41: tid, 42: mid})
    if dialect.name == "cup":
        message[60] = "00" + "000001" + code
        message[63] = "001"
    else:
        dialect.set_role(message, "network_code", code)
    return _sent(dialect, message, when)


def purchase(
    dialect: Dialect,
    stan: str,
    card: str = "approve",
    amount: int = 1250,
    tid: str = TID,
    mid: str = MID,
    keyed: bool = False,
    mti: str = "0200",
    processing_code: str = "000000",
    currency: str = "156",
    pan: str | None = None,
    when: datetime = START,
) -> Message:
    info = CARDS[card]
    pan = pan or info["pan"]
    message = Message(mti, {
        3: processing_code, 4: f"{amount:012d}", 11: stan,
        12: when.strftime("%H%M%S"), 13: when.strftime("%m%d"),
        25: "00", 41: tid, 42: mid, 49: currency,
    })
    if keyed:
        message[2], message[14], message[22] = pan, info["expiry"], "011"
    else:
        message[35] = f"{pan}D{info['expiry']}{info['service_code']}00000"
        message[22] = "021"
    if dialect.name == "cup":
        message[60] = "22" + "000001" + "000"
    return _sent(dialect, message, when)


def reversal(dialect: Dialect, original: Message, stan: str, mti: str = "0400", reason: str = "98", when: datetime = START) -> Message:
    """0400/0401 for `original`: iso87 names it in field 90 under a new STAN; cup reuses its STAN."""
    message = Message(mti, {n: original[n] for n in (3, 4, 22, 25, 41, 42, 49) if n in original})
    message[39] = reason
    if dialect.name == "cup":
        message[11] = original[11]
        message[60] = original[60]
    else:
        message[11] = stan
        message[90] = original.mti + original[11] + original[7] + "0" * 22
    return _sent(dialect, message, when)


def luhn_complete(partial: str) -> str:
    """`partial` plus the check digit that makes it pass the Luhn check."""
    for digit in "0123456789":
        candidate = partial + digit
        total = 0
        for index, char in enumerate(reversed(candidate)):
            value = int(char) * (2 if index % 2 else 1)
            total += value - 9 if value > 9 else value
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")
