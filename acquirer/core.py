"""The host's core: one request's bytes in, the answer's bytes out.

No I/O but the journal it is given — the TCP server (and later a serial
one) only moves frames, and tests or a replay can drive the core directly.
Every answer is journaled and committed before `handle` or `handle_batch`
returns it, so what a terminal is told is always on record. A busy server
uses `handle_batch`, which commits all the requests that arrived in one
event-loop turn at once: a commit costs more than everything else a request
does. Neither raises: an internal fault answers 96 (or closes the link when
nothing can be answered) and the host goes on.

Flows follow docs/messages.md: 0800 sign-on/sign-off/echo, 0100 and 0200
through the authorization pipeline (only 0200 posts), 0400/0401 reversals
matched by field 90 or by (terminal, STAN, date), and the duplicate rules:
the same key with the same content is answered as the first time, with
different content 94. Sign-on sends fresh working keys under the terminal's
master key (kept in the journal under the LMK only); from then on a request's
MAC is checked before anything else and every answer to a financial request
or reversal carries one (docs/messages.md, "Working keys" and "MAC").
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from possim.hsm_mock.client import HsmClient, LocalHsm
from possim.hsm_mock.device import Hsm
from possim.hsm_mock.key_download import generate_working_keys, pack
from possim.hsm_mock.lmk import TAK, TEK, TPK, VariantLmk
from possim.hsm_mock.message_mac import MAC_SCHEMES, MessageMac
from possim.wire.clock import Clock, system_clock
from possim.wire.codec import Codec, CodecError
from possim.wire.dialect import Dialect, load_dialect
from possim.wire.framing import Envelope, FramingError, frame, split_envelope
from possim.wire.message import Message, response_mti
from possim.wire.trace import mask_pan, redacted_fields

from .issuer import IssuerStub
from .journal import (
    APPROVED, CLOSED, COMPLETED, DECLINED, HELD, ORPHAN_REVERSAL, PENDING, REVERSED,
    AccountBalance, Hold, Journal, JournalError, MessageEntry, Notification, Order, Posting, TerminalSession, Transaction,
    Unit,
)
from .batch_close import BatchClose
from .reply import Reply, shaped as _reply
from .effects import Effects, approved_effects, expiry_effects, reversal_effects
from .permissive import PermissiveRegistry, PermissiveSettings, carries_mac, permissive_accounts, permissive_steps
from .pin_check import PinVerifier
from .pipeline import STEPS, CardData, Context, Outcome, Services, Step, fingerprint, log_fault, read_card, run
from .qr_front import QR_KINDS, REVERSIBLE as QR_REVERSIBLE, QrFront
from .qr_orders import OrderService
from .registry import Registry
from .rules import Request, Rule, Rules
from .business_day import MIDNIGHT, BusinessCalendar
from .fee_desk import FEE_KINDS, HOST_ROLLBACK, FeeDesk
from .settings import FeeSettings, HostSettings, QrSettings
from .wallets import WalletNetwork

log = logging.getLogger("possim.host")

SIGN_ON, SIGN_OFF, ECHO = "001", "002", "301"
_FINANCIAL_ECHO = (3, 4, 7, 11, 25, 41, 42, 49)
_REVERSAL_ECHO = (3, 4, 7, 11, 41, 42, 49, 90)
_NETWORK_ECHO = (7, 11, 41, 42)
_RRN_BLOCK = 1000
_MACED_KINDS = ("10", "20", "22", "40", "42", "50", "32")
"""Request kinds (MTI digits 2-3) that carry a MAC once the terminal has a MAC key, and whose answers do:
everything that moves money or closes a batch."""
_MACED_ANSWERS = ("11", "21", "23", "41", "43", "51", "33")
_KEY_ROLES = ("working_keys", "mac", "ksn", "qr_data")
"""Roles whose fields belong to one message and are never echoed into its answer (a QR answer writes its own)."""


@dataclass(frozen=True)
class _Request:
    """A decoded request and where it came from, passed between the flow handlers."""

    message: Message
    envelope: Envelope
    peer: str
    now: datetime
    at: str
    """`now` as journaled."""
    business_date: str
    key_date: str
    """The date part of the request's key: MMDD of field 7 when present, else of the host's business date."""
    body: bytes = b""
    """The message as it arrived, for checking its MAC."""
    spans: dict[str, tuple[int, int]] | None = None
    """Where each part of `body` is (from the decode), so checking the MAC does not decode it again."""

    @classmethod
    def arrived(cls, message: Message, envelope: Envelope, peer: str, now: datetime, business_date: str,
                body: bytes = b"", spans: dict[str, tuple[int, int]] | None = None) -> _Request:
        sent = message.get(7)
        key_date = sent[:4] if sent is not None and len(sent) >= 4 else f"{now.month:02d}{now.day:02d}"
        return cls(message, envelope, peer, now, _stamp(now), business_date, key_date, body, spans)


class HostCore:
    def __init__(
        self,
        dialect: Dialect,
        journal: Journal,
        registry: Registry,
        issuer: IssuerStub,
        rules: Rules,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
        steps: Sequence[Step] = STEPS,
        hsm: HsmClient | None = None,
        lmk: VariantLmk | None = None,
        preauth_hold: timedelta = timedelta(days=7),
        completion_tolerance_percent: int = 15,
        wallets: WalletNetwork | None = None,
        qr_settings: QrSettings = QrSettings(),
        cutover_time: time = MIDNIGHT,
        fee_settings: FeeSettings = FeeSettings(),
        permissive: PermissiveSettings | None = None,
    ):
        """`hsm` is how PINs get checked: an HSM over TCP, or by default one in this process.
        `lmk` is the HSM's LMK (default: the published test LMK); the host keeps keys under it.
        `permissive`: the permissive profile's settings (acquirer/permissive.py), None for the standard profile."""
        self.permissive = permissive
        self.dialect = dialect
        self.codec = Codec(dialect)
        self.framing = dialect.framing
        self.journal = journal
        self.registry = registry
        self.issuer = issuer
        self.rules = rules
        self.clock = clock
        self._rng = rng or random.Random()
        self._steps = tuple(steps)
        self._lmk = lmk if lmk is not None else VariantLmk.test()
        """Working keys are journaled under the HSM's LMK, so the journal never holds one in clear."""
        self.hsm = hsm if hsm is not None else LocalHsm(Hsm(self._lmk, rng=self._rng))
        pins = PinVerifier(self.hsm, self._lmk, issuer.issuers(), registry.dukpt_bdks())
        self._services = Services(dialect, registry, issuer, journal, pins)
        self._role_fields = tuple(sorted(
            {int(where.split(".")[0]) for role, where in dialect.roles.items() if role not in _KEY_ROLES}
        ))
        maced = dialect.mac_scheme in MAC_SCHEMES and "mac" in dialect.roles
        self._mac = MessageMac(self.codec) if maced else None
        self._mac_keys: dict[str, tuple[str, bytes]] = {}
        """Per terminal, its MAC key under the LMK as journaled and that key in clear: unwrapped once per
        sign-on, not per message. Only in memory; a new sign-on journals a new cryptogram, which replaces it."""
        self._rrn_next = self._rrn_end = 0
        self.preauth_hold = preauth_hold
        """How long a pre-authorization holds funds before they go back to the account."""
        self.completion_tolerance_percent = completion_tolerance_percent
        """How far above its pre-authorization a completion may go."""
        self._batch_close = BatchClose(self)
        self.calendar = BusinessCalendar(journal, cutover_time)
        self.fees = FeeDesk(self, fee_settings)
        """Government fee payments; connect() it to a finance system to take them."""
        self.orders = OrderService(journal, wallets or WalletNetwork([], []), qr_settings, self._rng, self._rrn,
                                   self.calendar.date_of)
        """The QR order service, shared with the HTTP API (acquirer/http_api.py)."""
        self._qr = QrFront(self, self.orders)
        self._track_key_code = dialect.convention("sign_on_track_key_code")
        self._sign_on_codes = {SIGN_ON, dialect.convention("sign_on_code", SIGN_ON), self._track_key_code} - {None}
        """Network codes that sign on: ISO's 001, and the dialect's own (cup 003, and 004 with a track key).
        possim issues double-length keys only, so a cup 001 (single-length keys) gets those too."""

    def close(self) -> None:
        self.journal.close()
        self.hsm.close()

    def handle_batch(self, arrivals: Sequence[tuple[str, Sequence[bytes]]]) -> list[list[Reply]]:
        """Answer what several connections delivered at once, with one journal commit for all of it.

        `arrivals` holds, per connection, its peer and the payloads it sent,
        in order; the result holds, per connection, one Reply per payload
        handled. Payloads after one whose Reply closes the connection are not
        handled: that link is going away. This returns only after the
        commit, so the caller may write every Reply at once — an answer can
        never leave without its journal row. If the group commit fails,
        nothing of it is stored and each request is handled again on its
        own, exactly as `handle` would.
        """
        try:
            with self.journal.batch():
                return [self._answer_all(peer, payloads) for peer, payloads in arrivals]
        except JournalError as exc:
            log.error("group commit failed (%s); answering its %d connections one request at a time", exc, len(arrivals))
            self._rrn_next = self._rrn_end = 0  # an RRN block claimed inside the batch was rolled back with it
            return [self._answer_all(peer, payloads) for peer, payloads in arrivals]

    def _answer_all(self, peer: str, payloads: Sequence[bytes]) -> list[Reply]:
        replies = []
        for payload in payloads:
            reply = self.handle(payload, peer)
            replies.append(reply)
            if reply.close:
                break
        return replies

    def handle(self, payload: bytes, peer: str = "") -> Reply:
        """Answer one frame payload (TPDU + header + message, as FrameReader yields it).

        Its journal rows are committed before it returns (inside
        `handle_batch`, with the rest of the batch).
        """
        message = envelope = None
        try:
            envelope, body = split_envelope(self.framing, payload)
            now = self.clock()
            try:
                message, spans = self.codec.decode_spans(body)
            except CodecError as exc:
                return self._undecodable(exc, envelope, peer, now)
            return self._dispatch(_Request.arrived(message, envelope, peer, now, self.calendar.date_of(now), body, spans))
        except FramingError as exc:
            log.warning("%s: %s; closing the connection", peer, exc)
            return Reply(close=True)
        except Exception as exc:  # the host keeps serving whatever happens to one request
            log_fault(f"handling a message from {peer}", exc)
            return self._malfunction(message, envelope)

    # ---- dispatch ----

    def _dispatch(self, req: _Request) -> Reply:
        mti = req.message.mti
        if req.message.is_response:
            log.warning("%s: unsolicited response %s ignored", req.peer, mti)
            self.journal.record(Unit((self._entry_in(req, "unsolicited response, ignored"),)))
            return Reply()
        if req.message.get(11) is None:
            log.warning("%s: %s without a STAN (field 11) cannot be answered; closing", req.peer, mti)
            self.journal.record(Unit((self._entry_in(req, "no STAN: closed"),)))
            return Reply(close=True)
        if 41 not in req.message:
            return self._answer_only(req, _NETWORK_ECHO, "30", "missing mandatory field 41")
        request_kind = mti[1:3]
        if request_kind in _MACED_KINDS and (problem := self._mac_problem(req)) is not None:
            return self._mac_refused(req, problem)
        if request_kind == "80":
            return self._network(req)
        if request_kind in ("10", "20", "22"):
            return self._financial(req)
        if request_kind in ("40", "42"):
            return self._reversal(req)
        if request_kind == "50":
            return self._batch_close.totals(req)
        if request_kind == "32":
            return self._batch_close.upload(req)
        return self._answer_only(req, _NETWORK_ECHO, "12", f"message type {mti} is not supported")

    # ---- 0800: sign-on, sign-off, echo ----

    def _network(self, req: _Request) -> Reply:
        message, tid = req.message, req.message[41]
        rule = self._rule_for(message, None)
        current = self.journal.terminal(tid)
        session = download = None
        code, note = "00", None
        network_code = self.dialect.get_role(message, "network_code")
        if rule is not None and rule.respond is not None:
            code, note = rule.respond, f"scenario rule {rule.name!r}"
        elif (refusal := self._unknown_terminal(message)) is not None:
            code, note = refusal
        elif network_code is None:
            code, note = "30", "no network management code"
        elif network_code in self._sign_on_codes:
            batch = current.batch_number if current else self._initial_batch(message)
            session = TerminalSession(tid, req.business_date, batch, req.at)
            download = self._working_keys(tid, with_data_key=network_code == self._track_key_code)
        elif network_code == SIGN_OFF and current is not None:
            session = TerminalSession(tid, None, current.batch_number, req.at)
        elif network_code not in (ECHO, SIGN_OFF):
            code, note = "12", f"network management code {network_code} is not supported"
        response = self._response(message, _NETWORK_ECHO, code, req.now)
        known = session or current
        if known is not None and code == "00":
            self.dialect.set_role(response, "batch_number", known.batch_number)  # cup 60.2; no-op elsewhere
        if download is not None and code == "00":
            block, keys = download
            self.dialect.set_role(response, "working_keys", block)
            session = dataclasses.replace(session, **keys)
        data = self._frame(response, req.envelope)
        self.journal.record(Unit((self._entry_in(req, note), self._entry_out(req, response)), terminal=session, at=req.at))
        return _reply(data, rule)

    def _working_keys(self, tid: str, with_data_key: bool) -> tuple[str, dict[str, str]] | None:
        """Fresh working keys for a sign-on: the block for the answer, and the keys under the LMK by journal column.

        None when the terminal has no master key on file or the dialect no place to send keys.
        """
        profile = self.registry.terminal(tid)
        if profile is None or profile.tmk is None or "working_keys" not in self.dialect.roles:
            return None
        keys = generate_working_keys(self._rng, with_data_key=with_data_key)
        stored = {"pin_key": self._lmk.encrypt(keys.pin_key, TPK).hex().upper(),
                  "mac_key": self._lmk.encrypt(keys.mac_key, TAK).hex().upper()}
        if keys.data_key is not None:
            stored["data_key"] = self._lmk.encrypt(keys.data_key, TEK).hex().upper()
        return pack(profile.tmk, keys).hex().upper(), stored

    # ---- MAC: checked before anything else, on requests and answers that move money ----

    def _mac_key(self, tid: str | None) -> bytes | None:
        """The terminal's working MAC key in clear; None before any key download. The journal's session says
        which key is current, so a new sign-on's key replaces the old one at once; its clear form comes from
        memory when that key was unwrapped before."""
        if self._mac is None or tid is None:
            return None
        session = self.journal.terminal(tid)
        if session is None or session.mac_key is None:
            return None
        known = self._mac_keys.get(tid)
        if known is not None and known[0] == session.mac_key:
            return known[1]
        clear = self._lmk.decrypt(bytes.fromhex(session.mac_key), TAK)
        self._mac_keys[tid] = (session.mac_key, clear)
        return clear

    def _mac_problem(self, req: _Request) -> str | None:
        """Why a request's MAC is not good, or None (also when the terminal has no MAC key yet)."""
        key = self._mac_key(req.message[41])
        if key is None or self._mac is None:
            return None
        if self.permissive is not None and not carries_mac(req.message, self.dialect):
            return None  # the permissive profile checks a MAC only when one is sent
        return self._mac.verify(req.body, key, req.spans)

    def _mac_refused(self, req: _Request, problem: str) -> Reply:
        """The dialect's MAC-error code; nothing is posted. A new financial request is journaled as declined at step "mac"."""
        code = self.dialect.response_code("mac_error")
        message = req.message
        log.warning("%s: %s tid %s stan %s refused: %s", req.peer, message.mti, message[41], message[11], problem)
        if message.mti[1:3] == "40" or self.journal.transaction(message[41], message[11], req.key_date) is not None:
            echo = _REVERSAL_ECHO if message.mti[1:3] == "40" else _FINANCIAL_ECHO
            return self._answer_only(req, echo, code, problem)
        card = read_card(message)
        pan_hash = self.journal.pan_hash(card.pan) if card.pan else None
        ctx = Context(message, req.now, req.business_date, self._services, card,
                      session=self.journal.terminal(message[41]), pan_hash=pan_hash)
        response = self._response(message, _FINANCIAL_ECHO, code, req.now)
        response[37] = self._rrn(req.now)
        data = self._frame(response, req.envelope)
        txn = self._transaction(
            req, card, pan_hash, fingerprint(message, pan_hash), Outcome(code, "mac", problem), response, ctx, 0, None
        )
        self.journal.record(Unit((self._entry_in(req, problem), self._entry_out(req, response, problem)), insert=txn, at=req.at))
        return Reply(data)

    def _initial_batch(self, message: Message) -> str:
        """A terminal new to the host keeps the batch it reports (cup 60.2), else starts at 1."""
        batch = self.dialect.get_role(message, "batch_number")
        if batch and batch.isdigit() and int(batch) > 0:
            return batch
        return "000001"

    def _unknown_terminal(self, message: Message) -> tuple[str, str] | None:
        refusal = self.registry.refusal(message[41], message.get(42))
        if refusal is None:
            return None
        return self.dialect.response_code("terminal_unknown"), refusal

    # ---- 0100 / 0200: authorization and purchase ----

    def _financial(self, req: _Request) -> Reply:
        message = req.message
        tid, stan = message[41], message[11]
        card = read_card(message)
        pan_hash = self.journal.pan_hash(card.pan) if card.pan else None
        request_fingerprint = fingerprint(message, pan_hash)
        rule = self._rule_for(message, card)
        if (waiting := self.fees.in_flight((tid, stan, req.key_date))) is not None:
            return waiting
        existing = self.journal.transaction(tid, stan, req.key_date)
        if existing is not None:
            return self._repeat(req, existing, request_fingerprint, rule)

        kind = self.dialect.transaction_of(message)
        if kind is not None and kind.name in QR_KINDS:
            return self._qr.handle(req, kind.name, rule)
        if kind is not None and kind.name in FEE_KINDS:
            return self.fees.handle(req, kind.name, rule, card, pan_hash, request_fingerprint)
        self._expire_holds(req)
        ctx = Context(message, req.now, req.business_date, self._services, card, rule,
                      session=self.journal.terminal(tid), pan_hash=pan_hash,
                      kind=kind, preauth_tolerance_percent=self.completion_tolerance_percent)
        outcome = run(self._steps, ctx)
        response = self._response(message, _FINANCIAL_ECHO, outcome.code, req.now)
        response[37] = self._rrn(req.now)
        auth_code = None
        effects = Effects()
        if outcome.approved:
            auth_code = response[38] = message.get(38) if ctx.kind and ctx.kind.name == "offline" and message.get(38) \
                else f"{self._rng.randrange(1_000_000):06d}"
            effects = approved_effects(ctx, req.at, self.preauth_hold)
            if ctx.kind and ctx.kind.name == "balance" and ctx.account is not None:
                response[54] = _balance_field(self.journal.balance(ctx.account.id) or 0, ctx.account.currency)
        data = self._frame(response, req.envelope)
        txn = self._transaction(req, card, pan_hash, request_fingerprint, outcome, response, ctx, effects.posted, auth_code)
        self.journal.record(Unit(
            (self._entry_in(req, None), self._entry_out(req, response, outcome.reason)), insert=txn,
            updates=effects.updates, postings=effects.postings, holds=effects.holds, pin_tries=ctx.pin_tries, at=req.at,
        ))
        return _reply(data, rule)

    def _expire_holds(self, req: _Request) -> None:
        """Release pre-authorization holds whose time is up, before anyone counts on the funds."""
        due = self.journal.expiring_holds(req.at)
        if due:
            postings, holds = expiry_effects(due, req.at)
            self.journal.record(Unit(postings=postings, holds=holds, at=req.at))
            log.info("%d pre-authorization hold(s) expired and released", len(due))

    def _transaction(
        self, req: _Request, card: CardData, pan_hash: str | None, fingerprint: str,
        outcome: Outcome, response: Message, ctx: Context, posted: int, auth_code: str | None,
    ) -> Transaction:
        message = req.message
        amount = message.get(4)
        return Transaction(
            business_date=req.business_date,
            terminal_id=message[41],
            merchant_id=message.get(42),
            stan=message[11],
            key_date=req.key_date,
            mti=message.mti,
            processing_code=message.get(3),
            amount=int(amount) if amount and amount.isdigit() else None,
            currency=message.get(49),
            pan_masked=mask_pan(card.pan) if card.pan else (ctx.original.pan_masked if ctx.original else None),
            pan_hash=pan_hash or (ctx.original.pan_hash if ctx.original else None),  # a void sent without the card
            entry_mode=message.get(22),
            response_code=outcome.code,
            auth_code=auth_code,
            rrn=response.get(37),
            status=APPROVED if outcome.approved else DECLINED,
            decline_step=outcome.step,
            decline_reason=outcome.reason,
            account_id=ctx.account.id if ctx.account else None,
            posted_amount=posted,
            fingerprint=fingerprint,
            response_mti=response.mti,
            response_fields={str(n): v for n, v in response.fields.items()},
            created_at=req.at,
            updated_at=req.at,
            kind=ctx.kind.name if ctx.kind else None,
            batch_number=ctx.session.batch_number if ctx.session else None,
            original_id=ctx.original.id if ctx.original else None,
        )

    def _repeat(self, req: _Request, first: Transaction, fingerprint: str, rule: Rule | None) -> Reply:
        """A request whose key the host has seen: a retransmission, or a STAN reused (94)."""
        answered = first.status in (APPROVED, DECLINED, PENDING, CLOSED) or first.reversal_reason == HOST_ROLLBACK
        if answered and first.fingerprint == fingerprint and first.response_fields is not None:
            response = Message(str(first.response_mti), {int(n): v for n, v in first.response_fields.items()})
            note = f"retransmission: first answer repeated (transaction {first.id})"
        else:
            response = self._response(req.message, _FINANCIAL_ECHO, "94", req.now)
            response[37] = self._rrn(req.now)
            note = {
                ORPHAN_REVERSAL: f"key already used by an orphan reversal (transaction {first.id})",
                REVERSED: f"key belongs to transaction {first.id}, since reversed: its answer no longer stands",
            }.get(first.status, f"STAN reused with different content (transaction {first.id})")
        data = self._frame(response, req.envelope)
        self.journal.record(Unit((self._entry_in(req, note), self._entry_out(req, response)), at=req.at))
        return _reply(data, rule)

    # ---- 0400 / 0401: reversal ----

    def _reversal(self, req: _Request) -> Reply:
        message = req.message
        rule = self._rule_for(message, read_card(message))
        if rule is not None and rule.respond is not None:
            return self._answer_only(req, _REVERSAL_ECHO, rule.respond, f"scenario rule {rule.name!r}", rule)
        if (refusal := self._unknown_terminal(message)) is not None:
            return self._answer_only(req, _REVERSAL_ECHO, *refusal)
        tid = message[41]
        stan, key_date = self._original_key(req)
        original = self.journal.transaction(tid, stan, key_date)
        response = self._response(message, _REVERSAL_ECHO, "00", req.now, stamp=False)
        data = self._frame(response, req.envelope)
        insert = None
        updates: tuple[Transaction, ...] = ()
        postings: tuple[Posting, ...] = ()
        holds: tuple[Hold, ...] = ()
        orders: tuple[Order, ...] = ()
        notifications: tuple[Notification, ...] = ()
        reversed_fee: Transaction | None = None
        mismatch = _mismatch(message, original) if original is not None else None
        if mismatch is not None:
            note = f"does not reverse transaction {original.id} ({mismatch}): nothing reversed"
        elif original is None:
            insert = self._orphan(req, stan, key_date, response)
            note = "orphan reversal: original never seen"
        elif original.kind in QR_REVERSIBLE and original.reversed_at is None and original.status != DECLINED:
            change, note = self._qr.reverse(original, message, req)
            if change is not None:
                updates, postings = change.updates, change.postings
                orders, notifications = change.orders, change.notifications
                if self.journal.fee_payment(original.id or 0) is not None:
                    reversed_fee = original  # an order that paid a fee notice: its confirmation is cancelled too
        elif original.reversed_at is None and original.status == APPROVED and (why := self._irreversible(original)):
            note = f"does not reverse transaction {original.id}: {why}"
        elif original.reversed_at is None and original.status in (APPROVED, DECLINED):
            update = original
            gives_back = original.status == APPROVED and self._still_taken(original)
            if original.status == APPROVED:
                update.status = REVERSED
                postings, updates, holds = self._undo(original, req.at)
            update.reversal_mti, update.reversal_stan = message.mti, message[11]
            update.reversal_reason, update.reversed_at, update.updated_at = message.get(39), req.at, req.at
            if gives_back and original.posted_amount and original.account_id:
                postings = (Posting(original.account_id, original.posted_amount), *postings)
            updates = (update, *updates)
            note = f"reverses transaction {original.id}"
            if original.kind == "fee_payment":
                reversed_fee = original
        else:
            note = f"repeated reversal of transaction {original.id}: nothing to do"
        self.journal.record(Unit(
            (self._entry_in(req, note), self._entry_out(req, response)),
            insert=insert, updates=updates, postings=postings, holds=holds, at=req.at,
            orders=orders, notifications=notifications,
        ))
        if reversed_fee is not None:
            self.fees.reversed_by_terminal(reversed_fee, req.at)
        return _reply(data, rule)

    def _irreversible(self, original: Transaction) -> str | None:
        """Why an approved transaction can no longer be reversed, or None: later transactions built on it
        (a partial refund, a completed pre-authorization) must be undone first, or the money moves twice."""
        if original.refunded_amount:
            return f"refunded in part ({original.refunded_amount}): reverse or void nothing on top of a refund"
        if original.kind == "preauth":
            hold = self.journal.hold(original.id or 0)
            if hold is not None and hold.state == COMPLETED:
                return "its hold was completed: reverse the completion first"
        return None

    def _still_taken(self, original: Transaction) -> bool:
        """Whether the account still lacks what `original` posted: an expired or released pre-auth gave it back."""
        if original.kind != "preauth":
            return True
        hold = self.journal.hold(original.id or 0)
        return hold is None or hold.state == HELD

    def _undo(self, reversed_txn: Transaction, at: str) -> tuple[tuple[Posting, ...], tuple[Transaction, ...], tuple[Hold, ...]]:
        """What a reversal undoes besides the reversed transaction's own posting (effects.reversal_effects)."""
        original = self.journal.transaction_by_id(reversed_txn.original_id) if reversed_txn.original_id else None
        hold_of = reversed_txn.id if reversed_txn.kind == "preauth" else reversed_txn.original_id
        hold = self.journal.hold(hold_of) if hold_of else None
        return reversal_effects(reversed_txn, original, hold, at)

    def _original_key(self, req: _Request) -> tuple[str, str]:
        """(STAN, date) of the transaction a reversal undoes: field 90 when present, else its own."""
        original = req.message.get(90)
        if original is not None and len(original) >= 20:
            return original[4:10], original[10:14]
        return req.message[11], req.key_date

    def _orphan(self, req: _Request, stan: str, key_date: str, response: Message) -> Transaction:
        message = req.message
        card = read_card(message)
        pan_hash = self.journal.pan_hash(card.pan) if card.pan else None
        amount = message.get(4)
        return Transaction(
            business_date=req.business_date, terminal_id=message[41], merchant_id=message.get(42),
            stan=stan, key_date=key_date, mti=message.mti, processing_code=message.get(3),
            amount=int(amount) if amount and amount.isdigit() else None, currency=message.get(49),
            pan_masked=mask_pan(card.pan) if card.pan else None, pan_hash=pan_hash, entry_mode=message.get(22),
            response_code="00", auth_code=None, rrn=None, status=ORPHAN_REVERSAL,
            decline_step=None, decline_reason=None, account_id=None, posted_amount=0,
            fingerprint=fingerprint(message, pan_hash), response_mti=response.mti,
            response_fields={str(n): v for n, v in response.fields.items()},
            reversal_mti=message.mti, reversal_stan=message[11], reversal_reason=message.get(39),
            reversed_at=req.at, created_at=req.at, updated_at=req.at,
        )

    # ---- answers that change nothing but the message log ----

    def _answer_only(self, req: _Request, echo: tuple[int, ...], code: str, note: str, rule: Rule | None = None) -> Reply:
        response = self._response(req.message, echo, code, req.now)
        data = self._frame(response, req.envelope)
        self.journal.record(Unit((self._entry_in(req, note), self._entry_out(req, response)), at=req.at))
        return _reply(data, rule)

    def _undecodable(self, exc: CodecError, envelope: Envelope, peer: str, now: datetime) -> Reply:
        """Answer 30 to the MTI and STAN that could be read; otherwise close the connection."""
        error = str(exc)  # codec errors never quote field values
        partial = exc.partial or Message("")
        shown = redacted_fields(partial)
        log.warning("%s: undecodable message: %s; fields read: %s", peer, error, shown)
        at = _stamp(now)
        entry_in = MessageEntry(at, "in", peer, partial.get(41), partial.mti or "????", partial.get(11), shown, None, error)
        answer = self._format_error_answer(partial, envelope)
        if answer is None:
            self.journal.record(Unit((entry_in,), at=at))
            return Reply(close=True)
        response, data = answer
        entry_out = MessageEntry(at, "out", peer, response.get(41), response.mti, response.get(11),
                                 redacted_fields(response), "30")
        self.journal.record(Unit((entry_in, entry_out), at=at))
        return Reply(data)

    def _format_error_answer(self, partial: Message, envelope: Envelope) -> tuple[Message, bytes] | None:
        stan = partial.get(11)
        if not (_is_request_mti(partial.mti) and stan and len(stan) == 6 and stan.isdigit()):
            return None
        fields = {11: stan, 39: "30"}
        tid = partial.get(41)
        for attempt in ({**fields, 41: tid} if tid else None, fields):
            if attempt is None:
                continue
            response = Message(response_mti(partial.mti), attempt)
            try:
                return response, self._frame(response, envelope, sign=False)
            except (CodecError, FramingError):
                continue
        return None

    def _malfunction(self, message: Message | None, envelope: Envelope | None) -> Reply:
        """96 to a request that hit an internal fault, unjournaled (the journal may be what failed)."""
        if message is None or envelope is None:
            return Reply(close=True)
        answer = self._format_error_answer(message, envelope)
        if answer is None:
            return Reply(close=True)
        response, _ = answer
        response[39] = "96"
        try:
            return Reply(self._frame(response, envelope, sign=False))
        except (CodecError, FramingError):
            return Reply(close=True)

    # ---- building blocks ----

    def _response(self, request: Message, echo: tuple[int, ...], code: str, now: datetime, stamp: bool = True) -> Message:
        fields = {n: request.fields[n] for n in echo if n in request.fields}
        for n in self._role_fields:
            if n in request.fields:
                fields[n] = request.fields[n]
        if stamp:
            fields[12] = f"{now.hour:02d}{now.minute:02d}{now.second:02d}"
            fields[13] = f"{now.month:02d}{now.day:02d}"
        fields[39] = code
        return Message(response_mti(request.mti), fields)

    def _frame(self, response: Message, envelope: Envelope, sign: bool = True) -> bytes:
        """The framed answer; answers to financial requests and reversals carry a MAC once the terminal has a key."""
        key = self._mac_key(response.get(41)) if sign and response.mti[1:3] in _MACED_ANSWERS else None
        if key is None or self._mac is None:
            response.fields.pop(self._mac.field_for(response) if self._mac else 64, None)
            return frame(self.framing, self.codec.encode(response), envelope.reply())
        return frame(self.framing, self._mac.sign(response, key), envelope.reply())

    def _rrn(self, now: datetime) -> str:
        """12 digits: year digit and day of year (YDDD), then a host-wide sequence claimed from the journal."""
        if self._rrn_next >= self._rrn_end:
            self._rrn_next = self.journal.reserve("rrn", _RRN_BLOCK)
            self._rrn_end = self._rrn_next + _RRN_BLOCK
        number = self._rrn_next
        self._rrn_next += 1
        return f"{_year_and_day(now.date())}{number % 100_000_000:08d}"

    def _rule_for(self, message: Message, card: CardData | None) -> Rule | None:
        amount = message.get(4)
        return self.rules.match(Request(
            mti=message.mti,
            amount=int(amount) if amount and amount.isdigit() else None,
            terminal=message.get(41),
            processing_code=message.get(3),
            card_last4=card.pan[-4:] if card and card.pan else None,
            pan=card.pan if card else None,
        ))

    def _entry_in(self, req: _Request, note: str | None) -> MessageEntry:
        m = req.message
        return MessageEntry(req.at, "in", req.peer, m.get(41), m.mti, m.get(11), redacted_fields(m), None, note)

    def _entry_out(self, req: _Request, response: Message, why: str | None = None) -> MessageEntry:
        """The message-log entry of an answer; also the one log line per answer an operator watches.

        `why` is a decline's reason (pipeline reasons never carry card data), so an operator
        watching the log sees that a 96 came from an unreachable HSM, not only that it came.
        """
        if log.isEnabledFor(logging.INFO):
            m = req.message
            amount = f" amount {m[4]}" if 4 in m else ""
            reason = f" ({why})" if why else ""
            log.info("%s %s tid %s stan %s%s -> %s %s%s", req.peer, m.mti, m.get(41), m.get(11), amount,
                     response.mti, response.get(39), reason)
        return MessageEntry(req.at, "out", req.peer, response.get(41), response.mti, response.get(11),
                            redacted_fields(response), response.get(39))


def build_host(
    dialect: str | Dialect,
    db_path: str | Path,
    fixtures_dir: str | Path | None = None,
    clock: Clock = system_clock,
    rng: random.Random | None = None,
    hsm: HsmClient | None = None,
    lmk: VariantLmk | None = None,
    rules_file: str | Path | None = None,
    permissive: PermissiveSettings | None = None,
) -> HostCore:
    """A host core wired from fixtures, with its journal at `db_path` (accounts seeded on first open).

    `hsm` checks PINs; None runs an HSM in this process. `lmk` is that HSM's LMK (default: the test LMK).
    `rules_file` replaces the fixtures' host_rules.yaml (reloaded as it changes); host.yaml gives the settings.
    `permissive` serves the permissive profile with those settings (acquirer/permissive.py).
    """
    dialect = dialect if isinstance(dialect, Dialect) else load_dialect(dialect)
    registry = (PermissiveRegistry if permissive is not None else Registry).from_fixtures(fixtures_dir)
    issuer = IssuerStub.from_fixtures(fixtures_dir)
    rules = Rules.from_file(rules_file) if rules_file is not None else Rules.from_fixtures(fixtures_dir)
    settings = HostSettings.from_fixtures(fixtures_dir)
    journal = Journal(db_path, rng=rng, background_checkpoints=True)
    wallets = WalletNetwork.from_fixtures(fixtures_dir)
    journal.seed_accounts(AccountBalance(a.id, a.currency, a.opening_balance) for a in issuer.accounts())
    journal.seed_accounts(AccountBalance(w.journal_account_id, w.currency, w.opening_balance) for w in wallets.accounts())
    if permissive is not None:
        journal.seed_accounts(permissive_accounts())
    return HostCore(
        dialect, journal, registry, issuer, rules, clock=clock, rng=rng, hsm=hsm, lmk=lmk,
        preauth_hold=settings.preauth_hold, completion_tolerance_percent=settings.completion_tolerance_percent,
        wallets=wallets, qr_settings=settings.qr, cutover_time=settings.cutover_time, fee_settings=settings.fees,
        steps=permissive_steps(permissive) if permissive is not None else STEPS, permissive=permissive,
    )


def _balance_field(balance: int, currency: str) -> str:
    """Field 54: account type 00, amount type 02 (available balance), currency, C or D, 12 digits."""
    return f"0002{currency}{'C' if balance >= 0 else 'D'}{abs(balance):012d}"


def _mismatch(reversal: Message, original: Transaction) -> str | None:
    """Why a reversal cannot be for `original` although it names its key, or None.

    A terminal that lost its state reuses STANs: its reversal of a purchase
    the host never saw must not undo another purchase that had that STAN.
    """
    amount = reversal.get(4)
    if amount is not None and original.amount is not None and amount.isdigit() and int(amount) != original.amount:
        return f"amount {int(amount)} is not the original's {original.amount}"
    code = reversal.get(3)
    if code is not None and original.processing_code is not None and code != original.processing_code:
        return f"processing code {code} is not the original's {original.processing_code}"
    return None


@lru_cache(maxsize=4)
def _year_and_day(day: date) -> str:
    """YDDD: last digit of the year and day of the year, as an RRN starts."""
    return f"{day.year % 10}{day.timetuple().tm_yday:03d}"


def _stamp(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds")


def _is_request_mti(mti: str) -> bool:
    return len(mti) == 4 and mti.isdigit() and mti[2] in "02"

