"""What idle terminal connections cost the acquirer host in memory, and that it still answers with them open.

    python benchmarks/idle_connections.py [--connections 100,1000] [--sign-on] [--dialect cup] [--json]

For each count, a fresh `possim host run` (as in host_throughput.py: its own
process, fixtures with one terminal per connection, each with a master key)
has its resident memory read from /proc/PID/status (VmRSS) once it is
listening, then N TCP connections are opened to it and left idle — with
`--sign-on`, each first signs on and receives its working keys — and VmRSS
is read again once the host has accepted them all and settled. Then one more
terminal signs on and sends a MAC-signed purchase with all of them still
open: the run worked only if that purchase is approved and its answer's MAC
verifies. The soft limit on open files is raised (to the hard limit) when N
needs it; the host inherits it.

Figures, not a verdict: the exit status says only whether every run worked.
Progress goes to stderr; the report (or one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import iso8583

from host_throughput import Templates, fleet
from possim.lab import HostProcess, host_process
from possim.hsm_mock.key_download import unpack
from possim.hsm_mock.message_mac import MessageMac
from possim.wire.codec import Codec
from possim.wire.dialect import Dialect, load_dialect
from possim.wire.framing import FrameReader, split_envelope

DEFAULT_CONNECTIONS = "100,1000"
TARGET_CONNECTIONS = 1000
TARGET_MB = 200.0
SETTLE_S = 1.0
"""Quiet time after the last connection before memory is read, so the host has accepted and set up every one."""
SPARE_FILES = 64
"""File descriptors the generator needs besides its connections (stdio, the event loop, the host's pipe)."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def resident_kb(pid: int) -> int:
    """VmRSS of a process, in kB (/proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"process {pid} reports no VmRSS")


def open_files(pid: int) -> int:
    """How many file descriptors a process holds (/proc/PID/fd): shows the host did accept the connections."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def allow_open_files(wanted: int) -> int:
    """Raise the soft limit on open files to at least `wanted` (up to the hard limit); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


class Link:
    """One terminal's connection: plain asyncio streams, framed requests, one answer at a time."""

    def __init__(self, templates: Templates, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.templates = templates
        self.reader = reader
        self.writer = writer
        self.frames = FrameReader(templates.dialect.framing)

    @classmethod
    async def open(cls, templates: Templates, port: int) -> Link:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(templates, reader, writer)

    async def ask(self, data: bytes, timeout: float = 30.0) -> bytes:
        """Send one framed request; the answer's message body."""
        self.writer.write(data)
        await self.writer.drain()
        while True:
            chunk = await asyncio.wait_for(self.reader.read(4096), timeout)
            if not chunk:
                raise RuntimeError(f"terminal {self.templates.tid}: the host closed the connection")
            payloads = self.frames.feed(chunk)
            if payloads:
                return split_envelope(self.templates.dialect.framing, payloads[0])[1]

    async def sign_on(self, tmk: bytes) -> bytes:
        """Sign on; the clear MAC key field 62 brought (its check values are checked by `unpack`)."""
        body = await self.ask(self.templates.sign_on)
        answer = self.templates.codec.decode(body)
        if answer.get(39) != "00":
            raise RuntimeError(f"terminal {self.templates.tid}: sign-on answered {answer.get(39)}")
        block = self.templates.dialect.get_role(answer, "working_keys")
        if block is None:
            raise RuntimeError(f"terminal {self.templates.tid}: the sign-on answer carries no working keys")
        return unpack(tmk, bytes.fromhex(block))[1].mac_key

    def close(self) -> None:
        self.writer.close()


@dataclass
class IdleResult:
    dialect: str
    connections: int
    signed_on: bool
    rss_before_mb: float
    rss_after_mb: float
    kb_per_connection: float
    host_files_before: int
    host_files_after: int
    open_files_limit: int
    purchase_code: str
    purchase_mac: str
    """"verified", or why the answer's MAC did not verify."""
    purchase_ms: float
    event_loop: str

    @property
    def worked(self) -> bool:
        return self.purchase_code == "00" and self.purchase_mac == "verified"


async def hold_idle(host: HostProcess, dialect: Dialect, codec: Codec, tids: list[str], tmks: dict[str, bytes],
                    sign_on: bool) -> tuple[tuple[int, int], tuple[int, int], str, str, float]:
    """Open a connection per terminal but the last, read the host's memory, then buy on the last one."""
    idle, probe = tids[:-1], tids[-1]
    before = resident_kb(host.process.pid), open_files(host.process.pid)
    links: list[Link] = []
    try:
        for start in range(0, len(idle), 100):  # in waves: a listen backlog is not unlimited
            wave = [Templates(dialect, codec, tid, maced=True) for tid in idle[start : start + 100]]
            opened = await asyncio.gather(*(Link.open(t, host.address[1]) for t in wave))
            links.extend(opened)
            if sign_on:
                await asyncio.gather(*(link.sign_on(tmks[link.templates.tid]) for link in opened))
        await asyncio.sleep(SETTLE_S)
        after = resident_kb(host.process.pid), open_files(host.process.pid)
        log(f"  {len(links)} idle connections open{' and signed on' if sign_on else ''}; buying on one more")
        templates = Templates(dialect, codec, probe, maced=True)
        buyer = await Link.open(templates, host.address[1])
        try:
            mac_key = await buyer.sign_on(tmks[probe])
            started = time.perf_counter()
            body = await buyer.ask(templates.purchase(2, 1250, mac_key))
            elapsed_ms = (time.perf_counter() - started) * 1e3
        finally:
            buyer.close()
        doc, _ = iso8583.decode(body, dialect.spec)
        problem = MessageMac(codec).verify(body, mac_key)
        return before, after, doc.get("39", "??"), problem or "verified", elapsed_ms
    finally:
        for link in links:
            link.close()


def run_idle(dialect_name: str, connections: int, sign_on: bool, workdir: Path) -> IdleResult:
    dialect = load_dialect(dialect_name)
    codec = Codec(dialect)
    folder = workdir / f"fixtures-{connections}"
    tids, tmks = fleet(folder, connections + 1, maced=True)
    assert tmks is not None
    limit = allow_open_files(connections + SPARE_FILES)
    if limit < connections + SPARE_FILES:
        raise RuntimeError(f"{connections} connections need {connections + SPARE_FILES} open files; the hard limit is {limit}")
    log(f"{dialect_name}, {connections} idle connections: starting the host")
    with host_process(dialect_name, workdir / f"host-{connections}", fixtures_dir=folder) as host:
        time.sleep(SETTLE_S)  # the host's first moments (imports finishing, the checkpointer) are not a connection's cost
        before, after, code, mac, elapsed = asyncio.run(hold_idle(host, dialect, codec, tids, tmks, sign_on))
        event_loop = str(host.ready.get("event_loop", "asyncio"))
    return IdleResult(
        dialect=dialect_name, connections=connections, signed_on=sign_on,
        rss_before_mb=before[0] / 1024, rss_after_mb=after[0] / 1024, kb_per_connection=(after[0] - before[0]) / connections,
        host_files_before=before[1], host_files_after=after[1],
        open_files_limit=limit, purchase_code=code, purchase_mac=mac, purchase_ms=elapsed, event_loop=event_loop,
    )


def report(results: list[IdleResult]) -> str:
    lines = [f"possim host idle connections — {os.cpu_count()} cores, Python {sys.version.split()[0]}", ""]
    for r in results:
        lines += [
            f"{r.dialect}: {r.connections:,} idle connections{' (signed on)' if r.signed_on else ''},"
            f" event loop {r.event_loop}",
            f"  host resident memory  {r.rss_before_mb:.1f} MB listening, {r.rss_after_mb:.1f} MB with them open"
            f"  ({r.kb_per_connection:.1f} KB per connection)",
            f"  host open files       {r.host_files_before:,} listening, {r.host_files_after:,} with them open",
            f"  a purchase meanwhile  answered {r.purchase_code} in {r.purchase_ms:.1f} ms, answer MAC {r.purchase_mac}",
            "",
        ]
    at_target = [r for r in results if r.connections == TARGET_CONNECTIONS]
    reached = "; ".join(f"{r.rss_after_mb:.0f} MB with {r.connections:,}" for r in results)
    lines.append(f"summary: target {TARGET_CONNECTIONS:,} idle connections under {TARGET_MB:g} MB resident"
                 f" | reached: {reached}"
                 + ("" if at_target else f" (no run at {TARGET_CONNECTIONS:,})"))
    return "\n".join(lines)


def counts(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(n < 1 for n in values):
        raise ValueError(text)
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=counts, default=counts(DEFAULT_CONNECTIONS),
                        help=f"comma-separated counts of idle connections, one host each (default {DEFAULT_CONNECTIONS})")
    parser.add_argument("--sign-on", action="store_true", help="each idle terminal signs on before going quiet")
    parser.add_argument("--dialect", choices=("cup", "iso87ascii", "iso87binary"), default="cup")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="possim-idle-"))
    try:
        results = [run_idle(args.dialect, n, args.sign_on, workdir) for n in args.connections]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({
            "cores": os.cpu_count(), "python": sys.version.split()[0],
            "runs": [asdict(r) | {"worked": r.worked} for r in results],
            "targets": {"connections": TARGET_CONNECTIONS, "resident_mb": TARGET_MB},
        }, indent=2))
    else:
        print(report(results))
    return 0 if all(r.worked for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
