"""What the serial link layer costs: frame coding, ACKed round trips over a PTY pair, and a purchase over serial vs TCP.

    python benchmarks/serial_link.py [--frames 5000] [--round-trips 300] [--purchases 100] [--json]

Three measurements, each for every built-in link profile where it applies:

1. Frame coding alone: `serial_frames.encode_frame` and `FrameReader.feed`
   on a stream of `--frames` frames of 200-byte payloads, fed in 4 KB
   chunks, best of a few rounds with the garbage collector waiting (as in
   timeit). Payloads are random bytes from a fixed seed (so they hold ETX,
   ACK and STX values); for ecr-7e1, a 7-bit line, printable ASCII; for
   stx-etx-lrc the 200 bytes begin with a 2-byte big-endian length header
   and the reader learns the end from it (`iso_inner_length`), as it does
   for ISO 8583 frames. MB/s counts the bytes fed (framing included).
   Every decoded frame must equal the payload sent.

2. Round trips over a real pseudo-terminal pair (`PtyPair`): two
   `SerialSession`s over `open_port` + `PortStream`, as the tests build
   them. One side sends a 150-byte request and waits for the other's
   150-byte answer; the other side loops receive -> send. Each frame is
   ACKed by the link layer (ecr-7e1 also opens each with ENQ/ACK). PTYs
   ignore the baud rate, so these are the link layer's own costs (threads,
   event loop, state machine), not a serial line's; beside them is the time
   the same exchange would take on a real line at the profile's baud
   (bits per byte: 1 start + bytesize + parity bit if any + stop bits).

3. A whole purchase, terminal -> serial -> host (stx-etx-lrc, cup, terminal
   10000001, `SerialHostServer` on a fresh journal) against the same over
   TCP (`HostServer` + `TcpLink`): one sign-on, then `--purchases` sales,
   each timed from the terminal's call to its result. Both run in one
   process and event loop, so each includes the terminal's own SQLite state
   and the host's journal commit. Fixtures are the built-in ones with the
   card's account made rich and no scenario rules.

Figures, not a verdict: the exit status says only whether the run worked
(every frame decoded as sent, every answer right, every purchase approved
and journaled). Progress goes to stderr; the report (or one JSON object) to
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from possim.acquirer.core import build_host
from possim.acquirer.serial_server import SerialHostServer
from possim.acquirer.server import HostServer
from possim.terminal.cards import resolve_card
from possim.terminal.link import TcpLink
from possim.terminal.profile import load_profile
from possim.terminal.serial_link import SerialLink
from possim.terminal.state import TerminalState
from possim.terminal.terminal import Terminal
from possim.wire.framing import Framing
from possim.wire.link_profile import LinkProfile, builtin_link_profiles, load_link_profile
from possim.wire.pty_pair import PtyPair
from possim.wire.serial_frames import Frame, FrameReader, encode_frame
from possim.wire.serial_port import PortStream, open_port
from possim.wire.serial_session import SerialSession, iso_inner_length

from bench_fixtures import rich_fixtures

DECODE_PAYLOAD = 200
CHUNK = 4096
ROUNDS = 3
"""Rounds of frame coding; the best counts."""
MESSAGE = 150
"""Bytes of each request and answer in the round trips."""
WARMUP = 10
PURCHASE_LINK = "stx-etx-lrc"
DIALECT = "cup"
TID = "10000001"
CARD = "approve"
INNER = Framing(length="binary2")
"""The ISO length header stx-etx-lrc payloads carry: 2 bytes, big-endian binary."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def payload(profile: LinkProfile, size: int, rng: random.Random) -> bytes:
    """`size` bytes the profile can carry: ASCII on a 7-bit line, else random; with the ISO header when it needs one."""
    if profile.bytesize == 7:
        return bytes(rng.randrange(0x20, 0x7F) for _ in range(size))
    if profile.iso_length_header:
        return (size - 2).to_bytes(2, "big") + rng.randbytes(size - 2)
    return rng.randbytes(size)


def inner_for(profile: LinkProfile):
    return iso_inner_length(INNER) if profile.iso_length_header else None


def line_bits_per_byte(profile: LinkProfile) -> float:
    return 1 + profile.bytesize + (0 if profile.parity == "N" else 1) + profile.stopbits


# ---- 1. frame coding ----


@dataclass
class CodingResult:
    profile: str
    frames: int
    frame_bytes: int
    """Bytes of one framed 200-byte payload on the line."""
    decode_frames_per_s: float
    decode_mb_per_s: float
    encode_frames_per_s: float
    encode_mb_per_s: float
    decoded_wrong: int


def time_coding(name: str, count: int) -> CodingResult:
    profile = load_link_profile(name)
    rng = random.Random(name)
    payloads = [payload(profile, DECODE_PAYLOAD, rng) for _ in range(count)]
    stream = b"".join(encode_frame(profile, p) for p in payloads)
    chunks = [stream[i:i + CHUNK] for i in range(0, len(stream), CHUNK)]
    inner = inner_for(profile)
    log(f"frame coding, {name}: {count:,} frames of {DECODE_PAYLOAD} bytes ({len(stream):,} bytes), best of {ROUNDS}")
    best_decode = best_encode = float("inf")
    wrong = 0
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for p in payloads:
                encode_frame(profile, p)
            best_encode = min(best_encode, time.perf_counter() - start)
            reader = FrameReader(profile, inner)
            events = []
            start = time.perf_counter()
            for chunk in chunks:
                events += reader.feed(chunk)
            best_decode = min(best_decode, time.perf_counter() - start)
            got = [e.data for e in events if isinstance(e, Frame)]
            wrong = max(wrong, len(events) - len(got) + sum(a != b for a, b in zip(got, payloads))
                        + abs(len(got) - len(payloads)))
    finally:
        if collecting:
            gc.enable()
    mb = len(stream) / 1e6
    return CodingResult(name, count, len(stream) // count, count / best_decode, mb / best_decode,
                        count / best_encode, mb / best_encode, wrong)


# ---- 2. round trips over a PTY pair ----


@dataclass
class RoundTripResult:
    profile: str
    round_trips: int
    per_s: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    wrong: int
    frame_bytes: int
    """Bytes of one framed 150-byte message on the line."""
    baud: int
    line: str
    wire_frame_ms: float
    """One framed 150-byte message at the profile's baud."""
    wire_round_trip_ms: float
    """Request and answer frames with their ACKs (and ENQ/ACK when the profile opens with ENQ) at that baud."""


async def session_on(path: str, profile: LinkProfile) -> SerialSession:
    stream = PortStream(open_port(path, profile), path)
    await stream.start()
    session = SerialSession(stream, profile, path, inner_for(profile))
    await session.start()
    return session


async def round_trips(name: str, count: int) -> RoundTripResult:
    profile = load_link_profile(name)
    rng = random.Random(f"rt {name}")
    request, answer = payload(profile, MESSAGE, rng), payload(profile, MESSAGE, rng)
    log(f"round trips over a PTY pair, {name}: {WARMUP} warm-up + {count:,}")
    wrong = 0
    latencies: list[float] = []
    with PtyPair() as pair:
        assert pair.paths is not None
        a, b = pair.paths
        client, server = await session_on(a, profile), await session_on(b, profile)

        async def answering() -> None:
            # A fixed number of answers, then it returns: the benchmark ends when the last answer is acknowledged.
            nonlocal wrong
            for _ in range(WARMUP + count):
                got = await server.receive(profile.response_timeout)
                wrong += got != request
                await server.send(answer)

        responder = asyncio.create_task(answering())
        try:
            for _ in range(WARMUP):
                await client.send(request)
                wrong += await client.receive(profile.response_timeout) != answer
            clock = time.perf_counter
            start = clock()
            for _ in range(count):
                before = clock()
                await client.send(request)
                got = await client.receive(profile.response_timeout)
                latencies.append(clock() - before)
                wrong += got != answer
            elapsed = clock() - start
            await responder
        finally:
            if not responder.done():
                responder.cancel()
                try:
                    await responder
                except asyncio.CancelledError:
                    pass
            await client.close()
            await server.close()
    ordered = sorted(latencies)
    frame_bytes = len(encode_frame(profile, request))
    bits = line_bits_per_byte(profile)
    wire_frame = frame_bytes * bits / profile.baud
    per_frame_extra = 1 + (2 if profile.use_enq else 0)  # ACK, and ENQ + its ACK
    wire_round_trip = 2 * (frame_bytes + per_frame_extra) * bits / profile.baud
    return RoundTripResult(
        profile=name, round_trips=count, per_s=count / elapsed, mean_ms=1e3 * sum(latencies) / count,
        p50_ms=1e3 * percentile(ordered, 0.50), p99_ms=1e3 * percentile(ordered, 0.99), max_ms=1e3 * ordered[-1],
        wrong=wrong, frame_bytes=frame_bytes, baud=profile.baud,
        line=f"{profile.bytesize}{profile.parity}{profile.stopbits:g}", wire_frame_ms=1e3 * wire_frame,
        wire_round_trip_ms=1e3 * wire_round_trip,
    )


# ---- 3. a whole purchase, serial vs TCP ----


@dataclass
class PurchaseResult:
    link: str
    purchases: int
    per_s: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    not_approved: int
    journaled: int


async def purchases(terminal: Terminal, label: str, count: int) -> tuple[list[float], float, int]:
    if not (await terminal.sign_on()).approved:
        raise RuntimeError(f"{label}: sign-on not approved")
    card = resolve_card(CARD)
    latencies: list[float] = []
    refused = 0
    clock = time.perf_counter
    start = clock()
    for i in range(count):
        before = clock()
        result = await terminal.purchase(1000 + i, card)
        latencies.append(clock() - before)
        refused += not result.approved
    return latencies, clock() - start, refused


def purchase_result(label: str, latencies: list[float], elapsed: float, refused: int, journaled: int) -> PurchaseResult:
    ordered = sorted(latencies)
    count = len(latencies)
    return PurchaseResult(label, count, count / elapsed, 1e3 * sum(latencies) / count,
                          1e3 * percentile(ordered, 0.50), 1e3 * percentile(ordered, 0.99), 1e3 * ordered[-1],
                          refused, journaled)


def approved_rows(core) -> int:
    return sum(row.status == "approved" and row.terminal_id == TID for row in core.journal.transactions())


async def purchase_over_serial(folder: Path, fixtures: Path, count: int) -> PurchaseResult:
    profile = load_link_profile(PURCHASE_LINK)
    log(f"purchases terminal -> serial ({PURCHASE_LINK}) -> host: sign-on + {count:,}")
    core = build_host(DIALECT, folder / "journal-serial.sqlite", fixtures)
    with PtyPair() as pair:
        assert pair.paths is not None
        a, b = pair.paths
        host = SerialHostServer(core, a, profile)
        await host.start()
        terminal_profile = load_profile(TID, fixtures, dialect=DIALECT, timeout=5.0)
        terminal = Terminal(terminal_profile, SerialLink(b, profile, terminal_profile.framing),
                            TerminalState(TID, folder / "t-serial.sqlite"))
        try:
            latencies, elapsed, refused = await purchases(terminal, "serial", count)
            journaled = approved_rows(core)
        finally:
            await terminal.link.close()
            terminal.state.close()
            await host.stop()
            core.close()
    return purchase_result(f"serial {PURCHASE_LINK}", latencies, elapsed, refused, journaled)


async def purchase_over_tcp(folder: Path, fixtures: Path, count: int) -> PurchaseResult:
    log(f"purchases terminal -> TCP 127.0.0.1 -> host: sign-on + {count:,}")
    core = build_host(DIALECT, folder / "journal-tcp.sqlite", fixtures)
    server = HostServer(core)
    host, port = await server.start("127.0.0.1", 0)
    terminal_profile = load_profile(TID, fixtures, dialect=DIALECT, host=f"{host}:{port}", timeout=5.0)
    terminal = Terminal(terminal_profile, TcpLink(host, port, terminal_profile.framing),
                        TerminalState(TID, folder / "t-tcp.sqlite"))
    try:
        latencies, elapsed, refused = await purchases(terminal, "tcp", count)
        journaled = approved_rows(core)
    finally:
        await terminal.link.close()
        terminal.state.close()
        await server.stop()
        core.close()
    return purchase_result("tcp", latencies, elapsed, refused, journaled)


# ---- report ----


def report(coding: list[CodingResult], trips: list[RoundTripResult], bought: list[PurchaseResult],
           ratios: dict[str, float]) -> str:
    lines = [f"possim serial link — {os.cpu_count()} cores, Python {sys.version.split()[0]}", "",
             f"frame coding ({DECODE_PAYLOAD}-byte payloads, decoded from {CHUNK}-byte chunks; best of {ROUNDS}; MB/s of framed bytes)",
             f"  {'profile':<16} {'frame B':>7} {'decode/s':>10} {'dec MB/s':>9} {'encode/s':>10} {'enc MB/s':>9}  wrong"]
    for c in coding:
        lines.append(f"  {c.profile:<16} {c.frame_bytes:>7} {c.decode_frames_per_s:>10,.0f} {c.decode_mb_per_s:>9.2f}"
                     f" {c.encode_frames_per_s:>10,.0f} {c.encode_mb_per_s:>9.2f}  {c.decoded_wrong}")
    lines += ["", f"round trips over a PTY pair ({MESSAGE}-byte request, {MESSAGE}-byte answer, each frame ACKed;"
                  " PTYs ignore baud)",
              f"  {'profile':<16} {'trips':>6} {'per s':>8} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  wrong"]
    for r in trips:
        lines.append(f"  {r.profile:<16} {r.round_trips:>6,} {r.per_s:>8,.0f} {r.mean_ms:>8.2f} {r.p50_ms:>8.2f}"
                     f" {r.p99_ms:>8.2f} {r.max_ms:>8.2f}  {r.wrong}")
    lines += ["", f"the same on a real line at each profile's baud (one {MESSAGE}-byte frame; round trip = both frames"
                  " + ACKs, + ENQ/ACK where used)",
              f"  {'profile':<16} {'line':>5} {'baud':>7} {'frame B':>7} {'frame ms':>9} {'trip ms':>8} {'trips/s':>8}"
              f"  {'line trip / PTY p50':>19}"]
    for r in trips:
        lines.append(f"  {r.profile:<16} {r.line:>5} {r.baud:>7,} {r.frame_bytes:>7} {r.wire_frame_ms:>9.2f}"
                     f" {r.wire_round_trip_ms:>8.2f} {1e3 / r.wire_round_trip_ms:>8.1f}"
                     f"  {r.wire_round_trip_ms / r.p50_ms:>18.1f}×")
    lines += ["", f"purchases terminal -> host ({DIALECT}, terminal {TID}, one sign-on first)",
              f"  {'link':<20} {'count':>6} {'per s':>8} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
              "  not approved  journaled"]
    for p in bought:
        lines.append(f"  {p.link:<20} {p.purchases:>6,} {p.per_s:>8,.1f} {p.mean_ms:>8.2f} {p.p50_ms:>8.2f}"
                     f" {p.p99_ms:>8.2f} {p.max_ms:>8.2f}  {p.not_approved:>12}  {p.journaled:>9}")
    lines += ["", "ratios"]
    for name, value in ratios.items():
        lines.append(f"  {name:<24} {value:6.2f}×")
    lines.append("")
    serial, tcp = bought
    line = next(r for r in trips if r.profile == PURCHASE_LINK)
    lines.append(
        f"summary: a purchase over serial ({PURCHASE_LINK}) p50 {serial.p50_ms:.2f} ms vs {tcp.p50_ms:.2f} ms over TCP"
        f" (×{ratios['serial/tcp p50']:.2f}); on a real {line.baud:,}-baud line that profile needs"
        f" {line.wire_round_trip_ms:.0f} ms for one {MESSAGE}-byte round trip, the PTY {line.p50_ms:.2f} ms (p50)"
    )
    return "\n".join(lines)


async def measure_links(names: list[str], round_trip_count: int, purchase_count: int, folder: Path
                        ) -> tuple[list[RoundTripResult], list[PurchaseResult]]:
    trips = [await round_trips(name, round_trip_count) for name in names]
    fixtures = rich_fixtures(folder)
    bought = [await purchase_over_serial(folder, fixtures, purchase_count),
              await purchase_over_tcp(folder, fixtures, purchase_count)]
    return trips, bought


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=5000, help="frames per coding round and profile (default 5000)")
    parser.add_argument("--round-trips", type=int, default=300, help="timed round trips per profile (default 300)")
    parser.add_argument("--purchases", type=int, default=100, help="timed purchases per link (default 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    for option in ("frames", "round_trips", "purchases"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    names = builtin_link_profiles()
    coding = [time_coding(name, args.frames) for name in names]
    with tempfile.TemporaryDirectory(prefix="possim-serial-") as folder:
        trips, bought = asyncio.run(measure_links(names, args.round_trips, args.purchases, Path(folder)))
    serial, tcp = bought
    ratios = {"serial/tcp p50": serial.p50_ms / tcp.p50_ms, "serial/tcp p99": serial.p99_ms / tcp.p99_ms,
              "serial/tcp mean": serial.mean_ms / tcp.mean_ms, "tcp/serial purchases/s": tcp.per_s / serial.per_s}
    if args.json:
        print(json.dumps({
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "coding": [asdict(c) for c in coding],
            "round_trips": [asdict(r) for r in trips],
            "purchases": [asdict(p) for p in bought],
            "ratios": ratios,
        }, indent=2))
    else:
        print(report(coding, trips, bought, ratios))
    worked = (all(c.decoded_wrong == 0 for c in coding) and all(r.wrong == 0 for r in trips)
              and all(p.not_approved == 0 and p.journaled == p.purchases for p in bought))
    return 0 if worked else 1


if __name__ == "__main__":
    sys.exit(main())
