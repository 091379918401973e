"""The permissive host profile (`possim host run --permissive`): a host any ISO 8583 tool can drive.

The standard profile answers only the terminals, merchants and cards of the
fixtures, and only after a sign-on. A team pointing a third-party load or
test tool at the host has none of them: the tool's terminal IDs are its own,
it sends no sign-on, its cards are whatever passes a Luhn check. This profile
changes three things and nothing else (docs/permissive.md):

- who may call: every terminal and merchant ID, signed on or not
  (`PermissiveRegistry`, and the `terminal_accepted` step);
- how a card request is decided (`permissive_steps`): fields, scenario
  rules, Luhn (14), expiry only when configured (54), the original a void,
  refund or completion names, and one amount limit (61). The fixtures'
  issuers, cards, accounts and balances are not consulted, and a PIN is not
  verified: there is no card record to verify it against;
- the MAC: checked when a request carries one and the terminal holds a MAC
  key from a sign-on, not required otherwise (`carries_mac`).

Approvals post to one journal account, `PERMISSIVE`, so voids, refunds,
completions and reversals move money and update their originals exactly as
in the standard profile; the journal row, its masked PAN and the message log
are the standard ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from possim.fixtures import FixtureError, fixture_path, load_fixture
from possim.hsm_mock.message_mac import SECONDARY_MAC_FIELD
from possim.wire.dialect import Dialect
from possim.wire.message import Message

from .issuer import Account
from .journal import AccountBalance, TerminalSession
from .pipeline import (
    DEBITS, Context, Decline, Step, card_expiry, card_number, fields_valid, original_valid, scenario_rules,
)
from .registry import Registry
from .settings import SETTINGS_FILE, section, whole

ACCOUNT_ID = "PERMISSIVE"
"""The journal account every permissive approval posts to (and every void, refund or reversal gives back to)."""
HOST_CURRENCY = "156"
"""The fixtures' merchants' currency: the account is opened in it, and `--permissive-limit` is typed in its major units."""
DEFAULT_LIMIT = 1_000_000
"""10,000.00 in a two-decimal currency."""
_SETTINGS = ("limit", "check_expiry")


@dataclass(frozen=True)
class PermissiveSettings:
    """host.yaml's `permissive:` section, which `host run --permissive-limit` and `--check-expiry` override."""

    limit: int = DEFAULT_LIMIT
    """The largest amount a debit may have, in minor units of whatever currency field 49 names
    (the lab converts no currencies); above it, 61."""
    check_expiry: bool = False
    """Decline expired cards (54). Off by default: test tools send whatever expiry their card list holds."""

    @classmethod
    def from_fixtures(cls, folder: str | Path | None = None) -> PermissiveSettings:
        source = fixture_path(SETTINGS_FILE, folder)
        entry = section(load_fixture(SETTINGS_FILE, folder), "permissive", source)
        unknown = sorted(str(key) for key in entry if key not in _SETTINGS)
        if unknown:
            raise FixtureError(f"{source}: permissive.{unknown[0]} is not a setting (there are: {', '.join(_SETTINGS)})")
        check_expiry = entry.get("check_expiry", False)
        if not isinstance(check_expiry, bool):
            raise FixtureError(f"{source}: permissive.check_expiry must be true or false, got {check_expiry!r}")
        return cls(whole(entry, "permissive.limit", DEFAULT_LIMIT, source, least=1), check_expiry)


class PermissiveRegistry(Registry):
    """Every terminal and merchant ID may call. The fixtures' terminals keep their master keys (a sign-on
    still downloads working keys to them) and DUKPT setups; a terminal the fixtures lack gets no keys."""

    def refusal(self, tid: str, mid: str | None) -> str | None:
        return None


def terminal_accepted(ctx: Context) -> Decline | None:
    """Any terminal, signed on or not.

    One the host has never seen works in the batch a sign-on would open for
    it — the batch it reports (cup 60.2), else 000001 — so its sales can be
    voided in that batch, and a later sign-on and batch close count them.
    The session is not stored: a request changes no terminal's state.
    """
    if ctx.session is None:
        reported = ctx.services.dialect.get_role(ctx.message, "batch_number")
        batch = reported if reported and reported.isdigit() and int(reported) > 0 else "000001"
        ctx.session = TerminalSession(ctx.message[41], None, batch, ctx.now.isoformat(timespec="milliseconds"))
    return None


def permissive_steps(settings: PermissiveSettings) -> tuple[Step, ...]:
    """The authorization pipeline of the permissive profile (pipeline.STEPS is the standard one)."""
    optional = frozenset({42} if settings.check_expiry else {42, 14})

    def fields_present(ctx: Context) -> Decline | None:
        return fields_valid(ctx, optional)

    fields_present.__name__ = "fields_valid"  # the name journaled with a decline: the same check as ever

    def within_limit(ctx: Context) -> Decline | None:
        """Debits up to the limit; whatever is approved moves the permissive account — or, for a void,
        refund or completion of an original the standard profile approved, that original's own account."""
        original = ctx.original
        if original is not None and original.account_id not in (None, ACCOUNT_ID):
            ctx.account = ctx.services.issuer.account(original.account_id or "")
        else:
            ctx.account = Account(ACCOUNT_ID, ctx.currency or HOST_CURRENCY, 0)
        if ctx.kind is not None and ctx.kind.name in DEBITS and (ctx.amount or 0) > settings.limit:
            return Decline("61", f"amount above the permissive limit of {settings.limit}")
        return None

    expiry = (card_expiry,) if settings.check_expiry else ()
    return (terminal_accepted, fields_present, scenario_rules, card_number, *expiry, original_valid, within_limit)


def permissive_accounts() -> tuple[AccountBalance, ...]:
    """What the journal must hold for the profile's postings (opened at 0: its balance is what approvals took)."""
    return (AccountBalance(ACCOUNT_ID, HOST_CURRENCY, 0),)


def carries_mac(message: Message, dialect: Dialect) -> bool:
    """Whether a request has a MAC field at all (the dialect's, or 128): only then does this profile check it.
    A MAC in the wrong one of the two still counts as present, and then fails to verify."""
    return int(dialect.roles["mac"]) in message or SECONDARY_MAC_FIELD in message
