"""How fast the acquirer host answers purchases, and what the codec costs.

    python benchmarks/host_throughput.py [--terminals 50] [--duration 10]
        [--dialect cup|iso87ascii|iso87binary|all] [--json]

The host runs as `possim host run` in its own process, on fixtures written
for the run (N terminals of the first merchant, an account that cannot run
dry) and a fresh journal, so host and load generator each get a core. The
load generator is deliberately not `terminal.Terminal`: that keeps per-message
state in SQLite and would measure itself. Here each connection is an asyncio
protocol that signs on, then sends the next purchase from the callback that
received the previous answer (closed loop), built from a template encoded
once with the wire Codec where only STAN and amount change.

Figures, not a verdict: the exit status says only whether the run worked
(the host answered and its journal holds exactly the approvals counted).
Progress goes to stderr; the report (or one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import iso8583
import yaml

from possim.wire.codec import Codec
from possim.wire.dialect import Dialect, load_dialect
from possim.wire.framing import FrameReader, frame, split_envelope
from possim.wire.message import Message

DIALECTS = ("cup", "iso87ascii", "iso87binary")
TARGET_RATE = 3000
TARGET_P99_MS = 20.0
TARGET_CODEC_RATIO = 1.2
TARGET_TERMINALS = 50

MERCHANT = "898310048160001"
CARD = "approve"
ACCOUNT = "A-1001"
RICH = 10**15
"""Opening balance of the benchmark account: no run can spend it (minor units)."""
WHEN = "0615100000"
"""Transmission date-time (MMDDhhmmss) every iso87 request carries; STANs keep keys distinct."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- fixtures and the host process ----


def terminal_ids(count: int) -> list[str]:
    return [f"{90000001 + i:08d}" for i in range(count)]


def write_fixtures(folder: Path, tids: list[str]) -> None:
    """The built-in fixtures, with `tids` as terminals of the first merchant and the card's account made rich."""
    builtin = resources.files("possim.fixtures")
    for name in ("merchants.yaml", "cards.yaml", "accounts.yaml", "host_rules.yaml"):
        (folder / name).write_text((builtin / name).read_text(encoding="utf-8"), encoding="utf-8")
    terminals = [{"tid": tid, "mid": MERCHANT} for tid in tids]
    (folder / "terminals.yaml").write_text(yaml.safe_dump({"terminals": terminals}), encoding="utf-8")
    accounts = yaml.safe_load((folder / "accounts.yaml").read_text(encoding="utf-8"))
    for account in accounts["accounts"]:
        if account["id"] == ACCOUNT:
            account["balance"] = RICH
            account.pop("per_transaction_limit", None)
    (folder / "accounts.yaml").write_text(yaml.safe_dump(accounts), encoding="utf-8")


@dataclass
class HostProcess:
    process: subprocess.Popen[str]
    port: int
    event_loop: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_host(dialect: str, fixtures: Path, db: Path) -> HostProcess:
    """`possim host run` on an ephemeral port; its first stdout line (JSON) names the port."""
    command = [
        sys.executable, "-c", "from possim.cli import main; main()",
        "host", "run", "--listen", "127.0.0.1:0", "--dialect", dialect,
        "--fixtures", str(fixtures), "--db", str(db), "--log-level", "warning", "--json",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise RuntimeError(f"the host did not start (exit {process.returncode})")
    ready = json.loads(line)
    port = int(ready["listening"].rpartition(":")[2])
    return HostProcess(process, port, str(ready.get("event_loop", "asyncio")))


# ---- requests: encoded once, then only STAN and amount change ----


class Templates:
    """Framed sign-on and purchase bytes for one terminal.

    The purchase is encoded once by the Codec; `purchase()` overwrites the
    bytes of fields 11 and 4 (both fixed length) in a copy. The splice is
    checked against a real encode at start, so a dialect where it would be
    wrong fails loudly instead of sending garbage.
    """

    def __init__(self, dialect: Dialect, codec: Codec, tid: str):
        self.dialect = dialect
        self.codec = codec
        self.tid = tid
        self.sign_on = frame(dialect.framing, codec.encode(self.sign_on_message(1)))
        body = codec.encode(self.purchase_message(0, 0))
        prefix = len(frame(dialect.framing, body)) - len(body)
        self._frame = frame(dialect.framing, body)
        spans = codec.spans(body)
        self._stan_at = prefix + spans["11"][0]
        self._amount_at = prefix + spans["4"][0]
        for stan, amount in ((2, 123), (999_999, 987_654_321)):
            expected = frame(dialect.framing, codec.encode(self.purchase_message(stan, amount)))
            if self.purchase(stan, amount) != expected:
                raise AssertionError(f"{dialect.name}: template splice differs from a real encode")

    def sign_on_message(self, stan: int) -> Message:
        message = Message("0800", {11: f"{stan:06d}", 41: self.tid, 42: MERCHANT})
        if self.dialect.name == "cup":
            message[60], message[63] = "00000001001", "001"
        else:
            self.dialect.set_role(message, "network_code", "001")
        return self._stamped(message)

    def purchase_message(self, stan: int, amount: int) -> Message:
        card = benchmark_card()
        message = Message("0200", {
            3: "000000", 4: f"{amount:012d}", 11: f"{stan:06d}", 12: WHEN[4:], 13: WHEN[:4],
            22: "021", 25: "00", 35: f"{card['pan']}D{card['expiry']}{card['service_code']}00000",
            41: self.tid, 42: MERCHANT, 49: "156",
        })
        if self.dialect.name == "cup":
            message[60] = "22000001000"
        return self._stamped(message)

    def _stamped(self, message: Message) -> Message:
        if self.dialect.convention("transmission_datetime"):
            message[7] = WHEN
        return message

    def purchase(self, stan: int, amount: int) -> bytes:
        data = bytearray(self._frame)
        stan_bytes = self._digits("11", f"{stan:06d}")
        amount_bytes = self._digits("4", f"{amount:012d}")
        data[self._stan_at : self._stan_at + len(stan_bytes)] = stan_bytes
        data[self._amount_at : self._amount_at + len(amount_bytes)] = amount_bytes
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
    latencies_ns: list[int] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class LoadConnection(asyncio.Protocol):
    """One terminal: signs on, then sends its next purchase from the callback that got the last answer."""

    def __init__(self, templates: Templates, tally: Tally, idle: asyncio.Event):
        self.templates = templates
        self.tally = tally
        self.idle = idle
        self.reader = FrameReader(templates.dialect.framing)
        self.framing = templates.dialect.framing
        self.spec = templates.dialect.spec
        self.transport: asyncio.Transport | None = None
        self.signed_on = asyncio.get_running_loop().create_future()
        self.stan = 1
        self.sent_at = 0
        self.in_flight = False

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
            self.signed_on.set_result(code)
            return
        tally = self.tally
        tally.codes[code] = tally.codes.get(code, 0) + 1
        if code == "00":
            tally.approved_total += 1
        if tally.window_start <= self.sent_at and received <= tally.window_end:
            tally.latencies_ns.append(received - self.sent_at)
            if code == "00":
                tally.approved_in_window += 1
        if tally.stop_sending:
            self.idle.set()
        else:
            self.send_purchase()

    def send_purchase(self) -> None:
        self.stan += 1
        self._write(self.templates.purchase(self.stan, 100 + self.stan % 900))

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.in_flight = True
        self.sent_at = time.perf_counter_ns()
        self.transport.write(data)


@dataclass
class LoadResult:
    dialect: str
    terminals: int
    duration_s: float
    approved: int
    approved_per_s: float
    answers: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    codes: dict[str, int]
    errors: list[str]
    journal_approved: int
    approved_total: int
    journal_consistent: bool
    event_loop: str


async def drive(port: int, all_templates: list[Templates], duration: float) -> Tally:
    loop = asyncio.get_running_loop()
    tally = Tally()
    idle = asyncio.Event()
    connections: list[LoadConnection] = []
    for templates in all_templates:
        _, protocol = await loop.create_connection(lambda t=templates: LoadConnection(t, tally, idle), "127.0.0.1", port)
        connections.append(protocol)
    answers = await asyncio.wait_for(asyncio.gather(*(c.signed_on for c in connections)), 30)
    refused = [c.templates.tid for c, code in zip(connections, answers) if code != "00"]
    if refused:
        raise RuntimeError(f"sign-on refused for {len(refused)} terminals, e.g. {refused[0]}")
    log(f"  {len(connections)} terminals signed on; sending purchases for {duration:g} s")
    tally.window_start = time.perf_counter_ns()
    tally.window_end = tally.window_start + int(duration * 1e9)
    for connection in connections:
        connection.send_purchase()
    await asyncio.sleep(duration)
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
    return tally


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


def run_load(dialect_name: str, terminals: int, duration: float, workdir: Path) -> LoadResult:
    dialect = load_dialect(dialect_name)
    codec = Codec(dialect)
    tids = terminal_ids(terminals)
    folder = workdir / f"fixtures-{dialect_name}"
    folder.mkdir()
    write_fixtures(folder, tids)
    db = workdir / f"journal-{dialect_name}.sqlite"
    all_templates = [Templates(dialect, codec, tid) for tid in tids]
    log(f"{dialect_name}: starting the host")
    host = start_host(dialect_name, folder, db)
    try:
        tally = asyncio.run(drive(host.port, all_templates, duration))
    finally:
        host.stop()
    ordered = sorted(tally.latencies_ns)
    in_journal = journal_approvals(db)
    return LoadResult(
        dialect=dialect_name,
        terminals=terminals,
        duration_s=duration,
        approved=tally.approved_in_window,
        approved_per_s=tally.approved_in_window / duration,
        answers=sum(tally.codes.values()),
        p50_ms=percentile(ordered, 0.50),
        p95_ms=percentile(ordered, 0.95),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1] / 1e6 if ordered else float("nan"),
        codes=dict(sorted(tally.codes.items())),
        errors=tally.errors,
        journal_approved=in_journal,
        approved_total=tally.approved_total,
        journal_consistent=in_journal == tally.approved_total,
        event_loop=host.event_loop,
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
    request = Templates(dialect, codec, terminal_ids(1)[0]).purchase_message(123, 1250)
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
        lines += [
            f"{r.dialect}: {r.terminals} terminals, {r.duration_s:g} s, journal on, event loop {r.event_loop}",
            f"  approved purchases  {r.approved_per_s:,.0f}/s ({r.approved:,} in the window)",
            f"  latency             p50 {r.p50_ms:.2f} ms  p95 {r.p95_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  max {r.max_ms:.2f} ms",
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
        f"{r.dialect} {r.approved_per_s:,.0f}/s ({r.approved_per_s / TARGET_RATE:.2f} of the target rate),"
        f" p99 {r.p99_ms:.1f} ms, {r.terminals} terminals" for r in loads
    )
    codec = ", ".join(f"{c.dialect} {c.ratio:.2f}×" for c in costs)
    lines.append(
        f"summary: targets ≥ {TARGET_RATE:,} approved/s and p99 ≤ {TARGET_P99_MS:g} ms at {TARGET_TERMINALS} terminals"
        f" on 2 cores, codec ≤ {TARGET_CODEC_RATIO}× raw pyiso8583"
        f" | reached on {os.cpu_count()} cores: {loads_summary or 'no load run'} | codec {codec or 'not measured'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terminals", type=int, default=TARGET_TERMINALS, help="connections, one terminal each (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per dialect (default 10)")
    parser.add_argument("--dialect", choices=(*DIALECTS, "all"), default="cup",
                        help="dialect(s) of the load run (default cup); the codec cost is measured for every dialect")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    if args.terminals < 1 or args.terminals > 9_999_999 or args.duration <= 0:
        parser.error("--terminals must be 1..9999999 and --duration positive")
    dialects = DIALECTS if args.dialect == "all" else (args.dialect,)
    workdir = Path(tempfile.mkdtemp(prefix="possim-bench-"))
    try:
        loads = [run_load(name, args.terminals, args.duration, workdir) for name in dialects]
        log("measuring codec cost")
        costs = [codec_cost(name) for name in DIALECTS]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
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
    worked = all(r.journal_consistent and r.answers > 0 for r in loads)
    return 0 if worked else 1


if __name__ == "__main__":
    sys.exit(main())
