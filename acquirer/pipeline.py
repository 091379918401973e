"""The authorization pipeline: a list of small steps over a transaction
context, each able to decline with an ISO 8583 response code.

The first step that declines decides the answer, and its name is journaled
(`decline_step`) with a reason, so a tester sees why a request failed. A
step that raises declines with 96 instead of taking the host down. Reasons
never contain card data: they end up in the journal.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from pathlib import Path
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Sequence

from possim.wire.message import Message
from possim.wire.money import currency as find_currency
from possim.wire.transactions import TransactionKind

from .journal import APPROVED, HELD, Hold, PinTries, TerminalSession, Transaction

if TYPE_CHECKING:
    from possim.wire.dialect import Dialect

    from .issuer import Account, IssuerStub
    from .journal import Journal
    from .pin_check import PinVerifier
    from .registry import Merchant, Registry, TerminalProfile
    from .rules import Rule

log = logging.getLogger("possim.host")

MANDATORY_FIELDS = (3, 4, 11, 22, 41, 42, 49)
DEBITS = frozenset({"sale", "preauth", "completion", "offline", "authorization", "fee_payment"})
"""Kinds that take (or hold) the cardholder's money: account rules apply to them."""
FUNDED = frozenset({"sale", "preauth", "authorization", "fee_payment"})
CARDLESS = frozenset({"sale_void", "completion_void"})
"""Kinds a terminal may send without the card: the original, named by RRN, tells whose account it is."""
"""Kinds declined 51 without the funds; a completion was held for, an offline sale already approved."""


@dataclass(frozen=True)
class Decline:
    code: str
    reason: str


@dataclass(frozen=True)
class CardData:
    """The card as presented: track 2 when swiped, field 2 and 14 when keyed."""

    pan: str | None
    expiry: str | None
    keyed: bool
    problem: str | None = None
    """Why the card data cannot be read (a malformed track); never shows the data."""


def read_card(message: Message) -> CardData:
    track = message.get(35)
    if track is not None:
        for separator in "D=":
            if separator in track:
                pan, _, rest = track.partition(separator)
                break
        else:
            return CardData(None, None, False, "track 2 has no field separator")
        if not 12 <= len(pan) <= 19 or len(rest) < 7:
            return CardData(None, None, False, "track 2 is not PAN, separator, expiry and service code")
        return CardData(pan, rest[:4], False)
    pan = message.get(2)
    return CardData(pan, message.get(14), True)


def luhn_ok(pan: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(pan)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


@dataclass(frozen=True)
class Services:
    """What steps consult: configuration, the issuer stub, the journal (read only) and the HSM."""

    dialect: Dialect
    registry: Registry
    issuer: IssuerStub
    journal: Journal
    pins: PinVerifier


@dataclass
class Context:
    """One request on its way through the steps; steps fill in what they learn."""

    message: Message
    now: datetime
    business_date: str
    services: Services
    card: CardData
    rule: Rule | None = None
    session: TerminalSession | None = None
    """The terminal's session at the host (sign-on date, open batch, PIN key), read once per request."""
    pan_hash: str | None = None
    """The keyed hash of the card's PAN, computed once per request."""
    terminal: TerminalProfile | None = None
    merchant: Merchant | None = None
    amount: int | None = None
    currency: str | None = None
    account: Account | None = None
    pin_tries: PinTries | None = None
    """The card's wrong-PIN count after this request, when the PIN step changed it."""
    kind: TransactionKind | None = None
    """The transaction kind the request's MTI, processing code and condition name; None: not one we know."""
    original: Transaction | None = None
    """The transaction a void, refund, completion or pre-auth void names by its RRN."""
    hold: Hold | None = None
    """The pre-authorization hold a completion or pre-auth void acts on."""
    preauth_tolerance_percent: int = 15


Step = Callable[[Context], "Decline | None"]


@dataclass(frozen=True)
class Outcome:
    code: str
    step: str | None = None
    reason: str | None = None

    @property
    def approved(self) -> bool:
        return self.code == "00"


def terminal_signed_on(ctx: Context) -> Decline | None:
    dialect, registry = ctx.services.dialect, ctx.services.registry
    tid = ctx.message[41]
    refusal = registry.refusal(tid, ctx.message.get(42))
    if refusal is not None:
        return Decline(dialect.response_code("terminal_unknown"), refusal)
    session = ctx.session
    if session is None or session.signed_on_date != ctx.business_date:
        return Decline(dialect.response_code("not_signed_on"), f"terminal {tid} has not signed on for {ctx.business_date}")
    ctx.terminal = registry.terminal(tid)
    ctx.merchant = registry.merchant(ctx.terminal.mid) if ctx.terminal else None
    return None


def fields_valid(ctx: Context, optional: frozenset[int] = frozenset()) -> Decline | None:
    """The mandatory fields are there and readable, and name a transaction kind of the dialect.

    `optional`: mandatory fields a host profile lets a request leave out (the
    permissive profile's merchant ID, and expiry when it checks none).
    """
    message = ctx.message
    if ctx.kind is None:
        return Decline("12", f"no transaction of this dialect is MTI {message.mti} with processing code "
                             f"{message.get(3)} and condition {message.get(25) or '00'}")
    balance, cardless = ctx.kind.name == "balance", _cardless(ctx)
    missing = [str(n) for n in MANDATORY_FIELDS
               if n not in message and n not in optional and not (balance and n == 4) and not (cardless and n == 22)]
    if ctx.services.dialect.convention("transmission_datetime") and 7 not in message:
        missing.append("7")
    if ctx.card.problem is not None:
        return Decline("30", ctx.card.problem)
    if ctx.card.pan is None:
        if not cardless:
            missing.append("2 or 35")
    elif ctx.card.expiry is None and 14 not in optional:
        missing.append("14")
    if missing:
        return Decline("30", f"missing mandatory field {', '.join(missing)}")
    if ctx.kind.references_original and 37 not in message:
        return Decline("30", f"missing mandatory field 37 (the original's RRN, for a {ctx.kind.name})")
    amount = message.get(4, "0")
    if not amount.isdigit() or (int(amount) == 0 and not balance):
        return Decline("13", "amount is zero or not numeric")
    try:
        known = find_currency(message[49]).numeric == message[49]
    except ValueError:
        known = False
    if not known:
        return Decline("30", f"currency {message[49]!r} is not an ISO 4217 numeric code")
    ctx.amount, ctx.currency = int(amount), message[49]
    return None


def scenario_rules(ctx: Context) -> Decline | None:
    if ctx.rule is not None and ctx.rule.respond is not None:
        return Decline(ctx.rule.respond, f"scenario rule {ctx.rule.name!r}")
    return None


def _cardless(ctx: Context) -> bool:
    return ctx.card.pan is None and ctx.kind is not None and ctx.kind.name in CARDLESS


def card_present(step: Step) -> Step:
    """A card check that a void sent without the card skips: its original was checked when it was approved."""

    def check(ctx: Context) -> Decline | None:
        return None if _cardless(ctx) else step(ctx)

    check.__name__ = step.__name__
    check.__doc__ = step.__doc__
    return check


@card_present
def card_number(ctx: Context) -> Decline | None:
    pan = ctx.card.pan or ""
    if not (12 <= len(pan) <= 19 and pan.isdigit() and luhn_ok(pan)):
        return Decline("14", "PAN fails the Luhn check")
    return None


@card_present
def card_expiry(ctx: Context) -> Decline | None:
    expiry = ctx.card.expiry or ""
    if len(expiry) != 4 or not expiry.isdigit() or not 1 <= int(expiry[2:]) <= 12:
        return Decline("54", "expiry date is not a valid YYMM")
    if (2000 + int(expiry[:2]), int(expiry[2:])) < (ctx.now.year, ctx.now.month):
        return Decline("54", f"card expired at the end of {expiry[2:]}/{expiry[:2]}")
    return None


@card_present
def keyed_entry(ctx: Context) -> Decline | None:
    if ctx.card.keyed and ctx.merchant is not None and not ctx.merchant.allow_manual_entry:
        return Decline("58", f"merchant {ctx.merchant.id} does not accept keyed entry")
    return None


@card_present
def issuer_available(ctx: Context) -> Decline | None:
    return ctx.services.issuer.availability(ctx.card.pan or "")


@card_present
def card_status(ctx: Context) -> Decline | None:
    return ctx.services.issuer.card_refusal(ctx.card.pan or "")


@card_present
def pin_verified(ctx: Context) -> Decline | None:
    """Field 52, when present, must hold the card's PIN; the issuer allows a few wrong ones a day.

    The wrong PIN that uses up the last try is answered 75, and so is every
    PIN for that card until the business day ends.
    """
    block = ctx.message.get(52)
    if block is None:
        return None
    services, tid, pan = ctx.services, ctx.message[41], ctx.card.pan or ""
    issuer, card = services.issuer.issuer_for(pan), services.issuer.card(pan)
    if issuer is None or card is None:
        raise LookupError("card passed the issuer checks but is not on file")
    tries = issuer.pin.tries if issuer.pin is not None else 0
    pan_hash = ctx.pan_hash
    assert pan_hash is not None, "the core hashes every PAN it reads"
    failures = services.journal.pin_failures(pan_hash, ctx.business_date)
    if issuer.pin is not None and failures >= tries:
        return Decline("75", f"PIN tries exceeded: {failures} wrong PINs today, {tries} allowed")
    session = ctx.session
    check = services.pins.check(
        tid=tid, tpk=session.pin_key if session else None, ksn=services.dialect.get_role(ctx.message, "ksn"),
        pin_block=block, pan=pan, issuer=issuer, card=card,
    )
    if check.outcome == "verified":
        if failures:
            ctx.pin_tries = PinTries(pan_hash, ctx.business_date, 0)
        return None
    if check.outcome != "wrong":
        return Decline(check.code or "96", check.reason)
    failures += 1
    ctx.pin_tries = PinTries(pan_hash, ctx.business_date, failures)
    if failures >= tries:
        return Decline("75", f"{check.reason}: wrong PIN {failures} of {tries}, no tries left today")
    return Decline("55", f"{check.reason}: wrong PIN {failures} of {tries}")


def original_valid(ctx: Context) -> Decline | None:
    """A void, refund, completion or pre-auth void must name (field 37) an original it may act on."""
    kind = ctx.kind
    if kind is None or not kind.references_original:
        return None
    journal, message = ctx.services.journal, ctx.message
    original = journal.transaction_by_rrn(message[37])
    if original is None or original.merchant_id != message.get(42):
        return Decline("25", f"no transaction with RRN {message[37]} for merchant {message.get(42)}")
    ctx.original = original
    wanted = {"sale_void": ("sale",), "completion_void": ("completion",), "refund": ("sale", "completion", "offline"),
              "completion": ("preauth",), "preauth_void": ("preauth",)}[kind.name]
    if original.kind not in wanted or original.response_code != "00":
        return Decline("12", f"RRN {message[37]} is a {original.kind or original.mti} {original.status}, "
                             f"not an approved {' or '.join(wanted)}")
    if original.status != APPROVED:
        return Decline("12", f"the original (RRN {message[37]}) is {original.status}")
    if ctx.currency != original.currency:
        return Decline("12", f"currency {ctx.currency} is not the original's {original.currency}")
    if ctx.card.pan is not None and ctx.pan_hash != original.pan_hash:
        return Decline("25", f"the card presented is not the card of RRN {message[37]}")
    if kind.name in ("sale_void", "completion_void"):
        return _voidable(ctx, original)
    if kind.name == "refund":
        remaining = (original.amount or 0) - original.refunded_amount
        if (ctx.amount or 0) > remaining:
            return Decline("13", f"refund of {ctx.amount} is above the {remaining} still refundable of RRN {message[37]}")
        return None
    if message.get(38) != original.auth_code:
        return Decline("25", f"no pre-authorization with RRN {message[37]} and authorization code {message.get(38)}")
    hold = journal.hold(original.id or 0)
    if hold is None or hold.state != HELD:
        return Decline("12", f"the pre-authorization (RRN {message[37]}) is {hold.state if hold else 'not held'}")
    ctx.hold = hold
    if kind.name == "preauth_void" and ctx.amount != hold.amount:
        return Decline("13", f"cancel of {ctx.amount}: the pre-authorization holds {hold.amount}")
    if kind.name == "completion":
        ceiling = hold.amount * (100 + ctx.preauth_tolerance_percent) // 100
        if (ctx.amount or 0) > ceiling:
            return Decline("13", f"completion of {ctx.amount} is above the pre-authorized {hold.amount}"
                                 f" plus {ctx.preauth_tolerance_percent}% ({ceiling})")
    return None


def _voidable(ctx: Context, original: Transaction) -> Decline | None:
    """A void cancels a transaction of the same terminal's open batch, for exactly its amount."""
    session = ctx.session
    if original.terminal_id != ctx.message[41] or session is None or original.batch_number != session.batch_number:
        return Decline("12", f"RRN {ctx.message[37]} is not in terminal {ctx.message[41]}'s open batch")
    if ctx.amount != original.amount:
        return Decline("13", f"void of {ctx.amount}: the original was {original.amount}")
    if original.refunded_amount:
        return Decline("12", f"RRN {ctx.message[37]} was refunded in part ({original.refunded_amount}): it cannot be voided")
    return None


def account_rules(ctx: Context) -> Decline | None:
    issuer = ctx.services.issuer
    if ctx.original is not None:  # what an original's transaction moves, moves on the original's account
        account = issuer.account(ctx.original.account_id or "")
    else:
        card = issuer.card(ctx.card.pan or "")
        account = issuer.account(card.account_id) if card else None
    if account is None:
        raise LookupError("card on file without an account")
    ctx.account = account
    if ctx.kind is None or ctx.kind.name not in DEBITS:
        return None
    return issuer.account_refusal(account, ctx.amount or 0, ctx.currency or "")


def funds(ctx: Context) -> Decline | None:
    assert ctx.account is not None
    if ctx.kind is None or ctx.kind.name not in FUNDED:
        return None
    balance = ctx.services.journal.balance(ctx.account.id)
    if balance is None:
        raise LookupError("account missing from the journal")
    return ctx.services.issuer.funds_refusal(balance, ctx.amount or 0)


STEPS: tuple[Step, ...] = (
    terminal_signed_on,
    fields_valid,
    scenario_rules,
    card_number,
    card_expiry,
    keyed_entry,
    issuer_available,
    card_status,
    pin_verified,
    original_valid,
    account_rules,
    funds,
)


def run(steps: Sequence[Step], ctx: Context) -> Outcome:
    for step in steps:
        try:
            decline = step(ctx)
        except Exception as exc:  # a faulty step must not stop the host
            log_fault(f"step {step.__name__}", exc)
            return Outcome("96", step.__name__, f"internal fault: {type(exc).__name__}")
        if decline is not None:
            return Outcome(decline.code, step.__name__, decline.reason)
    return Outcome("00")


def fingerprint(message: Message, pan_hash: str | None) -> str:
    """What makes two requests with one key the same request: MTI class, processing code, amount, card."""
    content = f"{message.mti[1]}|{message.get(3)}|{message.get(4)}|{pan_hash}"
    return hashlib.sha256(content.encode()).hexdigest()[:32]


def log_fault(where: str, exc: BaseException) -> None:
    """Log an internal fault in one line — its type and where it was raised — never its message,
    which might quote card data. The whole traceback goes to the debug level."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    log.error("%s failed with %s%s", where, type(exc).__name__, place)
    log.debug("traceback of that %s:\n%s", type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)).rstrip())
