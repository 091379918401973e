"""Shared builders of the settlement and reconciliation tests (no tests here).

Every journal these tests settle is written by a real host answering real
ISO 8583 bytes on a loopback port: our Terminal for what a terminal does
(sales, voids, refunds, reversals, QR scans, batch closes) and the byte-level
TestTerminal of host_support for what a well-behaved terminal never sends
(a USD sale on a CNY terminal, a reversal of a STAN the host never saw).
Hand-written rows would test settlement against our idea of the journal,
not against the journal the host writes.

A scenario is built once per test module and copied per test: copying a
closed SQLite file is a millisecond, a host day is half a second.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import yaml

import possim.fixtures
from host_support import RunningHost, TestTerminal, purchase, reversal, running_host, sign_on
from possim.acquirer.core import build_host
from possim.fixtures import load_fixture
from possim.terminal import Terminal, TerminalState, load_profile, resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.messages import build_purchase
from possim.terminal.wallet_app import login, payment_code
from possim.wire.clock import SteppingClock
from possim.wire.codec import Codec
from possim.wire.framing import frame, split_envelope

D, D1 = "2026-06-15", "2026-06-16"
"""The business dates of the scenarios: in the past, so `possim settle cutover` (system clock) may close them."""
M1, M2 = "898310048160001", "898310048160002"
BUILTIN_FIXTURES = Path(possim.fixtures.__file__).parent
FULL_PANS = tuple(c["pan"] for c in load_fixture("cards.yaml")["cards"])


def day(iso: str, offset: int = 0) -> str:
    return (date.fromisoformat(iso) + timedelta(days=offset)).isoformat()


def at(iso: str, hour: int, minute: int = 0) -> datetime:
    return datetime.fromisoformat(iso).replace(hour=hour, minute=minute)


def move_to(clock: SteppingClock, when: datetime) -> None:
    """Set a stepping clock: its next reading is `when` plus one step."""
    clock.advance(when - clock())


# ---- fixtures and fees ----


def lab_fixtures(folder: Path, cutover_time: str | None = None) -> Path:
    """A copy of the built-in fixtures folder, host.yaml's settlement.cutover_time edited as a user would."""
    shutil.copytree(BUILTIN_FIXTURES, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    if cutover_time is not None:
        host_yaml = folder / "host.yaml"
        text, n = re.subn(r'(?m)^(\s*cutover_time:\s*)"[^"]*"', rf'\g<1>"{cutover_time}"', host_yaml.read_text())
        assert n == 1, "host.yaml has no settlement.cutover_time line to edit"
        host_yaml.write_text(text)
    return folder


def expected_fee(merchant: str, channel: str, amount: int, refund: bool = False) -> int:
    """The fee fixtures/fees.yaml's comment describes, worked out here with Decimal (not by settlement's code):
    rate_bps basis points rounded half up, plus fixed, held between min and max (0: no cap); a refund gives back
    the rate part only, capped by max."""
    data = yaml.safe_load((BUILTIN_FIXTURES / "fees.yaml").read_text())
    rule = (data.get("merchants") or {}).get(merchant, {}).get(channel) or data["default"].get(channel) or {}
    rate = int((Decimal(amount) * rule.get("rate_bps", 0) / 10_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    cap = rule.get("max", 0)
    if refund:
        return min(rate, cap) if cap else rate
    fee = max(rate + rule.get("fixed", 0), rule.get("min", 0))
    return min(fee, cap) if cap else fee


# ---- a host on a loopback port, on a clock the test moves ----


@dataclass
class Lab:
    host: RunningHost
    clock: SteppingClock
    folder: Path

    @property
    def db(self) -> Path:
        return self.host.db_path

    def pos(self, tid: str, state: Path | None = None) -> Terminal:
        """Our Terminal for `tid` over TCP (use it inside one event loop: its link belongs to that loop);
        `state` is its state file, for a terminal that worked against another host before."""
        port = self.host.port
        profile = load_profile(tid, dialect="cup", host=f"127.0.0.1:{port}", timeout=3.0, reversal_retries=1)
        return Terminal(profile, TcpLink("127.0.0.1", port, profile.framing),
                        TerminalState(tid, state or self.folder / f"terminal-{tid}.sqlite"), clock=self.clock)

    def raw(self) -> TestTerminal:
        return self.host.terminal(timeout=3.0)


@contextmanager
def lab(folder: Path, start: datetime, fixtures: Path | None = None) -> Iterator[Lab]:
    """A cup host in its own thread; leaving the block stops it and closes its journal (checkpointing the WAL)."""
    folder.mkdir(parents=True, exist_ok=True)
    clock = SteppingClock(start, timedelta(milliseconds=5))
    core = build_host("cup", folder / "journal.sqlite", fixtures, clock=clock)
    with running_host(folder, "cup", core=core) as host:
        yield Lab(host, clock, folder)


async def close_all(*terminals: Terminal) -> None:
    for t in terminals:
        await t.link.close()
        t.state.close()


async def uncounted_sale(t: Terminal, amount: int, card: str = "approve") -> dict[str, Any]:
    """A sale the host approves on the terminal's batch and STAN sequence, sent on a second connection so the
    terminal's batch never counts it: an answer lost, its reversal lost with the terminal's memory."""
    p = t.profile
    request = build_purchase(t.dialect, tid=p.tid, mid=p.mid, stan=t.state.next_stan(), now=t.clock(), amount=amount,
                             currency=p.currency, card=resolve_card(card), manual=False, pin_pad=p.pin_pad,
                             batch_number=t.state.batch_number)
    link = TcpLink(t.link.host, t.link.port, p.framing)
    try:
        payload = await link.exchange(frame(p.framing, t.encode(request)), 3.0)
    finally:
        await link.close()
    answer = Codec(t.dialect).decode(split_envelope(p.framing, payload)[1])
    return {"stan": request[11], "rrn": answer.get(37), "response_code": answer[39], "amount": amount}


def copy_journal(src: Path, folder: Path) -> Path:
    """The closed journal file, copied: the host is stopped, so there is no WAL beside it to lose."""
    assert not Path(f"{src}-wal").exists(), "copy a journal only after its host has stopped"
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, folder / "journal.sqlite"))


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection, committed and closed (a connection left to the garbage
    collector keeps the WAL file beside the journal)."""
    with closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(sql, args).fetchall()


# ---- scenarios ----


@dataclass(frozen=True)
class Made:
    """A transaction a scenario made, as the terminal saw it: enough to find its journal row by RRN."""

    tid: str
    stan: str
    rrn: str | None
    amount: int
    response_code: str


def _made(result: Any) -> Made:
    return Made(result.tid, result.stan, result.rrn, result.amount or 0, result.response_code)


def build_two_days(folder: Path) -> dict[str, Made]:
    """Day D at both merchants on every channel, terminal batches closed in balance; then day D+1 (the clock
    reaches the next calendar day, the terminals sign on again) with one sale per merchant. Nothing cut over.

    Amounts are picked so the half-up fee differs from round-half-even, and so M1's own unionpay rule hits its
    min and its max."""
    made: dict[str, Made] = {}
    with lab(folder, at(D, 9)) as lb:
        async def business() -> None:
            a, b = lb.pos("10000001"), lb.pos("10000002")
            try:
                for t in (a, b):
                    assert (await t.sign_on()).approved
                approve, approve2 = resolve_card("approve"), resolve_card("approve2")
                made["m1_unionpay"] = _made(await a.purchase(11500, approve))     # 30 bp: 34.5 -> 35
                made["m1_unionpay_min"] = _made(await a.purchase(250, approve))   # 0.75 -> 1, min 10
                made["m1_unionpay_max"] = _made(await a.purchase(700000, approve2))  # 2100, max 2000
                made["m1_visa"] = _made(await a.purchase(8040, resolve_card("over-limit")))  # 125 bp: 100.5 -> 101
                made["m1_qr"] = _made(await a.qr_scan(payment_code(login("alice"), lb.clock()), 2250))  # 20 bp: 4.5
                made["m2_unionpay"] = _made(await b.purchase(1750, approve2))     # 60 bp: 10.5 -> 11
                made["m2_refund"] = _made(await b.refund(750, approve2, made["m2_unionpay"].rrn or ""))  # 4.5 -> 5
                made["m2_reversed"] = _made(await b.purchase(2600, approve))
                assert (await b.reverse()).response_code == "00"
                made["m2_voided"] = _made(await b.purchase(3000, approve))
                made["m2_void"] = _made(await b.void(made["m2_voided"].stan))
                made["m2_declined"] = _made(await b.purchase(2000, resolve_card("insufficient")))
                made["m2_qr"] = _made(await b.qr_scan(payment_code(login("alice"), lb.clock()), 7500))  # 38 bp: 28.5
                with lb.raw() as c:  # a USD sale at M1's other terminal, whose batch stays open
                    assert c.exchange(sign_on(lb.host.dialect, "000001", tid="10000003", mid=M1))[39] == "00"
                    answer = c.exchange(purchase(lb.host.dialect, "000002", card="usd", amount=1160, tid="10000003",
                                                 mid=M1, currency="840", when=at(D, 9)))
                    made["m1_usd"] = Made("10000003", "000002", answer.get(37), 1160, answer[39])  # 125 bp: 14.5
                for t in (a, b):
                    closed = await t.batch_close()
                    assert closed.closed and closed.balanced, closed.message
                move_to(lb.clock, at(D1, 9))
                for t in (a, b):
                    assert (await t.sign_on()).approved
                made["next_m1"] = _made(await a.purchase(5550, approve))
                made["next_m2"] = _made(await b.purchase(4321, resolve_card("over-limit")))
            finally:
                await close_all(a, b)

        asyncio.run(business())
    expected = {"m2_declined": "51"}
    for name, m in made.items():
        assert m.response_code == expected.get(name, "00"), (name, m)
    return made


def build_exceptions_day(folder: Path) -> dict[str, Any]:
    """Day D with what reconciliation must find from the journal alone: terminal 10000001's batch closes out of
    balance without a sale the host approved (it uploads only the sale it counted), and terminal 10000002 sends
    a reversal of STAN 000777, which the host never saw."""
    made: dict[str, Any] = {}
    with lab(folder, at(D, 9)) as lb:
        async def business() -> None:
            a = lb.pos("10000001")
            try:
                assert (await a.sign_on()).approved
                made["counted"] = _made(await a.purchase(4100, resolve_card("approve")))
                made["uncounted"] = await uncounted_sale(a, 2300)
                closed = await a.batch_close()
                assert closed.closed and closed.balanced is False and closed.uploaded == 1, closed.message
            finally:
                await close_all(a)
            with lb.raw() as b:
                dialect = lb.host.dialect
                assert b.exchange(sign_on(dialect, "000001", tid="10000002", mid=M2))[39] == "00"
                never_sent = purchase(dialect, "000777", tid="10000002", mid=M2, amount=990, when=at(D, 9))
                answer = b.exchange(reversal(dialect, never_sent, "000777", when=at(D, 9)))
                made["orphan"] = {"tid": "10000002", "stan": "000777", "amount": 990, "response_code": answer[39]}

        asyncio.run(business())
    assert made["counted"].response_code == made["uncounted"]["response_code"] == "00"
    return made
