"""How fast the acquirer host answers purchases, what a purchase costs it, and what the codec costs.

    python benchmarks/host_throughput.py [--terminals 1,50,500] [--duration 10]
        [--dialect cup|iso87ascii|iso87binary|all] [--no-mac] [--verify-every 1] [--json]

The host runs as `possim host run` in its own process, on fixtures written
for the run (N terminals of the first merchant, each with a master key, and
an account that cannot run dry) and a fresh journal per run. The load
generator is deliberately not `terminal.Terminal`: that keeps per-message
state in SQLite and would measure itself. Here each connection is an asyncio
protocol that signs on, unpacks the working keys of field 62 with its TMK,
then sends the next purchase from the callback that received the previous
answer (closed loop), built from a template encoded once with the wire Codec
where only STAN, amount and the MAC change. The host checks every request's
MAC; the generator checks the MAC of every answer (`--verify-every N`: one
answer in N, to spare the generator's CPU). `--no-mac` gives the terminals no
master key, so nothing carries a MAC.

Per run it prints approved purchases per second, latency percentiles, the
host's CPU time per answer (from /proc/PID/stat, all its threads) and that
cost as a multiple of raw pyiso8583 encode + decode of a message of the same
dialect, and how busy the generator was (on a 2-core machine the generator
shares the cores with the host: a generator near 100% caps the rate).

Figures, not a verdict: the exit status says only whether every run worked
(the host answered, its journal holds exactly the approvals counted, and
every answer MAC checked by the generator verified). Progress goes to
stderr; the report (or one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import iso8583
import yaml

from possim.fixtures import load_fixture
from possim.hsm_mock.key_download import unpack
from possim.lab import FLEET_TID_FROM, HostProcess, fleet_fixtures, host_process
from possim.hsm_mock.message_mac import MAC_SCHEMES, MessageMac
from possim.wire.codec import Codec
from possim.wire.dialect import Dialect, load_dialect
from possim.wire.framing import FrameReader, frame, split_envelope
from possim.wire.message import Message

DIALECTS = ("cup", "iso87ascii", "iso87binary")
TARGET_RATE = 5000
TARGET_P99_MS = 10.0
TARGET_CODEC_RATIO = 1.2
TARGET_TERMINALS = 50
DEFAULT_TERMINALS = "1,50,500"

MERCHANT = "898310048160001"
CARD = "approve"
WHEN = "0615100000"
"""Transmission date-time (MMDDhhmmss) every iso87 request carries; STANs keep keys distinct."""
_PLACEHOLDER_MAC = "00" * 8
_PROBE_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
"""A key the MAC splice is checked with at start (the real ones arrive at sign-on)."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- fixtures and the host process ----


def fleet(folder: Path, terminals: int, maced: bool) -> tuple[list[str], dict[str, bytes] | None]:
    """Fixtures for `terminals` terminals (lab.fleet_fixtures: accounts no run empties, no scenario rules) written
    to `folder`; their IDs, and their master keys when `maced`."""
    fleet_fixtures(folder, terminals, master_keys=maced)
    entries = load_fixture("terminals.yaml", folder)["terminals"]
    tids = [str(e["tid"]) for e in entries]
    return tids, ({str(e["tid"]): bytes.fromhex(e["tmk"]) for e in entries} if maced else None)


_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat, counted after the command name)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    parts = text.rpartition(")")[2].split()
    return (int(parts[11]) + int(parts[12])) / _TICKS


# ---- requests: encoded once, then only STAN, amount and MAC change ----


class Templates:
    """Framed sign-on and purchase bytes for one terminal.

    The purchase is encoded once by the Codec; `purchase()` overwrites the
    bytes of fields 11 and 4 (both fixed length) in a copy and, with a MAC
    key, recomputes the MAC over the new bytes and writes it over field 64.
    Both splices are checked against a real encode (and a real
    `MessageMac.sign`) at start, so a dialect where they would be wrong fails
    loudly instead of sending garbage.
    """

    def __init__(self, dialect: Dialect, codec: Codec, tid: str, maced: bool):
        self.dialect = dialect
        self.codec = codec
        self.tid = tid
        self.sign_on = frame(dialect.framing, codec.encode(self.sign_on_message(1)))
        body = codec.encode(self.purchase_message(0, 0, maced))
        prefix = len(frame(dialect.framing, body)) - len(body)
        self._frame = frame(dialect.framing, body)
        spans = codec.spans(body)
        self._stan_at = prefix + spans["11"][0]
        self._amount_at = prefix + spans["4"][0]
        self._mac: tuple[Any, int, int, int] | None = None
        if maced:
            mac_field = dialect.roles["mac"]
            if list(spans)[-1] != mac_field:
                raise AssertionError(f"{dialect.name}: the MAC field is not the purchase's last field")
            start, end = spans[mac_field]
            self._mac = (MAC_SCHEMES[dialect.mac_scheme], prefix + spans["t"][0], prefix + start, prefix + end)
        signer = MessageMac(codec) if maced else None
        for stan, amount in ((2, 123), (999_999, 987_654_321)):
            message = self.purchase_message(stan, amount, False)
            encoded = signer.sign(message, _PROBE_KEY) if signer else codec.encode(message)
            if self.purchase(stan, amount, _PROBE_KEY if maced else None) != frame(dialect.framing, encoded):
                raise AssertionError(f"{dialect.name}: template splice differs from a real encode")

    def sign_on_message(self, stan: int) -> Message:
        message = Message("0800", {11: f"{stan:06d}", 41: self.tid, 42: MERCHANT})
        if self.dialect.name == "cup":
            message[60], message[63] = "00000001003", "001"
        else:
            self.dialect.set_role(message, "network_code", "001")
        return self._stamped(message)

    def purchase_message(self, stan: int, amount: int, placeholder_mac: bool = False) -> Message:
        card = benchmark_card()
        message = Message("0200", {
            3: "000000", 4: f"{amount:012d}", 11: f"{stan:06d}", 12: WHEN[4:], 13: WHEN[:4],
            22: "021", 25: "00", 35: f"{card['pan']}D{card['expiry']}{card['service_code']}00000",
            41: self.tid, 42: MERCHANT, 49: "156",
        })
        if self.dialect.name == "cup":
            message[60] = "22000001000"
        if placeholder_mac:
            message[int(self.dialect.roles["mac"])] = _PLACEHOLDER_MAC
        return self._stamped(message)

    def _stamped(self, message: Message) -> Message:
        if self.dialect.convention("transmission_datetime"):
            message[7] = WHEN
        return message

    def purchase(self, stan: int, amount: int, mac_key: bytes | None = None) -> bytes:
        data = bytearray(self._frame)
        stan_bytes = self._digits("11", f"{stan:06d}")
        amount_bytes = self._digits("4", f"{amount:012d}")
        data[self._stan_at : self._stan_at + len(stan_bytes)] = stan_bytes
        data[self._amount_at : self._amount_at + len(amount_bytes)] = amount_bytes
        if self._mac is not None and mac_key is not None:
            scheme, mab_at, mac_at, mac_end = self._mac
            data[mac_at:mac_end] = scheme(mac_key, bytes(data[mab_at:mac_at]))
        return bytes(data)

    def _digits(self, key: str, digits: str) -> bytes:
        """A fixed-length numeric field as packed (even digit count) or text."""
        encoding = self.dialect.spec[key]["data_enc"]
        return bytes.fromhex(digits) if encoding == "b" else digits.encode(encoding)


@functools.cache
def benchmark_card() -> dict[str, Any]:
    """The built-in card every purchase presents (its account is made rich for the run)."""
    raw = yaml.safe_load((resources.files("possim.fixtures") / "cards.yaml").read_text(encoding="utf-8"))
    return next(c for c in raw["cards"] if c["name"] == CARD)


# ---- the load: one closed-loop protocol per terminal ----


@dataclass
class Tally:
    """What every connection reports into; latencies of answers inside the measured window only."""

    window_start: int = 0
    window_end: int = 0
    stop_sending: bool = False
    approved_total: int = 0
    approved_in_window: int = 0
    received_in_window: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    verify_every: int = 1
    verified: int = 0
    mac_failures: int = 0


class LoadConnection(asyncio.Protocol):
    """One terminal: signs on, then sends its next purchase from the callback that got the last answer."""

    def __init__(self, templates: Templates, tally: Tally, idle: asyncio.Event, tmk: bytes | None,
                 checker: MessageMac | None):
        self.templates = templates
        self.tally = tally
        self.idle = idle
        self.tmk = tmk
        self.checker = checker
        self.mac_key: bytes | None = None
        self.reader = FrameReader(templates.dialect.framing)
        self.framing = templates.dialect.framing
        self.spec = templates.dialect.spec
        self.transport: asyncio.Transport | None = None
        self.signed_on = asyncio.get_running_loop().create_future()
        self.stan = 1
        self.sent_at = 0
        self.in_flight = False
        self.answers = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._write(self.templates.sign_on)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight or not self.signed_on.done():
            self.tally.errors.append(f"{self.templates.tid}: connection lost ({exc or 'closed by the host'})")
            if not self.signed_on.done():
                self.signed_on.set_result("closed")
            self.in_flight = False
            self.idle.set()

    def data_received(self, data: bytes) -> None:
        received = time.perf_counter_ns()
        for payload in self.reader.feed(data):
            self._answered(payload, received)

    def _answered(self, payload: bytes, received: int) -> None:
        self.in_flight = False
        _, body = split_envelope(self.framing, payload)
        doc, _ = iso8583.decode(body, self.spec)
        code = doc.get("39", "??")
        if not self.signed_on.done():
            self._take_keys(body, code)
            return
        tally = self.tally
        self.answers += 1
        if self.mac_key is not None and self.checker is not None and self.answers % tally.verify_every == 0:
            tally.verified += 1
            problem = self.checker.verify(body, self.mac_key)
            if problem is not None:
                tally.mac_failures += 1
                if tally.mac_failures <= 5:
                    tally.errors.append(f"{self.templates.tid}: answer refused: {problem}")
        tally.codes[code] = tally.codes.get(code, 0) + 1
        if code == "00":
            tally.approved_total += 1
        if tally.window_start <= received <= tally.window_end:
            tally.received_in_window += 1
        if tally.window_start <= self.sent_at and received <= tally.window_end:
            tally.latencies_ns.append(received - self.sent_at)
            if code == "00":
                tally.approved_in_window += 1
        if tally.stop_sending:
            self.idle.set()
        else:
            self.send_purchase()

    def _take_keys(self, body: bytes, code: str) -> None:
        """The sign-on answer: with a TMK, its field 62 must hold working keys whose check values match."""
        if code == "00" and self.tmk is not None:
            block = self.templates.dialect.get_role(self.templates.codec.decode(body), "working_keys")
            if block is None:
                self.signed_on.set_result("no working keys")
                return
            _, keys = unpack(self.tmk, bytes.fromhex(block))
            self.mac_key = keys.mac_key
        self.signed_on.set_result(code)

    def send_purchase(self) -> None:
        self.stan += 1
        self._write(self.templates.purchase(self.stan, 100 + self.stan % 900, self.mac_key))

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.in_flight = True
        self.sent_at = time.perf_counter_ns()
        self.transport.write(data)


@dataclass
class LoadResult:
    dialect: str
    terminals: int
    mac: bool
    duration_s: float
    approved: int
    approved_per_s: float
    answers: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    codes: dict[str, int]
    errors: list[str]
    journal_approved: int
    approved_total: int
    journal_consistent: bool
    event_loop: str
    host_cpu_s: float
    """Host CPU time (user + system, all threads) inside the measured window."""
    host_cpu_us_per_answer: float
    generator_cpu_share: float
    """The generator's CPU time over the window's wall time: near 1.0, it (not the host) sets the pace."""
    verified: int
    mac_failures: int
    host_cost_ratio: float = float("nan")
    """Host CPU per answer over raw pyiso8583 encode + decode of one message (filled in from the codec cost)."""


async def drive(host: HostProcess, all_templates: list[Templates], duration: float,
                tmks: dict[str, bytes] | None, verify_every: int) -> tuple[Tally, float, float]:
    """The closed loop; returns the tally, the host's CPU seconds and the generator's CPU share in the window."""
    loop = asyncio.get_running_loop()
    tally = Tally(verify_every=verify_every)
    idle = asyncio.Event()
    connections: list[LoadConnection] = []
    checker = MessageMac(all_templates[0].codec) if tmks is not None else None
    for templates in all_templates:
        tmk = tmks[templates.tid] if tmks is not None else None
        _, protocol = await loop.create_connection(
            lambda t=templates, k=tmk: LoadConnection(t, tally, idle, k, checker), *host.address)
        connections.append(protocol)
    answers = await asyncio.wait_for(asyncio.gather(*(c.signed_on for c in connections)), 60)
    refused = [(c.templates.tid, code) for c, code in zip(connections, answers) if code != "00"]
    if refused:
        raise RuntimeError(f"sign-on refused for {len(refused)} terminals, e.g. {refused[0][0]}: {refused[0][1]}")
    log(f"  {len(connections)} terminals signed on; sending purchases for {duration:g} s")
    host_cpu_start, own_cpu_start = process_cpu_seconds(host.process.pid), time.process_time()
    tally.window_start = time.perf_counter_ns()
    tally.window_end = tally.window_start + int(duration * 1e9)
    for connection in connections:
        connection.send_purchase()
    await asyncio.sleep(duration)
    host_cpu = process_cpu_seconds(host.process.pid) - host_cpu_start
    own_share = (time.process_time() - own_cpu_start) / ((time.perf_counter_ns() - tally.window_start) / 1e9)
    tally.stop_sending = True
    deadline = loop.time() + 10
    while any(c.in_flight for c in connections) and loop.time() < deadline:
        idle.clear()
        try:
            await asyncio.wait_for(idle.wait(), deadline - loop.time())
        except asyncio.TimeoutError:
            break
    stuck = sum(c.in_flight for c in connections)
    if stuck:
        tally.errors.append(f"{stuck} purchases unanswered 10 s after the run")
    for connection in connections:
        assert connection.transport is not None
        connection.transport.close()
    return tally, host_cpu, own_share


def percentile(ordered: list[int], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index] / 1e6


def journal_approvals(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return connection.execute(
            "SELECT COUNT(*) FROM transactions WHERE status = 'approved' AND mti = '0200'"
        ).fetchone()[0]


def run_load(dialect_name: str, terminals: int, duration: float, workdir: Path, maced: bool,
             verify_every: int) -> LoadResult:
    dialect = load_dialect(dialect_name)
    codec = Codec(dialect)
    name = f"{dialect_name}-{terminals}-{'mac' if maced else 'nomac'}"
    tids, tmks = fleet(workdir / f"fixtures-{name}", terminals, maced)
    all_templates = [Templates(dialect, codec, tid, maced) for tid in tids]
    log(f"{dialect_name}, {terminals} terminals, {'MAC' if maced else 'no MAC'}: starting the host")
    with host_process(dialect_name, workdir / f"host-{name}", fixtures_dir=workdir / f"fixtures-{name}") as host:
        tally, host_cpu, own_share = asyncio.run(drive(host, all_templates, duration, tmks, verify_every))
        event_loop = str(host.ready.get("event_loop", "asyncio"))
    db = workdir / f"host-{name}" / "journal.sqlite"
    ordered = sorted(tally.latencies_ns)
    in_journal = journal_approvals(db)
    return LoadResult(
        dialect=dialect_name,
        terminals=terminals,
        mac=maced,
        duration_s=duration,
        approved=tally.approved_in_window,
        approved_per_s=tally.approved_in_window / duration,
        answers=sum(tally.codes.values()),
        p50_ms=percentile(ordered, 0.50),
        p90_ms=percentile(ordered, 0.90),
        p99_ms=percentile(ordered, 0.99),
        p999_ms=percentile(ordered, 0.999),
        max_ms=ordered[-1] / 1e6 if ordered else float("nan"),
        codes=dict(sorted(tally.codes.items())),
        errors=tally.errors,
        journal_approved=in_journal,
        approved_total=tally.approved_total,
        journal_consistent=in_journal == tally.approved_total,
        event_loop=event_loop,
        host_cpu_s=host_cpu,
        host_cpu_us_per_answer=host_cpu / tally.received_in_window * 1e6 if tally.received_in_window else float("nan"),
        generator_cpu_share=own_share,
        verified=tally.verified,
        mac_failures=tally.mac_failures,
    )


# ---- codec cost against raw pyiso8583 ----


@dataclass
class CodecCost:
    dialect: str
    codec_us: float
    raw_us: float
    ratio: float


def codec_cost(dialect_name: str, rounds: int = 60, per_round: int = 50) -> CodecCost:
    """Encode + decode of a purchase request and its answer, per message: possim's Codec vs
    pyiso8583 on the same spec. Rounds alternate between the two and the best round of each
    counts, so a noisy moment penalises neither side; the garbage collector waits, as in timeit."""
    dialect = load_dialect(dialect_name)
    codec = Codec(dialect)
    request = Templates(dialect, codec, f"{FLEET_TID_FROM:08d}", maced=False).purchase_message(123, 1250)
    answer = Message("0210", {n: request[n] for n in (3, 4, 7, 11, 25, 41, 42, 49, 60) if n in request})
    answer.fields.update({12: "100000", 13: "0615", 37: "616600000001", 38: "123456", 39: "00"})
    messages = [request, answer]
    docs = [{"t": m.mti, **{str(n): v for n, v in m.fields.items()}} for m in messages]
    spec = dialect.spec

    def ours() -> None:
        for message in messages:
            codec.decode(codec.encode(message))

    def raw() -> None:
        for doc in docs:
            data, _ = iso8583.encode(dict(doc), spec)
            iso8583.decode(bytes(data), spec)

    for message in messages:
        assert codec.decode(codec.encode(message)) == message, f"{dialect_name}: codec round trip"
    best = {"ours": float("inf"), "raw": float("inf")}
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, work in (("ours", ours), ("raw", raw)):
                start = time.perf_counter()
                for _ in range(per_round):
                    work()
                best[name] = min(best[name], (time.perf_counter() - start) / (per_round * len(messages)))
    finally:
        if collecting:
            gc.enable()
    return CodecCost(dialect_name, best["ours"] * 1e6, best["raw"] * 1e6, best["ours"] / best["raw"])


# ---- report ----


def report(loads: list[LoadResult], costs: list[CodecCost]) -> str:
    lines = [f"possim host throughput — {os.cpu_count()} cores, Python {sys.version.split()[0]}", ""]
    for r in loads:
        mac = f"MAC checked by the host, {r.verified:,} answer MACs verified" if r.mac else "no MAC"
        lines += [
            f"{r.dialect}: {r.terminals} terminals, {mac}, {r.duration_s:g} s, journal on, event loop {r.event_loop}",
            f"  approved purchases  {r.approved_per_s:,.0f}/s ({r.approved:,} in the window)",
            f"  latency             p50 {r.p50_ms:.2f}  p90 {r.p90_ms:.2f}  p99 {r.p99_ms:.2f}  p99.9 {r.p999_ms:.2f}"
            f"  max {r.max_ms:.2f} ms",
            f"  host CPU            {r.host_cpu_us_per_answer:.0f} µs per answer"
            f" ({r.host_cost_ratio:.1f}× raw pyiso8583 encode + decode), {r.host_cpu_s / r.duration_s:.0%} of a core;"
            f" generator {r.generator_cpu_share:.0%} of a core",
            f"  answers by code     {', '.join(f'{c}: {n:,}' for c, n in r.codes.items()) or 'none'}"
            f"  (non-00: {sum(n for c, n in r.codes.items() if c != '00'):,})",
            f"  errors              {len(r.errors)}" + "".join(f"\n    {e}" for e in r.errors[:5]),
            f"  journal             {r.journal_approved:,} approved rows, {r.approved_total:,} approvals counted"
            f" — {'consistent' if r.journal_consistent else 'MISMATCH'}",
            "",
        ]
    if costs:
        lines.append("codec cost per message (encode + decode; request and answer averaged)")
        for c in costs:
            lines.append(f"  {c.dialect:<12} possim {c.codec_us:6.1f} µs   pyiso8583 {c.raw_us:6.1f} µs   {c.ratio:.2f}×")
        lines.append("")
    loads_summary = "; ".join(
        f"{r.dialect} {'MAC' if r.mac else 'no MAC'} {r.terminals} terminals {r.approved_per_s:,.0f}/s"
        f" ({r.approved_per_s / TARGET_RATE:.2f} of the target rate), p99 {r.p99_ms:.1f} ms,"
        f" host {r.host_cost_ratio:.1f}× raw codec" for r in loads
    )
    codec = ", ".join(f"{c.dialect} {c.ratio:.2f}×" for c in costs)
    lines.append(
        f"summary: targets ≥ {TARGET_RATE:,} approved/s and p99 ≤ {TARGET_P99_MS:g} ms at {TARGET_TERMINALS} terminals"
        f" on 2 cores, codec ≤ {TARGET_CODEC_RATIO}× raw pyiso8583"
        f" | reached on {os.cpu_count()} cores: {loads_summary or 'no load run'} | codec {codec or 'not measured'}"
    )
    return "\n".join(lines)


def terminal_counts(text: str) -> list[int]:
    """`1,50,500` → [1, 50, 500]; argparse turns the ValueError into a usage error."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(not 1 <= n <= 9_999_999 for n in counts):
        raise ValueError(text)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terminals", type=terminal_counts, default=terminal_counts(DEFAULT_TERMINALS),
                        help=f"comma-separated terminal counts, one run each (default {DEFAULT_TERMINALS})")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run (default 10)")
    parser.add_argument("--dialect", choices=(*DIALECTS, "all"), default="cup",
                        help="dialect(s) of the load run (default cup); the codec cost is measured for every dialect")
    parser.add_argument("--no-mac", action="store_true", help="terminals without a master key: no MAC anywhere")
    parser.add_argument("--verify-every", type=int, default=1, metavar="N",
                        help="the generator checks the MAC of one answer in N (default 1: every answer)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.verify_every < 1:
        parser.error("--duration must be positive and --verify-every at least 1")
    dialects = DIALECTS if args.dialect == "all" else (args.dialect,)
    workdir = Path(tempfile.mkdtemp(prefix="possim-bench-"))
    try:
        loads = [run_load(name, count, args.duration, workdir, not args.no_mac, args.verify_every)
                 for name in dialects for count in args.terminals]
        log("measuring codec cost")
        costs = [codec_cost(name) for name in DIALECTS]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw = {c.dialect: c.raw_us for c in costs}
    for r in loads:
        r.host_cost_ratio = r.host_cpu_us_per_answer / raw[r.dialect]
    if args.json:
        print(json.dumps({
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "loads": [asdict(r) for r in loads],
            "codec": [asdict(c) for c in costs],
            "targets": {"approved_per_s": TARGET_RATE, "p99_ms": TARGET_P99_MS, "terminals": TARGET_TERMINALS,
                        "cores": 2, "codec_ratio": TARGET_CODEC_RATIO},
        }, indent=2))
    else:
        print(report(loads, costs))
    worked = all(r.journal_consistent and r.answers > 0 and r.mac_failures == 0 for r in loads)
    return 0 if worked else 1


if __name__ == "__main__":
    sys.exit(main())
