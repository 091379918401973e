"""Running one scenario against a target: real terminals make each step's request through a proxy that can fault
it, and what came back is held against the step's expectations (docs/replay.md).

A step's "own" request is the one its action makes, not the owed reversal or
queued advices a terminal sends ahead of it. The runner recognises it as the
terminal encodes it (the `Terminal.rewrite` hook): by the MTI of the kind
the action makes (the dialect's transaction table; an advice by its kind
too, since queued advices share its MTI), 0800 for a sign-on, the
first 0500 of a batch close, the reversal naming the original for `reverse`
and `qr_cancel`. There the step's field overrides are applied, and the MTI
and STAN it leaves with are noted: the proxy faults the first frame carrying
them, and the terminal's tap finds that exchange afterwards for the
expectations and the trace.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from possim.wire.clock import Clock, system_clock
from possim.wire.codec import Codec
from possim.wire.dialect import load_dialect
from possim.wire.framing import FramingError, frame
from possim.wire.message import Message
from possim.wire.proxy import CONNECT_TIMEOUT, FrameProxy, ProxyFault
from possim.wire.trace import trace_record

from ..cards import fixture_cards, resolve_card
from ..link import LinkError, TcpLink, connect_problem
from ..messages import answer_body, response_text
from ..profile import load_profile
from ..results import TerminalError
from ..state import TerminalState
from ..status import terminal_status
from ..terminal import Terminal
from ..wallet_app import WalletApp, WalletAppError, login, payment_code
from .matchers import actual_text, check, expected_text, shown, walk
from .model import Fault, JournalCheck, Matcher, Scenario, Step
from .results import CaseResult, Failure
from .tap import Exchange, TapLink
from .target import Target, TargetError
from .values import references, substitute

METHODS = {
    "signon": "sign_on", "purchase": "purchase", "void": "void", "refund": "refund", "preauth": "preauth",
    "preauth_void": "preauth_void", "completion": "completion", "balance": "balance", "offline": "offline",
    "send_advices": "send_advices", "reverse": "reverse", "batch_close": "batch_close", "qr_order": "qr_order",
    "qr_query": "qr_query", "qr_close": "qr_close", "qr_scan": "qr_scan", "qr_refund": "qr_refund",
    "qr_cancel": "qr_cancel", "fee_query": "fee_query", "fee_payment": "fee_payment", "fee_qr": "fee_qr_order",
}
"""The Terminal method each terminal action calls; the step's arguments are its keyword arguments."""
_KINDS = {
    "purchase": ("sale",), "void": ("sale_void", "completion_void"), "refund": ("refund",), "preauth": ("preauth",),
    "preauth_void": ("preauth_void",), "completion": ("completion",), "balance": ("balance",), "offline": ("offline",),
    "qr_order": ("qr_order",), "fee_qr": ("qr_order",), "qr_query": ("qr_query",), "qr_close": ("qr_close",),
    "qr_scan": ("qr_sale", "sale"), "qr_refund": ("qr_refund",), "fee_query": ("fee_query",),
    "fee_payment": ("fee_payment",),
}
"""The transaction kinds (wire/transactions.py) whose request is a step's own, by action (a scanned EMV code is a sale)."""
_SENDS_NOTHING = ("offline", "wait", "wallet_pay")
"""Actions with no ISO 8583 request of their own: an offline sale is approved by the terminal itself, its advice
goes later; a wallet pays over HTTP."""
_REFUSALS = (TerminalError, WalletAppError, ValueError)
"""What a terminal (or wallet app) raises when it will not make a request: bad amounts, cards, codes included."""
_ROW_SHOWN = ("id", "terminal_id", "stan", "mti", "kind", "amount", "response_code", "status", "rrn")
"""Journal columns a failed journal check shows of each row, besides those it names."""


async def run_scenario(scenario: Scenario, target: Target, *, state_dir: Path, fixtures_dir: Path | None = None,
                       stan_start: int = 1, clock: Clock = system_clock,
                       trace: Callable[[str], None] | None = None) -> CaseResult:
    """Run `scenario`'s steps in order against `target` until one fails; never raises for anything the scenario,
    the target or the host did (that is the result's `error`, one line).

    `state_dir` is a folder of this scenario's own: each terminal's state is
    made fresh there (`ALIAS.sqlite`), its first STAN `stan_start`. `trace`
    receives the redacted trace of every message the terminals send and get.
    """
    began = time.perf_counter()
    result = CaseResult(scenario)
    run: _Run | None = None
    try:
        run = _Run(scenario, target, fixtures_dir, clock, trace)
        await run.start(state_dir, stan_start)
        await run.steps(result)
    except (_CannotRun, LinkError, TargetError, OSError, ValueError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        result.error = run.plain(text) if run is not None else text
    finally:
        if run is not None:
            await run.close()
        result.duration = time.perf_counter() - began
    return result


class _CannotRun(Exception):
    """The scenario cannot run to a verdict here; the message says what is missing."""


@dataclass
class _Seat:
    """One terminal of the scenario, with the tap that sees its exchanges."""

    terminal: Terminal
    tap: TapLink


class _Own:
    """A step's own request, recognised as its terminal encodes it; given to the terminal as its `rewrite` hook."""

    def __init__(self, recognise: Callable[[Message], bool], overrides: dict[int, str | None]):
        self.recognise = recognise
        self.overrides = overrides
        self.sent: tuple[str, str | None] | None = None
        """(MTI, STAN) of the own request as it leaves, overrides applied; None until the terminal encodes it."""
        self.frame: bytes | None = None
        """A raw step's own request: exactly these bytes."""
        self._keys: set[tuple[str, str | None]] = set()

    def rewrite(self, message: Message) -> None:
        """Apply the overrides to the own request. A terminal may encode it twice (an online refund: checked, then
        queued and sent), so a message with the same MTI and STAN is the same request again."""
        key = (message.mti, message.get(11))
        if self.sent is None:
            if not self.recognise(message):
                return
        elif key not in self._keys:
            return
        self._keys.add(key)
        for number, value in self.overrides.items():
            if value is None:
                message.fields.pop(number, None)
            else:
                message[number] = value
        self.sent = (message.mti, message.get(11))
        self._keys.add(self.sent)

    def carried_by(self, whole: bytes, codec: Codec) -> bool:
        """Whether a frame (length header included) is the own request."""
        if self.frame is not None:
            return whole == self.frame
        message = _decoded(codec, whole)
        return self.sent is not None and message is not None and (message.mti, message.get(11)) == self.sent


class _Faults:
    """The proxy's request hook: the armed step's fault, applied to its own request's first frame only."""

    def __init__(self, codec: Codec):
        self.codec = codec
        self.armed: tuple[Fault, _Own] | None = None

    def on_request(self, peer: str, whole: bytes) -> ProxyFault | None:
        if self.armed is None or not self.armed[1].carried_by(whole, self.codec):
            return None
        fault, _ = self.armed
        self.armed = None
        return ProxyFault(fault.kind, fault.seconds)


@dataclass
class _Done:
    """What the action itself said: its result as `possim pos … --json` prints it, or why it was not made."""

    result: dict[str, Any] | None = None
    refused: str | None = None
    """The terminal's (or wallet app's) reason for not making the request."""
    unsent: str | None = None
    """The link's reason when the request could not leave."""


@dataclass
class _Seen:
    """A step's exchange as judged: its own request and answer, the reversal it caused, the outcome."""

    outcome: str
    why: str | None
    """What explains an outcome other than answered: the terminal's refusal, the link's error."""
    request: Message | None
    answer: Message | None
    own: Exchange | None
    reversals: list[Exchange]
    """Every reversal of the own request (or, for a reversal step, of its original) the step sent."""
    reversal_request: Message | None
    reversal_answer: Message | None
    """The last reversal answered (the 0410), else none."""
    reversal_why: str | None


class _Run:
    """One scenario's run: its terminals behind the proxy, the variables and captures so far."""

    def __init__(self, scenario: Scenario, target: Target, fixtures_dir: Path | None, clock: Clock,
                 trace: Callable[[str], None] | None):
        self.scenario = scenario
        self.target = target
        self.fixtures_dir = fixtures_dir
        self.cards = fixture_cards(fixtures_dir)
        self.clock = clock
        self.trace = trace
        self.dialect = load_dialect(scenario.dialect)
        self.codec = Codec(self.dialect)
        self.framing = self.dialect.framing
        self.faults = _Faults(self.codec)
        self.proxy: FrameProxy | None = None
        self.seats: dict[str, _Seat] = {}
        self.env: dict[str, Any] = dict(scenario.variables)
        self.peer = f"{target.iso[0]}:{target.iso[1]}"
        self.via = self.peer
        """The proxy's address, which the terminals' links name in their errors."""

    # setting up and down

    async def start(self, state_dir: Path, stan_start: int) -> None:
        if "http" in self.scenario.needs and self.target.http is None:
            raise _CannotRun(f"target {self.target.label} has no HTTP API, which wallet_pay needs (give --http)")
        await self._reach_host()
        self.proxy = FrameProxy(self.target.iso, self.framing, on_request=self.faults.on_request, clock=self.clock)
        host, port = await self.proxy.start("127.0.0.1", 0)
        self.via = f"{host}:{port}"
        state_dir.mkdir(parents=True, exist_ok=True)
        for alias, use in self.scenario.terminals.items():
            profile = load_profile(use.tid, self.fixtures_dir, dialect=self.scenario.dialect,
                                   host=f"{host}:{port}", **use.overrides)
            path = state_dir / f"{alias}.sqlite"
            if path.exists():
                raise _CannotRun(f"terminal state {path} exists already: each scenario needs a state folder of its own")
            state = TerminalState(profile.tid, path)
            tap = TapLink(TcpLink(host, port, profile.framing), self.clock, peer=self.peer)
            self.seats[alias] = _Seat(Terminal(profile, tap, state, clock=self.clock, trace=self.trace), tap)
            state.start_stan_at(stan_start)

    async def _reach_host(self) -> None:
        """Connect once before anything is sent: an unreachable host is the case's error, not a failed first step."""
        host, port = self.target.iso
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise _CannotRun(f"host {host}:{port}: could not connect within {CONNECT_TIMEOUT:g} s") from None
        except OSError as exc:
            raise _CannotRun(f"host {host}:{port}: {connect_problem(exc)}") from None
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()

    async def close(self) -> None:
        for seat in self.seats.values():
            await seat.tap.close()
            seat.terminal.state.close()
        if self.proxy is not None:
            await self.proxy.stop()

    # steps

    async def steps(self, result: CaseResult) -> None:
        for step in self.scenario.steps:
            result.steps_run += 1
            failures, seen = await self._step(step)
            if failures:
                result.failures = failures
                result.trace = self._trace_of(([seen.own] if seen.own is not None else []) + seen.reversals)
                return

    async def _step(self, step: Step) -> tuple[list[Failure], _Seen]:
        seat = self.seats[step.terminal]
        args = substitute(step.args, self.env)
        overrides = {n: None if v is None else str(substitute(v, self.env)) for n, v in step.fields.items()}
        own = _Own(self._recogniser(step, args, seat.terminal), overrides)
        mark = len(seat.tap.exchanges)
        seat.terminal.rewrite = own.rewrite
        if step.fault is not None:
            self.faults.armed = (step.fault, own)
        try:
            done = await self._perform(step, args, seat, own)
        finally:
            seat.terminal.rewrite = None
            self.faults.armed = None
        seen = self._see(step, done, own, seat.tap.exchanges[mark:])
        failures = self._judge(step, done, seen)
        failures += self._capture(step, done, seen)
        failures += self._check(step, seat)
        return failures, seen

    def _recogniser(self, step: Step, args: dict[str, Any], terminal: Terminal) -> Callable[[Message], bool]:
        """How the step's own request is told from what its terminal sends ahead of it."""
        action = step.action
        if action in _KINDS:
            names = set(_KINDS[action])
            mtis = {kind.mti for name, kind in self.dialect.transactions.items() if name in names}

            def of_kind(message: Message) -> bool:
                """By MTI (a purchase may carry a processing code of no kind at all); only queued advices go ahead
                of a request with its MTI, so an advice is told by its kind too."""
                if message.mti not in mtis:
                    return False
                kind = self.dialect.transaction_of(message)
                return message.mti[2] != "2" or (kind is not None and kind.name in names)
            return of_kind
        if action == "signon":
            return lambda message: message.mti == "0800"
        if action == "batch_close":
            return lambda message: message.mti == "0500"
        if action == "send_advices":
            return lambda message: message.mti[:3] == "022"
        if action == "reverse":
            return lambda message: message.mti[:3] == "040"
        if action == "qr_cancel":
            order = terminal.state.qr_order(str(args.get("order_no", "")).strip())
            return lambda message: order is not None and _reverses(message, order.stan)
        return lambda message: False

    async def _perform(self, step: Step, args: dict[str, Any], seat: _Seat, own: _Own) -> _Done:
        terminal = seat.terminal
        try:
            if step.action == "wait":
                await asyncio.sleep(float(args.get("seconds", 0)))
                return _Done({})
            if step.action == "wallet_pay":
                assert self.target.http is not None  # start() refused a scenario that needs it without one
                app = WalletApp(login(str(args["wallet"]), self.fixtures_dir), self.target.http, self.clock)
                return _Done(await asyncio.to_thread(app.pay, str(args["payload"])))
            if step.action in ("raw", "raw_frame"):
                body = bytes.fromhex(args["hex"])
                own.frame = body if step.action == "raw_frame" else frame(self.framing, body)
                await self._send_raw(seat, own.frame)
                return _Done()
            method = getattr(terminal, METHODS[step.action])
            outcome = await method(**self._arguments(step.action, args))
            return _Done(outcome.to_json())
        except _REFUSALS as exc:
            return _Done(refused=self.plain(" ".join(str(exc).split())))
        except LinkError as exc:
            return _Done(unsent=self.plain(str(exc)))

    async def _send_raw(self, seat: _Seat, whole: bytes) -> None:
        """A raw frame through the terminal's own link; what came back is in the tap."""
        if self.trace is not None:
            self.trace(self._record(self.clock(), "->", whole, framed=True))
        try:
            payload = await seat.tap.exchange(whole, seat.terminal.profile.timeout)
        except (LinkError, FramingError):
            return
        if self.trace is not None:
            self.trace(self._record(self.clock(), "<-", payload, framed=False))

    def _arguments(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """A step's arguments as the Terminal method takes them: cards resolved, amounts whole numbers, a wallet
        turned into the payment code its app shows now."""
        kwargs: dict[str, Any] = {}
        card = resolve_card(str(args["card"]), cards=self.cards) if "card" in args else None
        for name, value in args.items():
            if name == "card":
                kwargs[name] = card
            elif name == "pin" and value == "card":
                assert card is not None  # the loader wants a card with pin: card
                if card.pin is None:
                    raise ValueError(f"card {card.name!r} has no PIN in cards.yaml, so pin: card has nothing to type")
                kwargs[name] = card.pin
            elif name == "amount":
                kwargs[name] = int(value)
            elif name == "stan":
                kwargs[name] = f"{value:06d}" if isinstance(value, int) else str(value)
            elif name == "wallet" and action == "qr_scan":
                kwargs["code"] = payment_code(login(str(value), self.fixtures_dir), self.clock())
            else:
                kwargs[name] = str(value)
        return kwargs

    # what happened

    def _see(self, step: Step, done: _Done, own: _Own, made: list[Exchange]) -> _Seen:
        mine = next((e for e in made if own.carried_by(e.frame, self.codec)), None)
        request = _decoded(self.codec, mine.frame) if mine is not None else None
        answer, unread = self._answer(mine)
        why = done.refused or done.unsent or unread or (str(mine.error) if mine and mine.error else None)
        if done.refused is not None:
            outcome = "refused"
        elif step.action in _SENDS_NOTHING:
            outcome = "answered"
        elif mine is None:
            prior = (done.result or {}).get("prior_reversal")
            nothing_to_send = step.action == "send_advices" and done.result is not None and (not prior or prior["acknowledged"])
            outcome = "answered" if nothing_to_send else "not_sent"
            why = why or (done.result or {}).get("message") or "its request was never sent"
        elif isinstance(mine.error, LinkError) and not mine.error.sent:
            outcome = "not_sent"
        else:
            outcome = "answered" if answer is not None else "no_answer"
        original = _reversed_stan(request, step.action) if request is not None else None
        reversals = [e for e in made if original is not None and _reverses(_decoded(self.codec, e.frame), original)]
        answered = [e for e in reversals if e.payload is not None]
        last = answered[-1] if answered else (reversals[-1] if reversals else None)
        reversal_answer, reversal_why = self._answer(last)
        if last is None:
            reversal_why = "no reversal was sent"
        elif last.error is not None:
            reversal_why = str(last.error)
        reversal_request = _decoded(self.codec, last.frame) if last is not None else None
        return _Seen(outcome, self.plain(why), request, answer, mine, reversals, reversal_request, reversal_answer,
                     self.plain(reversal_why))

    def plain(self, text: str | None) -> str | None:
        """A link's explanation naming the host the user named, not the proxy in between."""
        return text.replace(self.via, self.peer) if text is not None else None

    def _answer(self, exchange: Exchange | None) -> tuple[Message | None, str | None]:
        if exchange is None or exchange.payload is None:
            return None, None
        try:
            return self.codec.decode(answer_body(self.framing, exchange.payload)), None
        except ValueError as exc:
            return None, f"answer unreadable: {exc}"

    # expectations

    def _judge(self, step: Step, done: _Done, seen: _Seen) -> list[Failure]:
        failures: list[Failure] = []
        # Without an outcome, expectations on the answer need one; a step expecting nothing still had to be made.
        allowed = (step.outcome,) if step.outcome else ("answered",) if step.expect else ("answered", "no_answer")
        if seen.outcome not in allowed:
            wanted = " or ".join(allowed)
            failures.append(Failure(
                step.index, step.name, "outcome", wanted, seen.outcome,
                f"outcome: expected {wanted}, got {seen.outcome}" + (f" ({seen.why})" if seen.why else ""),
            ))
        if step.error is not None:
            failures += self._match(step, "error", step.error, seen.why if seen.outcome == "refused" else None)
        if step.expect:
            failures += self._on_message(step, "", step.expect, seen.answer, seen.request, seen.why, bool(failures))
        if step.reversal:
            failures += self._on_message(step, "reversal ", step.reversal, seen.reversal_answer, seen.reversal_request,
                                         seen.reversal_why, False)
        if step.result:
            if done.result is None:
                if not failures:
                    failures.append(Failure(step.index, step.name, "result", "a result", "none",
                                            f"result: expected a result, got none ({seen.why or 'a raw step has none'})"))
            else:
                for key, matcher in step.result.items():
                    present, value = walk(done.result, key)
                    failures += self._match(step, f"result.{key}", matcher, value, present=present)
        return failures

    def _on_message(self, step: Step, label: str, expect: dict[str, Matcher], answer: Message | None,
                    request: Message | None, why: str | None, explained: bool) -> list[Failure]:
        """Expectations on an answer's MTI and fields; one failure for a missing answer unless already explained."""
        if answer is None:
            if explained:
                return []
            what = f"{label}answer".strip()
            return [Failure(step.index, step.name, what, "an answer", "none",
                            f"{what}: expected an answer, got none" + (f" ({why})" if why else ""))]
        failures = []
        for key, matcher in expect.items():
            if key == "mti":
                failures += self._match(step, f"{label}mti", matcher, answer.mti,
                                        request_value=request.mti if request else None)
                continue
            number = int(key)
            failures += self._match(step, f"{label}field {number}", matcher, answer.get(number), present=number in answer,
                                    request_value=request.get(number) if request is not None else None)
        return failures

    def _match(self, step: Step, key: str, matcher: Matcher, actual: Any, *, present: bool | None = None,
               request_value: Any = None, note: str = "") -> list[Failure]:
        """The failure (none or one) of one matcher; a response code is followed by what it means."""
        there = actual is not None if present is None else present
        problem = check(matcher, actual, request_value=request_value, present=there, env=self.env)
        if problem is None:
            return []
        if there and isinstance(actual, str) and (key.endswith("field 39") or key.endswith("response_code")):
            problem += f" ({response_text(actual)})"
        return [Failure(step.index, step.name, key, expected_text(matcher, self.env, request_value),
                        actual_text(actual, there), f"{key}: {problem}{note}")]

    # captures and checks

    def _capture(self, step: Step, done: _Done, seen: _Seen) -> list[Failure]:
        failures = []
        for name, source in step.capture.items():
            if source.startswith("result."):
                present, value = walk(done.result or {}, source.removeprefix("result."))
                where = source
            elif source.startswith("request."):
                number = int(source.removeprefix("request."))
                value = seen.request.get(number) if seen.request is not None else None
                present, where = value is not None, f"request field {number}"
            else:
                number = int(source)
                value = seen.answer.get(number) if seen.answer is not None else None
                present, where = value is not None, f"field {number} of the answer"
            if present:
                self.env[name] = value
            else:
                failures.append(Failure(step.index, step.name, f"capture {name}", where, "absent",
                                        f"capture {name}: {where} is absent" + (f" ({seen.why})" if seen.why else "")))
        return failures

    def _check(self, step: Step, seat: _Seat) -> list[Failure]:
        """The step's checks, but those using a capture that failed (its failure says why they cannot run)."""
        failures = []
        for journal in step.checks.journal:
            if self._ready(journal.where, [m.value for m in journal.expect.values()]):
                failures += self._journal(step, journal)
        if step.checks.terminal or step.checks.batch:
            terminal = seat.terminal
            status = terminal_status(terminal.profile, terminal.state, terminal.state.path)
            for section, data in (("terminal", status), ("batch", status["open_batch"])):
                for key, matcher in getattr(step.checks, section).items():
                    if self._ready(matcher.value):
                        present, value = walk(data, key)
                        failures += self._match(step, f"{section}.{key}", matcher, value, present=present)
        return failures

    def _ready(self, *values: Any) -> bool:
        """Whether every name `values` refer to has a value now."""
        return all(references(value) <= self.env.keys() for value in values)

    def _journal(self, step: Step, journal: JournalCheck) -> list[Failure]:
        where = {column: str(substitute(value, self.env)) for column, value in journal.where.items()}
        rows = self.target.journal_rows(where)
        label = "journal[" + ", ".join(f"{k}={v}" for k, v in where.items()) + "]"
        failures = []
        if (journal.count is None and not rows) or (journal.count is not None and len(rows) != journal.count):
            expected = "at least 1" if journal.count is None else str(journal.count)
            found = "; ".join(_row(row, journal) for row in rows[:3]) + (" …" if len(rows) > 3 else "")
            message = f"{label}: expected {expected} row(s), got {len(rows)}" + (f": {found}" if rows else "")
            failures.append(Failure(step.index, step.name, f"{label}.count", expected, str(len(rows)), message))
        for index, row in enumerate(rows, start=1):
            for column, matcher in journal.expect.items():
                value = row.get(column)
                failures += self._match(step, f"{label}.{column}", matcher, value, present=value is not None,
                                        note=f" — row {index} of {len(rows)}: {_row(row, journal)}")
        return failures

    # traces

    def _trace_of(self, exchanges: list[Exchange]) -> str:
        """The redacted trace of exchanges: each request, and its answer or why none came."""
        parts = []
        for exchange in exchanges:
            parts.append(self._record(exchange.sent_at, "->", exchange.frame, framed=True))
            if exchange.payload is not None:
                parts.append(self._record(exchange.ended_at, "<-", exchange.payload, framed=False))
            else:
                parts.append(f"{exchange.ended_at.isoformat(timespec='milliseconds')} <- {self.peer} no answer: "
                             f"{self.plain(str(exchange.error))}\n")
        return "".join(parts)

    def _record(self, when: datetime, direction: str, data: bytes, *, framed: bool) -> str:
        """`data` is a whole frame (`framed`) or an answer's payload (no length header)."""
        split = self.framing.envelope_size + (self.framing.length_size if framed else 0)
        return trace_record(when, direction, self.peer, self.codec, data[split:], data[:split])


def _decoded(codec: Codec, whole: bytes) -> Message | None:
    """The message a whole frame carries; None when it cannot be read (a raw step's deliberate nonsense)."""
    framing = codec.dialect.framing
    try:
        return codec.decode(whole[framing.length_size + framing.envelope_size:])
    except ValueError:
        return None


def _reversed_stan(request: Message, action: str) -> str | None:
    """The STAN a reversal of this step names: its own request's, or for a reversal step the original it reverses."""
    if action in ("reverse", "qr_cancel"):
        return request[90][4:10] if 90 in request else request.get(11)
    return request.get(11)


def _reverses(message: Message | None, stan: str) -> bool:
    """Whether `message` is a reversal (0400, 0401) of the request with STAN `stan`: named in field 90 where the
    dialect carries one, else by reusing the STAN."""
    if message is None or message.mti[:3] != "040":
        return False
    return message[90][4:10] == stan if 90 in message else message.get(11) == stan


def _row(row: dict[str, Any], journal: JournalCheck) -> str:
    """A journal row in one line: the usual columns and those the check names."""
    columns = dict.fromkeys((*_ROW_SHOWN, *journal.where, *journal.expect))
    return "{" + ", ".join(f"{c}: {shown(row[c])}" for c in columns if c in row) + "}"
