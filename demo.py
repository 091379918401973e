"""`possim demo`: one short business day, the whole product in one run.

An acquirer host starts in-process on an ephemeral loopback port with a
fresh journal, and checks PINs through a payShield-style HSM listening on
its own port; three POS terminals sign on and trade with the host, two over
real TCP and the third over a virtual serial cable (a pseudo-terminal pair,
STX/ETX/LRC frames with ACK/NAK): approvals, every decline the host produces, a malformed request,
a retransmission, a reused STAN, and a request the host answers too late so
the terminal reverses it by itself. Sign-on downloads working keys under
each terminal's master key; purchases, reversals and their answers carry a
MAC, and a message tampered with on the way is refused. PINs travel as
encrypted blocks (under the working PIN key, or DUKPT on the third
terminal) and are verified in the HSM against a Visa PVV or an IBM 3624
offset; three wrong PINs lock the card for the day. Every step states the answer it expects,
so the demo checks itself. The summary is read back from the journal and the
terminals' state files, not from the script.

This module may import every package, like cli.py; cli.py only prints what
it returns.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable, TextIO

from aiohttp import web

from possim.acquirer.partners import Partners
from possim.acquirer.journal import FeePayment, Journal
from possim.acquirer.serial_server import SerialHostServer
from possim.lab import LabHost, embedded_source, fleet_fixtures, host_process, lab_host
from possim.fixtures import scenario_pack
from possim.terminal.fleet.driver import LoadPlan, Mix
from possim.terminal.fleet.fleet import build_fleet, run_load
from possim.terminal.fleet.report import write_report
from possim.terminal.replay.junit import write_junit
from possim.terminal.replay.record import session_scenario
from possim.terminal.replay.scenario import load_scenarios
from possim.terminal.replay.suite import run_suite
from possim.wire.proxy import Exchange, FrameProxy
from possim.acquirer.finance.bureau import FinanceBureau
from possim.wire.nontax import MSG_PAYMENT_CONFIRM
from possim.settlement.errors import SettlementError
from possim.settlement.jobs import (
    daily_list, report_reconciled, run_cutover, run_make_file, run_recon, run_treasury,
)
from possim.terminal import Card, TcpLink, Terminal, TerminalState, load_profile, resolve_card
from possim.terminal.batch import batch_totals
from possim.terminal.qr_flows import collect, settle_scan
from possim.terminal.serial_link import SerialLink
from possim.terminal.wallet_app import WalletApp, login as wallet_login, payment_code, scanned_payload
from possim.wire.api_signature import SignatureError, Verifier
from possim.terminal.messages import build_purchase
from possim.wire.clock import Clock, system_clock
from possim.wire.codec import Codec
from possim.wire.emv_qr import decode_mpm
from possim.wire.framing import frame, split_envelope
from possim.wire.link_profile import load_link_profile
from possim.wire.message import Message
from possim.wire.pty_pair import PtyPair
from possim.wire.qr_image import qr_png, read_qr_png, terminal_screen_png
from possim.wire.signed_http import SignedClient

DEMO_SEED = 20261203
LOAD_TERMINALS = 10
LOAD_SECONDS = 2.0
LOAD_MIX = (("purchase", 80), ("refund", 5), ("qr", 15))
FEE_NOTICES = {"fine": "31010157462740291971", "licence": "31010156080501553255", "tuition": "31010195281670669848",
               "fee4": "31010120407659736338", "expired": "31010139944550089291"}
"""Sample notices of fixtures/finance.yaml."""
DEMO_CLEARING_INJECT = "missing=1,amount=1,duplicate=1,unknown=1,status=1,fee=1"
DEMO_BANK_INJECT = "amount=1,unidentified=1"
QR_PARTNER = "cityhall-web"
SERIAL_TERMINAL = "10000003"
"""The terminal that reaches the host over a virtual serial cable instead of TCP."""
SERIAL_PROFILE = load_link_profile("stx-etx-lrc")
TERMINAL_TIMEOUT = 1.0
"""Seconds the demo terminals wait for an answer; the host's late-answer rule waits far longer."""


@dataclass
class StepResult:
    number: int
    title: str
    terminal: str
    expected: str
    """Response code expected, or "reversed" for the late answer."""
    got: str
    detail: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.expected == self.got


@dataclass
class DemoReport:
    out: Path
    host: str
    dialect: str
    hsm: str = ""
    http: str = ""
    serial: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    journal: dict[str, Any] = field(default_factory=dict)
    terminals: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "out": str(self.out),
            "host": self.host,
            "hsm": self.hsm,
            "http": self.http,
            "serial": self.serial,
            "dialect": self.dialect,
            "steps": [
                {"step": s.number, "title": s.title, "terminal": s.terminal, "expected": s.expected,
                 "got": s.got, "ok": s.ok, "result": s.detail}
                for s in self.steps
            ],
            "journal": self.journal,
            "terminals": self.terminals,
            "files": self.files,
        }


def new_out_dir(parent: Path, clock: Clock = system_clock) -> Path:
    """A fresh folder for one demo run: possim-demo-YYYYMMDD-HHMMSS[-N]."""
    base = parent / f"possim-demo-{clock():%Y%m%d-%H%M%S}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


class _Raw:
    """Hand-made frames for what a well-behaved terminal never sends: garbage, repeats, reused STANs."""

    def __init__(self, terminal: Terminal, address: tuple[str, int]):
        self.terminal = terminal
        self.codec = Codec(terminal.dialect)
        self.link = TcpLink(*address, terminal.framing)

    def purchase(self, amount: int, card: Card, stan: str | None = None) -> Message:
        t = self.terminal
        return build_purchase(
            t.dialect, tid=t.profile.tid, mid=t.profile.mid, stan=stan or t.state.next_stan(), now=t.clock(),
            amount=amount, currency=t.profile.currency, card=card, manual=False,
            pin_pad=t.profile.pin_pad, batch_number=t.state.batch_number,
        )

    async def send(self, body: bytes) -> Message:
        payload = await self.link.exchange(frame(self.terminal.framing, body), TERMINAL_TIMEOUT)
        return self.codec.decode(split_envelope(self.terminal.framing, payload)[1])


async def run_demo(out: Path, dialect: str = "cup", clock: Clock = system_clock) -> DemoReport:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=False)
    files = {
        "journal": out / "journal.sqlite",
        "host_trace": out / "host-trace.log",
        "terminal_trace": out / "terminal-trace.log",
        "host_log": out / "host.log",
    }
    log_handler = _log_to(files["host_log"])
    partner_site = _PartnerSite()
    trace_file = files["terminal_trace"].open("a", encoding="utf-8")
    terminals: list[Terminal] = []
    try:
        async with lab_host(dialect, out, clock=clock, seed=DEMO_SEED, trace=files["host_trace"]) as lab:
            core, address = lab.core, lab.address
            await partner_site.start()
            cable = PtyPair()
            host_port, terminal_port = cable.start()
            serial_host = SerialHostServer(core, host_port, SERIAL_PROFILE)
            await serial_host.start()
            report = DemoReport(out=out, host=f"{address[0]}:{address[1]}", dialect=core.dialect.name)
            report.http = f"{lab.http_address[0]}:{lab.http_address[1]}"
            report.hsm = f"{lab.hsm_address[0]}:{lab.hsm_address[1]}"
            report.serial = {"host": host_port, "terminal": terminal_port, "link_profile": SERIAL_PROFILE.name}
            try:
                for tid in ("10000001", "10000002", "10000003"):
                    profile = load_profile(tid, dialect=dialect, host=report.host, timeout=TERMINAL_TIMEOUT)
                    state_path = out / "terminals" / f"{tid}.sqlite"
                    files[f"terminal_{tid}"] = state_path
                    link = SerialLink(terminal_port, SERIAL_PROFILE, profile.framing) if tid == SERIAL_TERMINAL \
                        else TcpLink(*address, profile.framing)
                    terminals.append(Terminal(profile, link, TerminalState(tid, state_path), clock=clock,
                                              trace=_writer(trace_file)))
                qr = _QrDay(report, out / "qr", partner_site, clock)
                await _business_day(report, terminals, address, qr)
                files.update({f"qr_{path.stem}": path for path in sorted((out / "qr").glob("*.png"))})
                files["finance"] = await _fee_day(report, terminals[1], lab, files["journal"], qr)
                files.update(await _settlement_days(report, terminals[1], files["journal"], out,
                                                    core.calendar.date_of(clock()), lab.finance_address, clock))
            finally:
                for t in terminals:
                    await t.link.close()
                await serial_host.stop()
                cable.stop()
        files.update(await _qa_day(report, out / "qa", dialect, clock))
        files.update(await _load_run(report, out / "load", dialect))
    finally:
        await partner_site.stop()
        trace_file.close()
        _stop_logging(log_handler)
    report.journal = _journal_summary(files["journal"])
    report.terminals = [_terminal_summary(t) for t in terminals]
    for t in terminals:
        t.state.close()
    report.files = {name: str(path) for name, path in files.items()}
    return report


def _log_to(path: Path) -> logging.Handler:
    """Send possim's own log (redacted by construction) to the demo folder instead of the console."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("possim")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def _stop_logging(handler: logging.Handler) -> None:
    logger = logging.getLogger("possim")
    logger.removeHandler(handler)
    logger.propagate = True
    handler.close()


def _writer(file: TextIO) -> Callable[[str], None]:
    def write(record: str) -> None:
        file.write(record)
        file.flush()

    return write


async def _business_day(report: DemoReport, terminals: list[Terminal], address: tuple[str, int], qr: _QrDay) -> None:
    t1, t2, t3 = terminals
    card = resolve_card
    not_signed_on = t2.dialect.response_code("not_signed_on")
    raw = _Raw(t1, address)

    async def step(title: str, terminal: Terminal, expected: str, action: Callable[[], Awaitable[Any]]) -> None:
        result = await action()
        detail = result.to_json() if hasattr(result, "to_json") else result
        got = detail.get("outcome") or detail.get("response_code") or "no answer"
        report.steps.append(StepResult(len(report.steps) + 1, title, terminal.profile.tid, expected, got, detail))

    def buy(terminal: Terminal, amount: int, name: str, **kw: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: terminal.purchase(amount, card(name), **kw)

    def right_pin(name: str) -> str:
        pin = card(name).pin
        assert pin is not None, f"cards.yaml gives card {name} no PIN"
        return pin

    await step("purchase before sign-on", t2, not_signed_on, buy(t2, 1000, "approve"))
    await step("sign-on", t1, "00", t1.sign_on)
    await step("sign-on", t2, "00", t2.sign_on)
    await step("sign-on (a DUKPT PIN pad, on a serial cable: STX/ETX/LRC frames, ACK/NAK)", t3, "00", t3.sign_on)
    await step("purchase 12.50, swiped", t1, "00", buy(t1, 1250, "approve"))
    await step("purchase 88.00, keyed", t1, "00", buy(t1, 8800, "approve2", manual=True))
    await step("purchase 230.00, swiped", t2, "00", buy(t2, 23000, "approve"))
    await step("insufficient funds", t1, "51", buy(t1, 2000, "insufficient"))
    await step("expired card", t1, "54", buy(t1, 1000, "expired"))
    await step("lost card", t1, "41", buy(t1, 1000, "lost"))
    await step("stolen card", t1, "43", buy(t1, 1000, "stolen"))
    await step("card restricted", t1, "57", buy(t1, 1000, "restricted"))
    await step("card blocked by issuer", t1, "05", buy(t1, 1000, "blocked"))
    await step("above the per-transaction limit", t1, "61", buy(t1, 15000, "over-limit"))
    await step("issuer down", t1, "91", buy(t1, 1000, "issuer-down"))
    await step("PAN fails Luhn", t1, "14", buy(t1, 1000, "invalid-pan"))
    await step("no issuer for the BIN", t1, "15", lambda: t1.purchase(1000, card("6011000000000004")))
    await step("zero amount", t1, "13", buy(t1, 0, "approve"))
    await step("cash advance not supported", t1, "12", buy(t1, 1000, "approve", processing_code="010000"))
    await step("purchase 25.00 with PIN (Visa PVV), PIN checked in the HSM over TCP", t1, "00",
               buy(t1, 2500, "approve", pin=right_pin("approve")))
    await step("purchase 50.00 with PIN (IBM 3624 offset)", t1, "00", buy(t1, 5000, "over-limit", pin=right_pin("over-limit")))
    await step("purchase 30.00 with PIN from the DUKPT PIN pad", t3, "00", buy(t3, 3000, "approve", pin=right_pin("approve")))
    await step("wrong PIN from the DUKPT PIN pad", t3, "55", buy(t3, 3000, "approve2", pin="1111"))
    await step("wrong PIN", t1, "55", buy(t1, 1000, "insufficient", pin="0000"))
    await step("wrong PIN again", t1, "55", buy(t1, 1000, "insufficient", pin="0000"))
    await step("third wrong PIN: tries exceeded", t1, "75", buy(t1, 1000, "insufficient", pin="0000"))
    await step("right PIN, but no tries left today", t1, "75", buy(t1, 1000, "insufficient", pin=right_pin("insufficient")))
    await step("system malfunction (scenario rule, amount 96.01)", t1, "96", buy(t1, 9601, "approve"))
    await step("keyed entry at a merchant that forbids it", t2, "58", buy(t2, 1000, "approve", manual=True))
    await step("malformed request: a non-digit in the amount", t1, "30", lambda: _malformed(raw, card("approve")))
    mac_error = t1.dialect.response_code("mac_error")
    await step("tampered message refused: amount changed after MACing", t1, mac_error, lambda: _tampered(raw, card("approve")))
    await step("retransmission answered identically, posted once (hand-made, outside the batch)", t1, "00", lambda: _retransmission(raw, card("approve2")))
    await step("new request reusing a STAN", t1, "94", lambda: _reused_stan(raw, card("approve2")))
    await step("answer too late: automatic reversal (rule, amount 68.01)", t1, "reversed", lambda: _late(t1, card("approve")))
    await step("purchase after the reversal", t1, "00", buy(t1, 4200, "approve"))
    await _transaction_set(step, t1, t2, t3, qr)


async def _transaction_set(
    step: Callable[[str, Terminal, str, Callable[[], Awaitable[Any]]], Awaitable[None]],
    t1: Terminal, t2: Terminal, t3: Terminal, qr: _QrDay,
) -> None:
    """Every other kind of transaction, then batch close: t1's batch lacks the hand-made retransmitted sale the
    host approved, so it closes out of balance and is uploaded; t2 and t3 close in balance."""
    card = resolve_card
    results: dict[str, Any] = {}

    def keep(name: str, action: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            results[name] = await action()
            return results[name]
        return run

    await step("chip sale 18.00 (field 55)", t2, "00", keep("chip", lambda: t2.purchase(1800, card("approve2"), entry="chip")))
    await step("contactless sale 6.50", t2, "00", lambda: t2.purchase(650, card("approve2"), entry="contactless"))
    await step("void of the chip sale", t2, "00", lambda: t2.void(results["chip"].stan))
    await step("sale 60.00 to refund in part", t2, "00", keep("to refund", lambda: t2.purchase(6000, card("approve2"))))
    await step("refund 25.00 of it (advice 0220)", t2, "00", lambda: t2.refund(2500, card("approve2"), results["to refund"].rrn))
    await step("refund above what remains", t2, "13", lambda: t2.refund(4000, card("approve2"), results["to refund"].rrn))
    await step("pre-authorization 120.00 (hold)", t2, "00", keep("hold", lambda: t2.preauth(12000, card("approve2"))))
    await step("completion 130.00 (within the tolerance)", t2, "00",
               lambda: t2.completion(13000, card("approve2"), results["hold"].rrn, results["hold"].auth_code))
    await step("pre-authorization 40.00", t2, "00", keep("hold2", lambda: t2.preauth(4000, card("approve2"))))
    await step("pre-authorization cancelled", t2, "00",
               lambda: t2.preauth_void(results["hold2"].rrn, results["hold2"].auth_code, 4000, card("approve2")))
    await step("balance inquiry (field 54)", t2, "00", lambda: t2.balance(card("approve2")))
    await step("offline sale 9.90, approved by the terminal", t2, "Y1", lambda: t2.offline(990, card("approve2")))
    await step("offline advice sent (0220)", t2, "00", lambda: _advices(t2))
    await qr.run(step, t2)
    await step("batch close, out of balance: the host has a sale the terminal's batch lacks; uploaded", t1,
               "out of balance, uploaded", lambda: _close(t1))
    await step("batch close in balance", t2, "in balance", lambda: _close(t2))
    await step("batch close in balance (DUKPT terminal)", t3, "in balance", lambda: _close(t3))
    if "batch_number" in t3.dialect.roles:  # a dialect whose 0500 names its batch can be told it is closed
        await step("closing the same batch again", t3, "80", lambda: _close_again(t3))


class _PartnerSite:
    """A partner's web shop: the notify_url the order API calls back; it checks each signature and acknowledges."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        partner = Partners.from_fixtures().get(QR_PARTNER)
        assert partner is not None
        self.partner = partner
        self._verifier = Verifier(lambda pid: partner.key if pid == partner.id else None, system_clock)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/notify", self._notified)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/notify"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notified(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self._verifier.verify(request.method, request.raw_path, body, request.headers)
        except SignatureError as exc:
            return web.json_response({"code": "FAIL", "message": exc.code}, status=401)
        self.events.append(json.loads(body)["event"])
        return web.json_response({"code": "SUCCESS"})


class _QrDay:
    """QR payments at the counter and on the web: every code shown is written as a PNG under qr/."""

    def __init__(self, report: DemoReport, folder: Path, site: _PartnerSite, clock: Clock):
        self.report, self.folder, self.site, self.clock = report, folder, site, clock
        folder.mkdir(parents=True, exist_ok=True)
        http = f"http://{report.http}"
        self.alice = WalletApp(wallet_login("alice"), http, clock)
        self.partner = SignedClient(http, site.partner.id, site.partner.key, clock)

    async def run(self, step: Callable[[str, Terminal, str, Callable[[], Awaitable[Any]]], Awaitable[None]],
                  t: Terminal) -> None:
        kept: dict[str, Any] = {}

        def keep(name: str, action: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
            async def run() -> Any:
                kept[name] = await action()
                return kept[name]
            return run

        await step("QR order 35.00: the host's code on the terminal screen (qr/order.png)", t, "00",
                   keep("order", lambda: self._order(t, 3500, "order.png")))
        await step("the customer's wallet app (alice) reads qr/order.png and pays", t, "paid",
                   lambda: self._wallet_pays("order.png"))
        await step("the terminal polls the order: paid", t, "paid", lambda: self._state(t.qr_query(kept["order"].order_no)))
        await step("QR order 20.00 nobody pays: closed at the terminal's deadline", t, "closed",
                   lambda: self._collect(t, 2000))
        await step("payment code scanned (alice, WeChat-style, qr/alice-code.png): paid at once", t, "00",
                   lambda: t.qr_scan(self._code("alice-code.png"), 800))
        await step("payment code for 400.00: the wallet asks for the password", t, "09",
                   keep("big", lambda: t.qr_scan(self._code("alice-code-2.png"), 40000)))
        await step("the customer types the password in the app", t, "paid",
                   lambda: self._confirm("123456"))
        await step("the terminal polls: paid", t, "paid", lambda: self._state(settle_scan(t, kept["big"], 5.0, 0.2)))
        await step("payment code of a wallet with too little in it (bob)", t, "51",
                   lambda: t.qr_scan(payment_code(wallet_login("bob"), self.clock()), 2000))
        await step("refund 10.00 of the paid QR order", t, "00", lambda: t.qr_refund(kept["order"].order_no, 1000))
        await step("refund above what remains of it", t, "13", lambda: t.qr_refund(kept["order"].order_no, 9000))
        await step("a partner's web shop creates an order over the HTTP API (signed; qr/web-order.png)", t, "201",
                   keep("web", self._web_order))
        await step("the wallet app pays it; the host notifies the shop, which acknowledges", t, "order.paid",
                   lambda: self._web_paid(kept["web"]))

    async def _order(self, t: Terminal, amount: int, name: str) -> dict[str, Any]:
        result = (await t.qr_order(amount)).to_json()
        result["outcome"] = result["response_code"]
        if result.get("payload"):
            shown = f"{amount // 100}.{amount % 100:02d} CNY"
            (self.folder / name).write_bytes(terminal_screen_png(
                result["payload"], amount=shown, merchant=str(decode_mpm(result["payload"]).fields.get("59", ""))))
        return _Kept(result)

    async def _wallet_pays(self, name: str) -> dict[str, Any]:
        paid = await asyncio.to_thread(self.alice.pay, scanned_payload(str(self.folder / name)))
        return {**paid, "outcome": paid["status"]}

    async def _confirm(self, password: str) -> dict[str, Any]:
        confirmed = await asyncio.to_thread(self.alice.confirm, password)
        return {**confirmed, "outcome": confirmed["status"]}

    async def _state(self, pending: Awaitable[Any]) -> dict[str, Any]:
        result = (await pending).to_json()
        return {**result, "outcome": result.get("status") or result.get("response_code")}

    async def _collect(self, t: Terminal, amount: int) -> dict[str, Any]:
        order = await t.qr_order(amount)
        return await self._state(collect(t, order, 1.0, 0.25))

    def _code(self, name: str) -> str:
        code = payment_code(self.alice.account, self.clock())
        (self.folder / name).write_bytes(qr_png(code))
        return read_qr_png((self.folder / name).read_bytes())  # the POS scanner reads the customer's screen

    async def _web_order(self) -> dict[str, Any]:
        answer = await asyncio.to_thread(self.partner.post, "/v1/orders", {
            "out_order_no": "WEB-0001", "amount": 1500, "description": "vehicle licence fee", "notify_url": self.site.url})
        body = answer.json()
        if "qr_png" in body:
            (self.folder / "web-order.png").write_bytes(base64.b64decode(body.pop("qr_png")))
        return {**body, "outcome": str(answer.status)}

    async def _web_paid(self, order: dict[str, Any]) -> dict[str, Any]:
        paid = await asyncio.to_thread(self.alice.pay, scanned_payload(str(self.folder / "web-order.png")))
        for _ in range(40):  # the host's timers deliver within about half a second
            if self.site.events:
                break
            await asyncio.sleep(0.1)
        return {**paid, "notified": list(self.site.events), "outcome": self.site.events[0] if self.site.events else "not notified"}


class _Kept(dict):  # type: ignore[type-arg]
    """A step's JSON that later steps read by attribute (order_no)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


async def _advices(terminal: Terminal) -> dict[str, Any]:
    run = (await terminal.send_advices()).to_json()
    codes = {a["response_code"] for a in run["advices"]}
    run["outcome"] = "00" if run["remaining"] == 0 and codes == {"00"} else f"{run['remaining']} left, codes {sorted(codes)}"
    return run


async def _close(terminal: Terminal) -> dict[str, Any]:
    """Close the batch; the outcome says whether it balanced and, when it did not, that the upload went through."""
    result = (await terminal.batch_close()).to_json()
    uploaded = result["uploaded"] == result["upload_total"] > 0
    if result["closed"] and result["balanced"]:
        result["outcome"] = "in balance"
    elif result["closed"] and uploaded:
        result["outcome"] = "out of balance, uploaded"
    else:
        result["outcome"] = result["message"]
    return result


async def _close_again(terminal: Terminal) -> dict[str, Any]:
    """Ask the host to close the batch just closed, as a terminal restored from a backup would."""
    terminal.state.mark_signed_on(terminal.clock().date(), terminal.state.batch_number - 1)
    result = (await terminal.batch_close()).to_json()
    result["outcome"] = result["response_code"] if result["already_closed"] else result["message"]
    return result


async def _malformed(raw: _Raw, card: Card) -> dict[str, Any]:
    request = raw.purchase(1000, card)
    body = bytearray(raw.terminal.encode(request))
    start, end = raw.codec.spans(bytes(body))["4"]
    body[end - 1] = 0x0A  # the last byte of field 4: a non-digit nibble (BCD) or character (ASCII)
    answer = await raw.send(bytes(body))
    return {"stan": request[11], "mti": answer.mti, "response_code": answer[39], "echoed_stan": answer.get(11)}


async def _tampered(raw: _Raw, card: Card) -> dict[str, Any]:
    """A MACed purchase whose amount changes on the way: the host must refuse it and post nothing."""
    request = raw.purchase(1000, card)
    body = bytearray(raw.terminal.encode(request))
    start, end = raw.codec.spans(bytes(body))["4"]
    body[end - 1] ^= 0x01  # 0 <-> 1 in the last digit: still a valid amount (BCD or ASCII), no longer the MACed one
    answer = await raw.send(bytes(body))
    return {"stan": request[11], "mti": answer.mti, "response_code": answer[39]}


async def _retransmission(raw: _Raw, card: Card) -> dict[str, Any]:
    request = raw.purchase(1500, card)
    body = raw.terminal.encode(request)
    first, second = await raw.send(body), await raw.send(body)
    same = first == second
    return {
        "stan": request[11], "response_code": first[39] if same else "answers differ",
        "rrn": first.get(37), "auth_code": first.get(38), "second_rrn": second.get(37),
        "second_auth_code": second.get(38),
    }


async def _reused_stan(raw: _Raw, card: Card) -> dict[str, Any]:
    """The STAN of the retransmission step, with a different amount."""
    stan = f"{int(raw.terminal.state.last_stan):06d}"
    request = raw.purchase(1600, card, stan=stan)
    answer = await raw.send(raw.terminal.encode(request))
    return {"stan": stan, "response_code": answer[39]}


async def _late(terminal: Terminal, card: Card) -> dict[str, Any]:
    result = (await terminal.purchase(6801, card)).to_json()
    reversal = result["reversal"] or {}
    result["outcome"] = "reversed" if result["timed_out"] and reversal.get("acknowledged") else "not reversed"
    return result


async def _fee_day(report: DemoReport, counter: Terminal, lab: LabHost, journal: Path, qr: _QrDay) -> Path:
    """Government fees at the cashier's terminal: notices looked up and paid by card, every refusal, a
    confirmation the finance system answers late (retried, confirmed once) and one it never answers (the card
    payment reversed, the notice left unpaid). Each outcome is read back from the finance system's own store."""
    bureau: FinanceBureau = lab.finance.bureau
    cashier = Terminal(dataclasses.replace(counter.profile, timeout=5.0), counter.link, counter.state,
                       clock=counter.clock)  # the terminal waits for the finance round trips
    card = resolve_card("approve2")

    def check(title: str, expected: str, got: str, detail: dict[str, Any]) -> None:
        report.steps.append(StepResult(len(report.steps) + 1, title, counter.profile.tid, expected, got, detail))

    def at_finance(name: str) -> str:
        notice = bureau.store.get(FEE_NOTICES[name])
        return notice.status if notice is not None else "unknown"

    looked_up = await cashier.fee_query(FEE_NOTICES["fine"])
    check("fee notice looked up at the finance system: amount due, agency, due date", "00",
          looked_up.response_code or "no answer", looked_up.to_json())
    due = (looked_up.notice or {}).get("amount_due", 0)
    paid = await cashier.fee_payment(FEE_NOTICES["fine"], due, card)
    check("fee notice paid by card: charged, then confirmed to the finance system", "00 paid",
          f"{paid.response_code} {at_finance('fine')}", paid.to_json())
    again = await cashier.fee_payment(FEE_NOTICES["fine"], due, card)
    check("the same notice again: already paid, nothing charged", "N1", again.response_code or "no answer", again.to_json())
    wrong = await cashier.fee_payment(FEE_NOTICES["licence"], 10000, card)
    check("a notice paid with the wrong amount: refused, nothing charged", "13", wrong.response_code or "no answer",
          wrong.to_json())
    expired = await cashier.fee_query(FEE_NOTICES["expired"])
    check("an expired notice", "N2", expired.response_code or "no answer", expired.to_json())
    bureau.faults.add(MSG_PAYMENT_CONFIRM, "delay", seconds=0.8)
    late = await cashier.fee_payment(FEE_NOTICES["licence"], 11000, card)
    fee = _fee_of(journal, late.rrn)
    check("finance answers the confirmation too late: sent again, confirmed once (finance: already paid by it)",
          "00 paid, 2 attempts", f"{late.response_code} {at_finance('licence')}, {fee.attempts if fee else 0} attempts",
          late.to_json())
    bureau.faults.add(MSG_PAYMENT_CONFIRM, "drop", times=lab.core.fees.settings.confirm_attempts)
    tuition = await cashier.fee_query(FEE_NOTICES["tuition"])
    lost = await cashier.fee_payment(FEE_NOTICES["tuition"], (tuition.notice or {}).get("amount_due", 0), card)
    for _ in range(30):  # the cancellation goes out in the background
        fee = _fee_of(journal, lost.rrn)
        if fee is None or fee.state != "cancel_pending":
            break
        await asyncio.sleep(0.1)
    check("finance never answers the confirmation: card payment reversed, confirmation cancelled, notice unpaid",
          "N4 unpaid cancelled", f"{lost.response_code} {at_finance('tuition')} {fee.state if fee else 'none'}",
          lost.to_json())
    order = await cashier.fee_qr_order(FEE_NOTICES["fee4"], 5000)
    png = qr.folder / "fee-order.png"
    png.write_bytes(terminal_screen_png(order.payload or "", amount="50.00 CNY", merchant="FEE NOTICE"))
    await asyncio.to_thread(qr.alice.pay, scanned_payload(str(png)))
    state = order
    for _ in range(30):  # the host confirms the fee to the finance system once the wallet has paid
        state = await cashier.qr_query(order.order_no or "")
        if (state.notice or {}).get("notice_status") == "PAID" or state.status == "reversed":
            break
        await asyncio.sleep(0.1)
    check("fee notice paid by QR: the order's code scanned by the wallet app, then confirmed to the finance system",
          "paid PAID paid", f"{state.status} {(state.notice or {}).get('notice_status')} {at_finance('fee4')}",
          state.to_json())
    return bureau.store.path


def _fee_of(path: Path, rrn: str | None) -> FeePayment | None:
    """The host's record of a fee payment, by its RRN (the trade number the finance system knows)."""
    journal = Journal(path)
    try:
        row = journal.transaction_by_rrn(rrn or "")
        return journal.fee_payment(row.id or 0) if row is not None else None
    finally:
        journal.close()


QA_PACK = ("card-purchase-swipe", "card-refund", "decline-insufficient-funds-51", "reversal-answer-dropped",
           "batch-close-balanced", "qr-order-paid-by-wallet", "fee-payment-timeout-reversed")
"""Regression pack scenarios (fixtures/scenarios) the demo replays: one of each area, in any dialect."""


async def _qa_day(report: DemoReport, out: Path, dialect: str, clock: Clock) -> dict[str, Path]:
    """What QA does with the host: part of the regression pack replayed on fresh embedded hosts with a JUnit
    report; one expectation changed to show a failure's diff; a live session recorded through the proxy,
    written as a scenario, and that scenario replayed green on another fresh host."""

    def check(title: str, expected: str, got: str, detail: dict[str, Any]) -> None:
        report.steps.append(StepResult(len(report.steps) + 1, title, "qa", expected, got, detail))

    pack = [scenario_pack() / f"{name}.yaml" for name in QA_PACK]
    scenarios = load_scenarios(pack, default_dialect=dialect)
    run = await run_suite(scenarios, embedded_source(workdir=out / "hosts"), parallel=2,
                          workdir=out / "cases", clock=clock, external=False)
    junit = out / "replay.xml"
    write_junit(run, junit)
    check(f"regression pack: {len(scenarios)} scenarios replayed on fresh embedded hosts, JUnit report written",
          f"{len(scenarios)} passed", f"{run.passed} passed", run.to_json())
    swipe = scenarios[0]
    sale = next(s for s in swipe.steps if s.action == "purchase")
    wrong = dataclasses.replace(sale, expect={**sale.expect, "39": dataclasses.replace(sale.expect["39"], value="51")})
    broken = dataclasses.replace(swipe, steps=tuple(wrong if s is sale else s for s in swipe.steps))
    failed = await run_suite([broken], embedded_source(workdir=out / "hosts-changed"),
                             workdir=out / "cases-changed", clock=clock, external=False)
    (case,) = failed.cases
    check("one expectation changed: the replay fails, naming the field, what was expected and what came",
          "failed: field 39: expected '51', got '00' (approved)",
          f"{case.verdict}: {case.failures[0].message if case.failures else case.error}", case.to_json())
    session, warnings = await _record_session(out / "recorded", dialect, clock)
    recorded = out / "session.yaml"
    recorded.write_text(session, encoding="utf-8")
    replayed = await run_suite(load_scenarios([recorded], default_dialect=dialect),
                               embedded_source(workdir=out / "hosts-recorded"),
                               workdir=out / "cases-recorded", clock=clock, external=False)
    check("a live session recorded through the proxy (sign-on, sale, void, a decline) replays green on a fresh host",
          "passed, no warnings", f"{replayed.cases[0].verdict}, {len(warnings) or 'no'} warnings",
          {"scenario": str(recorded), "warnings": warnings, "replay": replayed.to_json()})
    return {"qa_junit": junit, "qa_recorded_session": recorded}


async def _load_run(report: DemoReport, out: Path, dialect: str) -> dict[str, Path]:
    """A short load run: a fleet of terminals, each signing on for keys of its own, against a host in a process of
    its own, closed loop with the issue's mix; the report written as JSON and HTML. Its figures are the
    machine's, not a replay's: the step checks that every transaction was approved, not how fast."""
    plan = LoadPlan(duration=LOAD_SECONDS, mix=Mix(LOAD_MIX), amounts=(100, 5000), seed=DEMO_SEED)
    with tempfile.TemporaryDirectory(prefix="possim-fleet-") as folder:  # the fleet's master keys stay out of `out`
        fixtures = fleet_fixtures(Path(folder), LOAD_TERMINALS, seed=DEMO_SEED)
        with host_process(dialect, out / "host", fixtures_dir=fixtures) as host:
            fleet = build_fleet(LOAD_TERMINALS, dialect, fixtures_dir=fixtures, stan_from=0)
            target = f"{host.address[0]}:{host.address[1]} (child process)"
            run, recorder = await run_load(plan, fleet, host.address, target=target,
                                           mix_text=",".join(f"{k}:{w}" for k, w in LOAD_MIX))
    figures = run["figures"]
    html, data = out / "report.html", out / "report.json"
    write_report(run, [v * 1000 for v in recorder.latencies], data, html)
    refused = figures["transactions"] - figures["approved"]
    got = "every transaction approved" if figures["transactions"] and not refused \
        else f"{refused} of {figures['transactions']} not approved"
    latency = figures["latency_ms"]
    report.steps.append(StepResult(
        len(report.steps) + 1,
        f"load: {LOAD_TERMINALS} terminals sign on and run purchases, refunds and QR orders for {LOAD_SECONDS:g} s",
        "fleet", "every transaction approved", got,
        {"transactions": figures["transactions"], "tps": round(figures["tps"], 1),
         "p99_ms": round(latency["p99"], 2) if latency else None,
         "kinds": {k: v["count"] for k, v in figures["kinds"].items()}, "report": str(html)},
    ))
    return {"load_report": html, "load_report_json": data}


async def _record_session(folder: Path, dialect: str, clock: Clock) -> tuple[str, list[str]]:
    """A terminal's short session with a lab host, through a recording proxy: the scenario text and its warnings."""
    exchanges: list[Exchange] = []
    async with lab_host(dialect, folder / "host", clock=clock) as lab:
        profile = load_profile("10000001", dialect=dialect, timeout=TERMINAL_TIMEOUT)
        proxy = FrameProxy(lab.address, profile.framing, on_exchange=exchanges.append, clock=clock)
        at = await proxy.start()
        terminal = Terminal(dataclasses.replace(profile, host=f"{at[0]}:{at[1]}"), TcpLink(*at, profile.framing),
                            TerminalState("10000001", folder / "terminal.sqlite"), clock=clock)
        try:
            await terminal.sign_on()
            sale = await terminal.purchase(1250, resolve_card("approve"))
            await terminal.void(sale.stan)
            await terminal.purchase(2000, resolve_card("insufficient"))
        finally:
            await terminal.link.close()
            terminal.state.close()
            await proxy.stop()
    return session_scenario(exchanges, terminal.dialect, name="recorded session")


async def _settlement_days(report: DemoReport, terminal: Terminal, journal: Path, out: Path, day: str,
                           finance: tuple[str, int], clock: Clock) -> dict[str, Path]:
    """Cut-over of the day, reconciliation against practice files with one discrepancy of several classes in
    them (and the sale terminal 10000001 never counted, found from its batch upload), then the next day: a
    purchase that belongs to it, and its cut-over netting the adjustments reconciliation made."""

    def check(title: str, expected: str, got: str, detail: dict[str, Any]) -> None:
        report.steps.append(StepResult(len(report.steps) + 1, title, "host", expected, got, detail))

    def verdict(invariants: list[Any]) -> str:
        return "PASS" if all(i.passed for i in invariants) else "FAIL"

    cut = run_cutover(journal, day, out=out / "settlement" / day, clock=clock)
    check(f"cut-over of {day}: every row settled or excluded, batches per merchant and channel, money invariants",
          "PASS", verdict(cut.invariants), cut.to_json())
    again = run_cutover(journal, day, out=out / "settlement" / day, clock=clock)
    check("cut-over run again: changes nothing", "already done",
          "already done" if again.result.already and again.result.batches == cut.result.batches else "changed", again.to_json())
    external = out / "external"
    clearing = run_make_file(journal, day, "clearing", DEMO_CLEARING_INJECT, DEMO_SEED, external / f"clearing-{day}.txt")
    bank = run_make_file(journal, day, "bank", DEMO_BANK_INJECT, DEMO_SEED, external / f"bank-{day}.csv")
    expected = {"unreversed_timeout": 1}
    for made in (clearing, bank):
        for cls, count in made["expected"].items():
            expected[cls] = expected.get(cls, 0) + count
    files = [("clearing", Path(clearing["file"])), ("bank", Path(bank["file"]))]
    recon = run_recon(journal, day, files, out=out / "recon" / day, clock=clock)
    found = {c["class"]: c["count"] for c in recon.summary["classes"] if c["count"]}
    check("reconciliation against the clearing file and bank statement: each injected discrepancy found, nothing else",
          _counts(expected), _counts(found), recon.to_json())
    check("every discrepancy resolved automatically (adjustment, reversal or suspense), none left to a person",
          "resolved", recon.summary["verdict"], {"discrepancies": recon.summary["discrepancies"]})
    rerun = run_recon(journal, day, files, out=out / "recon" / day, clock=clock)
    check("reconciliation run again: nothing resolved twice", "0 new", f"{rerun.new} new", rerun.to_json())
    collection = run_make_file(journal, day, "collection", "unidentified=1", DEMO_SEED, external / f"collection-{day}.csv")
    treasury = run_treasury(journal, day, await daily_list(finance, day), collection["file"],
                            out=out / "treasury" / day, clock=clock)
    closed = await report_reconciled(finance, treasury) if treasury.balanced else "not balanced"
    agencies = treasury.summary["agencies"]
    check("fee collections three ways (journal, finance list, collection account): every agency balanced, the"
          " unknown credit to suspense, the day closed at the finance system",
          f"balanced, {len(agencies)} agencies, 1 to suspense, closed 0000",
          f"{treasury.summary['verdict']}, {sum(a['balanced'] for a in agencies)} agencies,"
          f" {sum(d['class'] == 'unidentified_funds' for d in treasury.summary['discrepancies'])} to suspense,"
          f" closed {closed}", treasury.to_json())
    try:
        run_treasury(journal, day, await daily_list(finance, day), collection["file"], out=out / "treasury" / day,
                     clock=clock)
        twice = "reconciled again"
    except SettlementError as exc:
        twice = "refused" if "reconciled once" in str(exc) else str(exc)
    check("fee collections reconciled a second time", "refused", twice, {})
    signed = await terminal.sign_on()  # the host's business date moved on at cut-over: sign on for the new day
    sale = await terminal.purchase(2000, resolve_card("approve2"))
    row = _row_date(journal, sale.rrn)
    check("after cut-over: sign-on and a purchase, journaled on the next business date",
          f"00 {_next(day)}", f"{sale.response_code} {row}", {"sign_on": signed.to_json(), "purchase": sale.to_json()})
    cut2 = run_cutover(journal, _next(day), out=out / "settlement" / _next(day), clock=clock)
    applied = cut2.result.adjustments_applied
    check(f"cut-over of {_next(day)}: yesterday's adjustments netted in, money invariants",
          "PASS", verdict(cut2.invariants) if applied else "no adjustments applied", cut2.to_json())
    return {
        "settlement_csv": Path(cut.result.files["settlement_csv"]), "clearing_file": Path(cut.result.files["clearing_file"]),
        "practice_clearing": Path(clearing["file"]), "practice_bank": Path(bank["file"]),
        "recon_report": Path(recon.files["report_html"]), "recon_exceptions": Path(recon.files["exceptions_csv"]),
        "recon_summary": Path(recon.files["summary_json"]),
        "next_settlement_csv": Path(cut2.result.files["settlement_csv"]),
        "next_clearing_file": Path(cut2.result.files["clearing_file"]),
        "collection_statement": Path(collection["file"]), "treasury_sweep": Path(treasury.files["sweep_csv"]),
        **{f"treasury_{name}": Path(path) for name, path in treasury.files.items() if name.startswith("confirmations_")},
    }


def _counts(by_class: dict[str, int]) -> str:
    return ", ".join(f"{cls} {n}" for cls, n in sorted(by_class.items()))


def _next(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def _row_date(path: Path, rrn: str | None) -> str:
    journal = Journal(path)
    try:
        row = journal.transaction_by_rrn(rrn or "")
        return row.business_date if row is not None else "not journaled"
    finally:
        journal.close()


def _journal_summary(path: Path) -> dict[str, Any]:
    """Counts and amounts per response code, from the journal the host wrote.

    Transactions are grouped by response code and life status (an approved
    purchase later reversed counts as reversed). Answers that created no
    transaction — format errors, duplicates, sign-ons, reversal
    acknowledgements — are counted from the message log.
    """
    journal = Journal(path)
    try:
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for total in journal.totals():
            group = groups.setdefault((total.response_code, total.status), {"count": 0, "amounts": {}})
            group["count"] += total.count
            if total.currency is not None:
                group["amounts"][total.currency] = total.amount
        messages = journal.messages()
        answers: dict[str, int] = {}
        for entry in messages:
            if entry.direction == "out":
                key = f"{entry.mti} {entry.response_code or '--'}"
                answers[key] = answers.get(key, 0) + 1
        return {
            "transactions": sum(g["count"] for g in groups.values()),
            "messages": len(messages),
            "by_response_code": [
                {"response_code": code, "status": status, **group}
                for (code, status), group in sorted(groups.items())
            ],
            "answers_sent": dict(sorted(answers.items())),
            "accounts": [{"id": a.id, "currency": a.currency, "balance": a.balance} for a in journal.balances()],
        }
    finally:
        journal.close()


def _terminal_summary(terminal: Terminal) -> dict[str, Any]:
    state = terminal.state
    batch = state.open_batch()
    totals = batch_totals(terminal.dialect, batch).combined
    owed = state.pending_reversal()
    return {
        "tid": terminal.profile.tid,
        "last_stan": state.last_stan,
        "batch_number": state.batch_number,
        "open_batch": {"count": len(batch), "debit_amount": totals.debit_amount, "credit_amount": totals.credit_amount},
        "pending_reversal": owed.original_stan if owed else None,
        "queued_advices": len(state.queued_advices()),
    }
