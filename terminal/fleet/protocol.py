"""One simulated terminal of a load fleet, free of I/O: it makes request bytes and reads answer bytes.

A fleet of hundreds cannot afford `terminal.Terminal`, which keeps every
message in SQLite so a crash loses nothing; a load terminal keeps its STAN,
batch number, working keys and the sales it may refund in memory, and is
thrown away after the run. The asyncio fleet and the Locust users drive the
same class over their own sockets (h11's split: protocol here, transport
there), so both send the same messages as the real terminal: the dialect's
transaction table, field 62's working keys checked against their check
values, the MAC the host checks, the answer's MAC checked back.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from possim.hsm_mock.key_download import KeyDownloadError, unpack
from possim.hsm_mock.message_mac import MAC_SCHEMES, MessageMac
from possim.wire.clock import Clock, system_clock
from possim.wire.codec import Codec, CodecError
from possim.wire.dialect import Dialect
from possim.wire.framing import FramingError, frame
from possim.wire.message import Message

from ..cards import Card
from ..messages import (
    REASON_NO_ANSWER,
    OriginalRef,
    answer_body,
    answer_problem,
    build_request,
    build_reversal,
    build_sign_on,
    reversal_original,
    reversal_reuses_stan,
)

KINDS = ("purchase", "refund", "qr")
"""What a fleet's mix may name: a card sale, a refund of one of this terminal's approved sales, a QR order
(merchant-presented: the host makes the order and its EMV payload)."""

_WIRE_KIND = {"purchase": "sale", "refund": "refund", "qr": "qr_order"}
_MACED = ("10", "20", "22", "40", "42")
"""MTI digits 2-3 of the requests that carry a MAC once the terminal holds a MAC key (as terminal.Terminal)."""
_REFUNDABLE = 64
"""Approved sales a terminal remembers for refunds: enough for any mix, bounded for a long run."""


class AnswerError(ValueError):
    """An answer that cannot be taken: undecodable, not this request's, or with a bad MAC."""


@dataclass(frozen=True)
class Request:
    kind: str
    """A mix kind, or "signon" / "reversal"."""
    message: Message
    data: bytes
    """Framed, ready for the socket."""

    @property
    def stan(self) -> str:
        return str(self.message[11])


@dataclass(frozen=True)
class Outcome:
    code: str
    """Field 39 of the answer."""
    approved: bool


@dataclass(frozen=True)
class _Sale:
    rrn: str
    amount: int
    stan: str
    day: str
    batch_number: int


@dataclass
class FleetTerminal:
    tid: str
    mid: str
    dialect: Dialect
    codec: Codec
    card: Card
    currency: str = "156"
    tmk: bytes | None = field(default=None, repr=False)
    """Master key: working keys arrive under it at sign-on. None: no MAC is sent or checked."""
    clock: Clock = system_clock
    stan: int = 0
    batch_number: int = 1
    signed_on: bool = False
    _mac_key: bytes | None = field(default=None, repr=False)
    _sales: deque[_Sale] = field(default_factory=lambda: deque(maxlen=_REFUNDABLE), repr=False)

    def __post_init__(self) -> None:
        maced = self.dialect.mac_scheme in MAC_SCHEMES and "mac" in self.dialect.roles
        self._mac = MessageMac(self.codec) if maced and self.tmk is not None else None

    # requests

    def sign_on(self) -> Request:
        message = build_sign_on(self.dialect, tid=self.tid, mid=self.mid, stan=self._next_stan(), now=self.clock(),
                                batch_number=self.batch_number)
        return self._request("signon", message)

    def request(self, kind: str, amount: int) -> Request:
        """A request of mix `kind` for `amount` minor units; a refund with no sale to refund yet is a purchase."""
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} must be one of {', '.join(KINDS)}")
        now = self.clock()
        original = None
        if kind == "refund":
            if not self._sales:
                kind = "purchase"
            else:
                sale = self._sales.popleft()
                amount = min(amount, sale.amount)
                original = OriginalRef(sale.rrn, batch_number=sale.batch_number, stan=sale.stan, day=sale.day)
        card = None if kind == "qr" else self.card
        message = build_request(
            self.dialect, _WIRE_KIND[kind], tid=self.tid, mid=self.mid, stan=self._next_stan(), now=now,
            amount=amount, currency=self.currency, card=card, pin_pad=False, batch_number=self.batch_number,
            original=original,
        )
        return self._request(kind, message)

    def reversal(self, unanswered: Request) -> Request:
        """The 0400 for a request that got no answer in time."""
        original = reversal_original(unanswered.message)
        stan = original[11] if reversal_reuses_stan(self.dialect) else self._next_stan()
        message = build_reversal(self.dialect, original, stan=stan, now=self.clock(), reason=REASON_NO_ANSWER,
                                 repeat=False)
        return self._request("reversal", message)

    # answers

    def answer(self, request: Request, payload: bytes) -> Outcome:
        """Read the answer to `request` (a frame's payload); AnswerError when it cannot be taken."""
        try:
            body = answer_body(self.dialect.framing, payload)
            answer, spans = self.codec.decode_spans(body)
        except (CodecError, FramingError) as exc:
            raise AnswerError(f"answer unreadable: {exc}") from None
        problem = answer_problem(request.message, answer)
        if problem is None and self._maced(request.message) and self._mac is not None and self._mac_key is not None:
            problem = self._mac.verify(body, self._mac_key, spans)
            problem = f"answer {problem}" if problem else None
        if problem is not None:
            raise AnswerError(problem)
        code = str(answer[39])
        if request.kind == "signon" and code == "00":
            self._take_sign_on(answer)
        elif request.kind == "purchase" and code == "00" and answer.get(37):
            self._sales.append(_Sale(str(answer[37]), int(request.message[4]), request.stan,
                                     str(request.message[13]), self.batch_number))
        return Outcome(code, code == "00")

    # inside

    def _next_stan(self) -> str:
        self.stan = self.stan % 999_999 + 1
        return f"{self.stan:06d}"

    def _maced(self, message: Message) -> bool:
        return message.mti[1:3] in _MACED

    def _request(self, kind: str, message: Message) -> Request:
        if self._mac is not None and self._mac_key is not None and self._maced(message):
            body = self._mac.sign(message, self._mac_key)
        else:
            body = self.codec.encode(message)
        return Request(kind, message, frame(self.dialect.framing, body))

    def _take_sign_on(self, answer: Message) -> None:
        block = self.dialect.get_role(answer, "working_keys")
        if block is not None and self.tmk is not None:
            try:
                _, keys = unpack(self.tmk, bytes.fromhex(block))
            except (KeyDownloadError, ValueError) as exc:
                raise AnswerError(f"sign-on: {exc}") from None
            self._mac_key = keys.mac_key
        batch = self.dialect.get_role(answer, "batch_number")
        if batch and batch.isdigit():
            self.batch_number = int(batch)
        self.signed_on = True

