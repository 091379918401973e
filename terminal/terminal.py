"""The POS terminal: sign-on, purchase and reversal flows over a `Link`.

Reversal discipline (docs/messages.md, REFERENCE "Terminal reversal
discipline"): before a request that can move money leaves, the reversal it
would need is committed to the state file. A readable answer cancels it. No
answer, or an unreadable one, keeps it: the terminal sends it at once (0400,
then 0401 repeats) and forgets it only when the host answers 0410 with 00.
If the host stays silent it is still owed, and goes before the next purchase.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

from possim.hsm_mock.key_download import KeyDownloadError, clear_key, unpack
from possim.hsm_mock.pinblock import PinBlockError
from possim.hsm_mock.message_mac import MAC_SCHEMES, MessageMac
from possim.wire.clock import Clock, system_clock
from possim.wire.codec import Codec, CodecError
from possim.wire.framing import FramingError, frame
from possim.wire.message import Message
from possim.wire.trace import trace_record

from .cards import Card
from .link import Link, LinkError, LinkTimeout
from .messages import (
    REASON_CANCELLED,
    REASON_NO_ANSWER,
    REASON_UNREADABLE,
    answer_body,
    answer_problem,
    build_purchase,
    build_reversal,
    build_sign_on,
    check_purchase,
    response_text,
    reversal_original,
    reversal_reuses_stan,
)
from .pin_pad import EncryptedPin, under_dukpt, under_working_key
from .profile import TerminalProfile
from .state import BatchEntry, PendingReversal, TerminalState

APPROVED = "00"
_MACED_KINDS = ("10", "20", "40")
"""Request kinds (MTI digits 2-3) that carry a MAC, and whose answers must."""


class TerminalError(Exception):
    """A request the terminal will not make; the message says why."""


class _Unreadable(Exception):
    """An answer arrived but cannot be taken as the answer: undecodable, or to another request."""


@dataclass(frozen=True)
class ReversalOutcome:
    """What became of a reversal the terminal owed."""

    original_stan: str
    stan: str | None
    """The reversal's own STAN (the original's in dialects that reuse it)."""
    reason: str
    """Field 39 it was sent with: 98 no answer, 96 unreadable answer, 17 cancelled."""
    acknowledged: bool
    """The host answered 0410 with 00: the reversal is done and forgotten."""
    attempts: int
    """Times it has reached the wire, in this and earlier runs."""
    mti: str | None
    """The last MTI sent: 0400, or 0401 for a repeat."""
    response_code: str | None
    timed_out: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TransactionResult:
    operation: str
    """signon, purchase or reversal."""
    tid: str
    request_mti: str
    mti: str | None
    """The answer's MTI; None when no readable answer came."""
    stan: str | None
    response_code: str | None
    approved: bool
    rrn: str | None
    auth_code: str | None
    amount: int | None
    """Minor units of `currency`."""
    currency: str | None
    masked_pan: str | None
    message: str
    timed_out: bool
    sent: bool
    """False when the request never left (a reversal still owed blocked it)."""
    reversal: ReversalOutcome | None = None
    """The reversal this request caused (no answer in time, unreadable answer) or was."""
    prior_reversal: ReversalOutcome | None = None
    """A reversal still owed from before, sent ahead of this request."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (pass it to json.dumps)."""
        data = asdict(self)
        data["reversal"] = self.reversal.to_json() if self.reversal else None
        data["prior_reversal"] = self.prior_reversal.to_json() if self.prior_reversal else None
        return data


class Terminal:
    """One POS terminal. Calls on one terminal run one at a time; many terminals can share a loop."""

    def __init__(
        self,
        profile: TerminalProfile,
        link: Link,
        state: TerminalState,
        clock: Clock = system_clock,
        trace: Callable[[str], None] | None = None,
    ):
        if state.tid != profile.tid:
            raise ValueError(f"state {state.path} is terminal {state.tid!r}, profile is {profile.tid!r}")
        self.profile = profile
        self.link = link
        self.state = state
        self.clock = clock
        self.trace = trace
        """Receives a redacted trace record for every message sent and received."""
        self.dialect = profile.load_dialect()
        self.codec = Codec(self.dialect)
        self.framing = self.dialect.framing
        self._tmk = profile.master_key
        self._dukpt = profile.dukpt_setup
        self._initial_key = self._dukpt.initial_key if self._dukpt is not None else None
        maced = self.dialect.mac_scheme in MAC_SCHEMES and "mac" in self.dialect.roles
        self._mac = MessageMac(self.codec) if maced and self._tmk is not None else None
        self._busy = asyncio.Lock()

    # flows

    async def sign_on(self) -> TransactionResult:
        """0800 sign-on. Not held back by an owed reversal: a host may need the sign-on to take it."""
        async with self._busy:
            now = self.clock()
            request = build_sign_on(
                self.dialect, tid=self.profile.tid, mid=self.profile.mid, stan=self.state.next_stan(),
                now=now, batch_number=self.state.batch_number, track_key=self.profile.track_key,
            )
            data = self._frame(request)
            try:
                answer = await self._ask(request, data)
            except LinkError as exc:
                if not exc.sent:
                    raise
                return self._unanswered("signon", request, str(exc), isinstance(exc, LinkTimeout))
            except _Unreadable as exc:
                return self._unanswered("signon", request, f"answer unreadable: {exc}", False)
            if answer[39] == APPROVED:
                refused = self._take_working_keys(answer)
                if refused is not None:
                    return replace(self._answered("signon", request, answer), approved=False, message=refused)
                batch = self.dialect.get_role(answer, "batch_number")
                self.state.mark_signed_on(now.date(), int(batch) if batch and batch.isdigit() else None)
            return self._answered("signon", request, answer)

    async def purchase(
        self, amount: int, card: Card, manual: bool = False, processing_code: str = "000000", pin: str | None = None
    ) -> TransactionResult:
        """0200 purchase of `amount` minor units in the profile's currency; approved ones join the open batch.

        `pin` is what the cardholder types on the PIN pad; it leaves only as
        an encrypted PIN block. Raises LinkError when the host cannot be
        reached and nothing was sent.
        """
        check_purchase(amount, processing_code)
        if pin is not None and not self.profile.pin_pad:
            raise TerminalError(f"terminal {self.profile.tid} has no PIN pad (pin_pad: false)")
        async with self._busy:
            prior = None
            owed = self.state.pending_reversal()
            if owed is not None:
                prior = await self._deliver(owed)
                if not prior.acknowledged:
                    return self._blocked(amount, card, prior)
            now = self.clock()
            encrypted = self._encrypt_pin(pin, card) if pin is not None else None
            request = build_purchase(
                self.dialect, tid=self.profile.tid, mid=self.profile.mid, stan=self.state.next_stan(), now=now,
                amount=amount, currency=self.profile.currency, card=card, manual=manual,
                pin_pad=self.profile.pin_pad, batch_number=self.state.batch_number, processing_code=processing_code,
                pin=encrypted,
            )
            data = self._frame(request)
            reversal = PendingReversal(
                reversal_original(request), self.state.batch_number, REASON_NO_ANSWER, None, 0, card.masked_pan, now
            )
            self.state.save_reversal(reversal)
            try:
                answer = await self._ask(request, data)
            except LinkError as exc:
                if not exc.sent:
                    self.state.drop_reversal()
                    raise
                outcome = await self._deliver(reversal)
                return self._unanswered(
                    "purchase", request, str(exc), isinstance(exc, LinkTimeout), card, outcome, prior
                )
            except _Unreadable as exc:
                reversal = replace(reversal, reason=REASON_UNREADABLE)
                self.state.save_reversal(reversal)
                outcome = await self._deliver(reversal)
                return self._unanswered("purchase", request, f"answer unreadable: {exc}", False, card, outcome, prior)
            approved = None
            if answer[39] == APPROVED:
                approved = BatchEntry(
                    reversal.batch_number, request[11], answer.get(37), answer.get(38), amount,
                    self.profile.currency, card.masked_pan, now, reversal.original,
                )
            self.state.answered(approved)
            return self._answered("purchase", request, answer, card, prior)

    async def reverse(self) -> TransactionResult:
        """Send the reversal still owed, or else reverse the last approved purchase of the open batch.

        A reversal the host does not take stays owed, like any other.
        """
        async with self._busy:
            owed = self.state.pending_reversal()
            if owed is None:
                last = self.state.last_approved()
                if last is None:
                    raise TerminalError(
                        f"terminal {self.profile.tid}: nothing to reverse (no reversal owed, "
                        f"no approved purchase in open batch {self.state.batch_number})"
                    )
                owed = PendingReversal(
                    last.original, last.batch_number, REASON_CANCELLED, None, 0, last.masked_pan, self.clock()
                )
                self.state.save_reversal(owed)
            outcome = await self._deliver(owed)
            original = owed.original
            return TransactionResult(
                operation="reversal",
                tid=self.profile.tid,
                request_mti=outcome.mti or "0400",
                mti="0410" if outcome.response_code is not None else None,
                stan=outcome.stan,
                response_code=outcome.response_code,
                approved=outcome.acknowledged,
                rrn=None,
                auth_code=None,
                amount=owed.amount,
                currency=original.get(49),
                masked_pan=owed.masked_pan,
                message=outcome.message,
                timed_out=outcome.timed_out,
                sent=outcome.attempts > owed.attempts,
                reversal=outcome,
            )

    def _take_working_keys(self, answer: Message) -> str | None:
        """Store the working keys a sign-on answer carries once their check values match; else why not."""
        block = self.dialect.get_role(answer, "working_keys")
        if block is None or self._tmk is None:
            return None
        try:
            cryptograms, _ = unpack(self._tmk, bytes.fromhex(block))
        except (KeyDownloadError, ValueError) as exc:
            return f"sign-on failed: {exc}; keys not stored"
        if self.profile.track_key and cryptograms.data_key is None:
            return "sign-on failed: a track key was asked for and none came; keys not stored"
        self.state.save_working_keys(cryptograms.pin_key, cryptograms.mac_key, cryptograms.data_key)
        return None

    def _encrypt_pin(self, pin: str, card: Card) -> EncryptedPin:
        """The PIN block for field 52: under the next DUKPT key, or under the sign-on's working PIN key."""
        try:
            if self._dukpt is not None and self._initial_key is not None:
                return under_dukpt(self._initial_key, self.state.next_ksn(self._dukpt.initial_ksn), pin, card.pan)
            keys = self.state.working_keys()
            if keys is None or self._tmk is None:
                raise TerminalError(f"terminal {self.profile.tid} has no working PIN key: sign on first")
            return under_working_key(clear_key(self._tmk, keys[0]), pin, card.pan)
        except PinBlockError as exc:
            raise TerminalError(f"PIN not accepted: {exc}") from None

    def _mac_key(self) -> bytes | None:
        """The working MAC key in clear, for one message; None before a sign-on delivered keys."""
        keys = self.state.working_keys()
        if keys is None or self._tmk is None:
            return None
        return clear_key(self._tmk, keys[1])

    # reversal delivery

    async def _deliver(self, owed: PendingReversal) -> ReversalOutcome:
        """Send an owed reversal now: the first try and up to `reversal_retries` repeats.

        Stops early when the host cannot be reached at all, or answers with
        something other than 00: repeating at once would not change either.
        """
        problem, timed_out, code, mti = "", False, None, None
        for _ in range(1 + self.profile.reversal_retries):
            if owed.reversal_stan is None:
                stan = owed.original_stan if reversal_reuses_stan(self.dialect) else self.state.next_stan()
                owed = replace(owed, reversal_stan=stan)
                self.state.save_reversal(owed)
            request = build_reversal(
                self.dialect, owed.original, stan=owed.reversal_stan, now=self.clock(),
                reason=owed.reason, repeat=owed.attempts > 0,
            )
            data = self._frame(request)
            try:
                answer = await self._ask(request, data)
            except LinkError as exc:
                problem, timed_out = str(exc), isinstance(exc, LinkTimeout)
                if not exc.sent:
                    break
                mti, owed = request.mti, replace(owed, attempts=owed.attempts + 1)
                self.state.save_reversal(owed)
                continue
            except _Unreadable as exc:
                problem, timed_out = f"answer unreadable: {exc}", False
                mti, owed = request.mti, replace(owed, attempts=owed.attempts + 1)
                self.state.save_reversal(owed)
                continue
            mti, owed, code = request.mti, replace(owed, attempts=owed.attempts + 1), answer[39]
            if code == APPROVED:
                self.state.reversal_acknowledged(owed)
                return self._outcome(owed, True, mti, code, False, f"reversal of STAN {owed.original_stan} acknowledged")
            self.state.save_reversal(owed)
            problem, timed_out = f"host answered {answer.mti} with {code} ({response_text(code)})", False
            break
        return self._outcome(
            owed, False, mti, code, timed_out, f"reversal of STAN {owed.original_stan} still owed: {problem}"
        )

    def _outcome(
        self, owed: PendingReversal, acknowledged: bool, mti: str | None, code: str | None, timed_out: bool, message: str
    ) -> ReversalOutcome:
        return ReversalOutcome(
            original_stan=owed.original_stan, stan=owed.reversal_stan, reason=owed.reason,
            acknowledged=acknowledged, attempts=owed.attempts, mti=mti, response_code=code,
            timed_out=timed_out, message=message,
        )

    # one exchange

    def _frame(self, request: Message) -> bytes:
        """Encode before anything is recorded, so a request that cannot be sent leaves no trace in the state."""
        return frame(self.framing, self.encode(request))

    def encode(self, request: Message) -> bytes:
        """The message body as this terminal sends it: purchases and reversals MACed once a sign-on delivered a MAC key."""
        key = self._mac_key() if self._mac is not None and request.mti[1:3] in _MACED_KINDS else None
        if key is None or self._mac is None:
            return self.codec.encode(request)
        return self._mac.sign(request, key)

    async def _ask(self, request: Message, data: bytes) -> Message:
        envelope_end = self.framing.length_size + self.framing.envelope_size
        self._trace("->", data[envelope_end:], data[:envelope_end])
        try:
            payload = await self.link.exchange(data, self.profile.timeout)
            body = answer_body(self.framing, payload)
        except FramingError as exc:
            raise _Unreadable(str(exc)) from None
        self._trace("<-", body, payload[: len(payload) - len(body)])
        try:
            answer = self.codec.decode(body)
        except CodecError as exc:
            raise _Unreadable(str(exc)) from None
        problem = answer_problem(request, answer)
        if problem is None and self._mac is not None and self._mac.field_for(request) in request:
            key = self._mac_key()
            problem = self._mac.verify(body, key) if key is not None else "no MAC key to check the answer"
            problem = f"answer {problem}" if problem else None
        if problem is not None:
            raise _Unreadable(problem)
        return answer

    def _trace(self, direction: str, body: bytes, prefix: bytes) -> None:
        if self.trace is not None:
            self.trace(trace_record(self.clock(), direction, self.profile.host, self.codec, body, prefix))

    # results

    def _answered(
        self, operation: str, request: Message, answer: Message, card: Card | None = None,
        prior: ReversalOutcome | None = None,
    ) -> TransactionResult:
        code = answer[39]
        return TransactionResult(
            operation=operation, tid=self.profile.tid, request_mti=request.mti, mti=answer.mti,
            stan=request[11], response_code=code, approved=code == APPROVED, rrn=answer.get(37),
            auth_code=answer.get(38), amount=_amount(request), currency=request.get(49),
            masked_pan=card.masked_pan if card else None, message=response_text(code),
            timed_out=False, sent=True, prior_reversal=prior,
        )

    def _unanswered(
        self, operation: str, request: Message, problem: str, timed_out: bool, card: Card | None = None,
        reversal: ReversalOutcome | None = None, prior: ReversalOutcome | None = None,
    ) -> TransactionResult:
        message = problem if reversal is None else f"{problem}; {reversal.message}"
        return TransactionResult(
            operation=operation, tid=self.profile.tid, request_mti=request.mti, mti=None, stan=request[11],
            response_code=None, approved=False, rrn=None, auth_code=None, amount=_amount(request),
            currency=request.get(49), masked_pan=card.masked_pan if card else None, message=message,
            timed_out=timed_out, sent=True, reversal=reversal, prior_reversal=prior,
        )

    def _blocked(self, amount: int, card: Card, prior: ReversalOutcome) -> TransactionResult:
        return TransactionResult(
            operation="purchase", tid=self.profile.tid, request_mti="0200", mti=None, stan=None,
            response_code=None, approved=False, rrn=None, auth_code=None, amount=amount,
            currency=self.profile.currency, masked_pan=card.masked_pan,
            message=f"purchase not sent: {prior.message}", timed_out=False, sent=False, prior_reversal=prior,
        )


def _amount(request: Message) -> int | None:
    return int(request[4]) if 4 in request else None
