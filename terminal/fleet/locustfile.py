"""POS terminals as Locust users, so Locust's distributed mode can drive a fleet against one ISO 8583 host.

    locust -f "$(possim load --locustfile)" --headless -u 50 -r 10 -t 60s --host tcp://127.0.0.1:8583

Each user is one terminal (docs/locust.md): a TCP connection of its own,
a sign-on first, then one request at a time from the mix — closed loop
unless --possim-throughput paces it. The bytes come from `FleetTerminal`,
the I/O-free terminal `possim load` drives on asyncio; this file adds only
the transport (a blocking socket, cooperative once Locust has patched the
process for gevent) and Locust's statistics. Nothing else in possim may
import this module: importing it imports Locust, which patches the process.

Terminal IDs: a user takes the lowest slot free in its process, and slot s
of worker w, out of the W workers the master expects (--expect-workers), is
terminal number s*W + w of the run — so two workers never share a TID. A
slot keeps its terminal (STAN, batch, working keys) when its user stops, so
a user spawned later in that slot carries on its STANs instead of repeating
them (which the host would answer 94, duplicate).
"""

from __future__ import annotations

import itertools
import logging
import random
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import gevent
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner
from locust.user.wait_time import constant_throughput

from possim.fixtures import FixtureError, load_fixture
from possim.terminal.cards import Card, CardError, resolve_card
from possim.terminal.fleet.driver import PAUSE_AFTER_LINK_ERROR_S, Mix
from possim.terminal.fleet.fleet import day_stan
from possim.terminal.fleet.plan import PlanError, parse_amounts, parse_mix
from possim.terminal.fleet.protocol import AnswerError, FleetTerminal, Outcome, Request
from possim.terminal.link import LinkError, LinkTimeout
from possim.terminal.messages import qr_response_text, response_text
from possim.terminal.profile import ProfileError, TerminalProfile, load_profile, parse_address
from possim.wire.clock import system_clock
from possim.wire.codec import Codec
from possim.wire.dialect import Dialect, load_dialect
from possim.wire.framing import FrameReader, FramingError
from possim.wire.money import currency as lookup_currency

REQUEST_TYPE = "ISO8583"
"""The "Type" column of Locust's statistics; the "Name" is the kind: signon, purchase, refund, qr, reversal."""
DEFAULT_MIX = "purchase:100"
LAST_TID = 99_999_999
NOT_REVERSED = ("signon", "reversal")
"""Kinds whose failure owes no reversal: a sign-on moves no money, and a reversal is not itself reversed."""

log = logging.getLogger("possim.locust")


class SettingsError(ValueError):
    """A --possim-* option (or --host) that cannot be used; the message names it."""


class NoTerminal(Exception):
    """A user for whom the run has no terminal: users outnumber terminals.yaml, or TIDs ran past 99999999."""


class Declined(Exception):
    """An answer other than 00. Its text is the code and what it means (`51 insufficient funds`), which is
    how Locust's failure table groups them."""


# ---- options ----


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    """Locust sends these from the master to every worker, and shows them in the web UI."""
    parser.add_argument("--possim-dialect", default="cup", help="Dialect of the host: a built-in name or a dialect YAML file.")
    parser.add_argument("--possim-fixtures", default="", help="Folder with terminals.yaml and cards.yaml (default: the built-ins); the same path on every worker.")
    parser.add_argument("--possim-mix", default=DEFAULT_MIX, help=f"Kinds and weights (default {DEFAULT_MIX}).")
    parser.add_argument("--possim-amount", default="10.00", help="Amount in major units, or a range drawn evenly: 1.00-50.00.")
    parser.add_argument("--possim-timeout", type=float, default=10.0, help="Seconds to wait for an answer; then the request is reversed.")
    parser.add_argument("--possim-card", default="approve", help="Card name in cards.yaml (or a PAN) every terminal presents.")
    parser.add_argument("--possim-tid-from", default="", help="Make terminal IDs from this 8-digit one up, with no master key (no MAC), instead of taking terminals.yaml in order.")
    parser.add_argument("--possim-mid", default="", help="With --possim-tid-from: the merchant ID (field 42); default the first of merchants.yaml.")
    parser.add_argument("--possim-stan-from", default="", help="Every terminal's first STAN less one (default: ten a second since midnight, so a second run the same day sends new STANs).")
    parser.add_argument("--possim-throughput", type=float, default=0.0, help="Transactions per second per user (Locust's constant_throughput); 0: closed loop.")


_OPTION_NAMES = ("possim_dialect", "possim_fixtures", "possim_mix", "possim_amount", "possim_timeout",
                 "possim_card", "possim_tid_from", "possim_mid", "possim_stan_from", "possim_throughput")


@dataclass(frozen=True)
class Settings:
    """The --possim-* options, read and checked."""

    dialect: Dialect
    dialect_given: str
    """As given: a built-in name or a file's path (what load_profile takes)."""
    fixtures: str | None
    tids: tuple[str, ...]
    """terminals.yaml's terminal IDs, in file order."""
    first: TerminalProfile
    """The first terminal of terminals.yaml: the currency of generated TIDs."""
    mix: Mix
    amounts: tuple[int, int]
    timeout: float
    card: Card
    tid_from: int | None
    mid: str
    """The merchant of generated TIDs."""
    stan_from: int | None
    """First STAN less one; None: `day_stan` of the time the fleet is made."""
    throughput: float


def read_settings(options: Any) -> Settings:
    """The options Locust parsed (or the master sent), checked; SettingsError names the one that is wrong."""
    dialect_name = str(options.possim_dialect)
    try:
        dialect = load_dialect(dialect_name)
    except ValueError as exc:
        raise SettingsError(f"--possim-dialect {dialect_name!r}: {exc}") from None
    fixtures = str(options.possim_fixtures) or None
    try:
        entries = load_fixture("terminals.yaml", fixtures).get("terminals") or []
        tids = tuple(str(entry["tid"]) for entry in entries if isinstance(entry, dict) and "tid" in entry)
        first = load_profile(tids[0] if tids else None, fixtures, dialect=dialect_name)
        card = resolve_card(str(options.possim_card), fixtures)
    except (FixtureError, ProfileError, CardError) as exc:
        raise SettingsError(f"--possim-fixtures {fixtures or '(built-in)'}: {exc}") from None
    try:
        mix = parse_mix(str(options.possim_mix))
        amounts = parse_amounts(str(options.possim_amount), lookup_currency(first.currency))
    except PlanError as exc:
        # plan.py names `possim load`'s options; these are the same readers under Locust's names.
        raise SettingsError(str(exc).replace("--mix", "--possim-mix").replace("--amount", "--possim-amount")) from None
    timeout = float(options.possim_timeout)
    if not timeout > 0:
        raise SettingsError(f"--possim-timeout {timeout:g}: must be above 0 seconds")
    tid_text = str(options.possim_tid_from).strip()
    if tid_text and not (len(tid_text) == 8 and tid_text.isdigit()):
        raise SettingsError(f"--possim-tid-from {tid_text!r}: must be 8 digits (field 41)")
    try:
        mid = str(options.possim_mid) or str(load_fixture("merchants.yaml", fixtures)["merchants"][0]["id"])
    except (FixtureError, LookupError, TypeError) as exc:
        raise SettingsError(f"--possim-fixtures {fixtures or '(built-in)'}: merchants.yaml: {exc}") from None
    if len(mid) != 15:
        raise SettingsError(f"--possim-mid {mid!r}: a merchant ID is 15 characters (field 42)")
    stan_text = str(options.possim_stan_from).strip()
    if stan_text and not (stan_text.isdigit() and int(stan_text) <= 999_998):
        raise SettingsError(f"--possim-stan-from {stan_text!r}: must be a whole number 0 to 999998")
    throughput = float(options.possim_throughput)
    if throughput < 0:
        raise SettingsError(f"--possim-throughput {throughput:g}: must be 0 (closed loop) or above")
    return Settings(dialect, dialect_name, fixtures, tids, first, mix, amounts, timeout, card,
                    int(tid_text) if tid_text else None, mid, int(stan_text) if stan_text else None, throughput)


def host_address(text: str | None) -> tuple[str, int]:
    """Locust's --host as (host, port): `tcp://HOST:PORT` or `HOST:PORT`."""
    if not text:
        raise SettingsError("--host: give the ISO 8583 host as tcp://HOST:PORT or HOST:PORT")
    rest = text.strip().removeprefix("tcp://").rstrip("/")
    if "://" in rest:
        raise SettingsError(f"--host {text!r}: the host speaks ISO 8583 over TCP; write tcp://HOST:PORT")
    try:
        return parse_address(rest, "--host")
    except ProfileError as exc:
        raise SettingsError(str(exc)) from None


@events.init.add_listener
def _check_options(environment: Environment, **_kwargs: Any) -> None:
    """Refuse bad options before any user starts, on the process that was given them (master or local):
    one line on stderr and exit 2. Workers get the master's options, already checked."""
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner) or not hasattr(options, "possim_mix"):
        return
    try:
        read_settings(options)
        if environment.host or getattr(options, "headless", False):
            host_address(environment.host)
    except SettingsError as exc:
        print(f"possim locustfile: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


# ---- terminals of this process ----


def place(environment: Environment) -> tuple[int, int]:
    """(this process's worker index, how many workers share the TIDs): (0, 1) unless a Locust worker."""
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        return 0, 1
    workers = int(getattr(environment.parsed_options, "expect_workers", 1) or 1)
    if runner.worker_index < 0:
        raise SettingsError("the master gave this worker no index (a Locust master older than 2.10.3): "
                            "its terminal IDs could collide with another worker's")
    if runner.worker_index >= workers:
        raise SettingsError(f"this is worker index {runner.worker_index} but the master expects {workers} "
                            f"worker(s): start the master with --expect-workers at least the number of workers "
                            f"(also with the web UI) so no two workers share a terminal ID")
    return runner.worker_index, workers


class Fleet:
    """This process's terminals, by slot. A slot is taken by one user at a time, lowest free first."""

    def __init__(self, settings: Settings, worker: int, workers: int):
        self.settings = settings
        self.worker = worker
        self.workers = workers
        self.codec = Codec(settings.dialect)
        self.stan = day_stan(system_clock()) if settings.stan_from is None else settings.stan_from
        self._terminals: dict[int, FleetTerminal] = {}
        self._busy: set[int] = set()

    def number(self, slot: int) -> int:
        """The terminal's number in the whole run (0-based): unique across workers."""
        return slot * self.workers + self.worker

    def take(self) -> tuple[int, FleetTerminal]:
        slot = next(s for s in itertools.count() if s not in self._busy)
        terminal = self._terminals.get(slot) or self._make(self.number(slot), slot)
        self._terminals[slot] = terminal
        self._busy.add(slot)
        return slot, terminal

    def give_back(self, slot: int) -> None:
        self._busy.discard(slot)

    def _make(self, number: int, slot: int) -> FleetTerminal:
        s = self.settings
        where = f"user slot {slot} of worker {self.worker} (of {self.workers})"
        if s.tid_from is not None:
            tid = s.tid_from + number
            if tid > LAST_TID:
                raise NoTerminal(f"--possim-tid-from {s.tid_from:08d}: {where} needs terminal number {number}, "
                                 f"past {LAST_TID}: start lower or run fewer users")
            return self._terminal(f"{tid:08d}", s.mid, s.first.currency, None)
        if number >= len(s.tids):
            raise NoTerminal(f"terminals.yaml ({s.fixtures or 'built-in'}) lists {len(s.tids)} terminals and "
                             f"{where} needs terminal number {number}: a run needs workers x users per worker "
                             f"terminals; add terminals, run fewer users, or use --possim-tid-from")
        try:
            profile = load_profile(s.tids[number], s.fixtures, dialect=s.dialect_given)
        except (FixtureError, ProfileError) as exc:
            raise NoTerminal(f"terminals.yaml: {exc}") from None
        return self._terminal(profile.tid, profile.mid, profile.currency, profile.master_key)

    def _terminal(self, tid: str, mid: str, currency: str, tmk: bytes | None) -> FleetTerminal:
        s = self.settings
        return FleetTerminal(tid=tid, mid=mid, dialect=s.dialect, codec=self.codec, card=s.card,
                             currency=currency, tmk=tmk, stan=self.stan)


_fleets: dict[tuple[Any, ...], Fleet] = {}
"""By option values and place: the web UI may start a run with other options, which makes another fleet."""


def fleet_of(environment: Environment) -> Fleet:
    options = environment.parsed_options
    if options is None:
        raise SettingsError("no parsed options: run this file with the locust command")
    worker, workers = place(environment)
    key = tuple(getattr(options, name) for name in _OPTION_NAMES) + (worker, workers)
    if key not in _fleets:
        _fleets[key] = Fleet(read_settings(options), worker, workers)
    return _fleets[key]


_told: set[str] = set()


def _tell_once(kind: str, text: str) -> None:
    """Log a problem every user of this process would repeat, once."""
    if kind not in _told:
        _told.add(kind)
        log.error(text)


# ---- the user ----


class PosTerminalUser(User):
    """One POS terminal: its own connection, signed on first, then the mix one request at a time."""

    def __init__(self, environment: Environment):
        super().__init__(environment)
        self.terminal: FleetTerminal | None = None
        self._fleet: Fleet | None = None
        self._slot: int | None = None
        self._address: tuple[str, int] = ("", 0)
        self._sock: socket.socket | None = None
        self._reader: FrameReader | None = None
        self._rng = random.Random(0)

    def wait_time(self) -> float:
        rate = self._fleet.settings.throughput if self._fleet is not None else 0.0
        return constant_throughput(rate)(self) if rate else 0.0

    def on_start(self) -> None:
        try:
            self._fleet = fleet_of(self.environment)
            self._address = host_address(self.environment.host or self.host)
            self._slot, terminal = self._fleet.take()
        except (SettingsError, NoTerminal) as exc:
            # The user stops at its first task (raising StopUser here would log a traceback per user).
            _tell_once(type(exc).__name__, f"possim: {exc}; this user stops")
            self.environment.events.user_error.fire(user_instance=self, exception=exc, tb=None)
            return
        # Seeded by the terminal's number: a terminal's mix and amounts repeat from run to run.
        self._rng = random.Random(self._fleet.number(self._slot))
        outcome = self._exchange(terminal, terminal.sign_on())
        if outcome is None or not outcome.approved:
            _tell_once("signon", f"possim: terminal {terminal.tid} was not signed on "
                                 f"({outcome.code if outcome else 'no answer'}); users not signed on stop")
            return
        self.terminal = terminal

    @task
    def transact(self) -> None:
        if self.terminal is None or self._fleet is None:
            raise StopUser()
        settings = self._fleet.settings
        request = self.terminal.request(settings.mix.pick(self._rng), self._rng.randint(*settings.amounts))
        self._exchange(self.terminal, request)

    def on_stop(self) -> None:
        self._hang_up()
        if self._fleet is not None and self._slot is not None:
            self._fleet.give_back(self._slot)
            self._slot = None

    # ---- one request, reported ----

    def _exchange(self, terminal: FleetTerminal, request: Request) -> Outcome | None:
        """Send `request`, read its answer and report it; None when it got none it could take.

        A request that may have reached the host and got no usable answer is
        reversed at once on a new connection (the old one may still carry the
        late answer), as a real terminal must before anything else.
        """
        assert self._fleet is not None
        timeout = self._fleet.settings.timeout
        started = time.perf_counter()
        sent = False
        try:
            sock = self._connected(timeout)
            started = time.perf_counter()
            try:
                sock.sendall(request.data)
            except OSError as exc:
                raise LinkError(f"{self._where}: {exc}", sent=True) from None
            sent = True
            payload = self._answer(sock, started + timeout, timeout)
            outcome = terminal.answer(request, payload)
        except (LinkError, AnswerError, FramingError) as exc:
            self._report(terminal, request, started, 0, exc, None)
            self._hang_up()
            if isinstance(exc, LinkError) and not isinstance(exc, LinkTimeout):
                gevent.sleep(PAUSE_AFTER_LINK_ERROR_S)
            if sent and request.kind not in NOT_REVERSED:
                self._exchange(terminal, terminal.reversal(request))
            return None
        declined = None if outcome.approved else Declined(f"{outcome.code} {self._meaning(request, outcome.code)}")
        self._report(terminal, request, started, len(payload) + terminal.dialect.framing.length_size,
                     declined, outcome.code)
        return outcome

    def _report(self, terminal: FleetTerminal, request: Request, started: float, length: int,
                exception: Exception | None, code: str | None) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=request.kind, response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=exception, context={"tid": terminal.tid, "code": code},
        )

    @staticmethod
    def _meaning(request: Request, code: str) -> str:
        return qr_response_text(code) if request.kind == "qr" else response_text(code)

    # ---- the connection ----

    @property
    def _where(self) -> str:
        return f"host {self._address[0]}:{self._address[1]}"

    def _connected(self, timeout: float) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection(self._address, timeout=timeout)
            except OSError as exc:
                raise LinkError(f"{self._where}: {exc}", sent=False) from None
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert self._fleet is not None
            self._reader = FrameReader(self._fleet.settings.dialect.framing)
        return self._sock

    def _answer(self, sock: socket.socket, deadline: float, timeout: float) -> bytes:
        """The payload of the next frame. It can only be the answer to the request just sent: one request is
        outstanding at a time, and a request that got no answer hangs the connection up, so a late answer
        never arrives on the next one (FleetTerminal.answer checks it all the same)."""
        assert self._reader is not None
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise LinkTimeout(f"no answer from {self._where} within {timeout:g} s", sent=True)
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise LinkTimeout(f"no answer from {self._where} within {timeout:g} s", sent=True) from None
            except OSError as exc:
                raise LinkError(f"{self._where}: {exc}", sent=True) from None
            if not chunk:
                raise LinkError(f"{self._where} closed the connection", sent=True)
            frames = self._reader.feed(chunk)
            if frames:
                return frames[0]

    def _hang_up(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._reader = None
