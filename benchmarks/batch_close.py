"""What each transaction kind and a batch close cost the host, and how batch close scales.

    python benchmarks/batch_close.py [--dialect cup|iso87ascii|iso87binary] [--sizes N,N,...] [--json]

The host core is driven directly with encoded requests (`HostCore.handle`:
bytes in, bytes out, its journal a real SQLite file in a temporary folder),
so the figures are the host's own work per message — decoding, pipeline,
journal commit, encoding — without sockets. For each size N one terminal
signs on and runs a batch of N transactions mixing the kinds as a
government-fee counter would (mostly sales, some pre-auths completed, voids
and partial refunds), then closes the batch: the 0500 is answered from the
journal (the host recomputes the totals from the batch's rows), and for cup
the upload follows (0320 of 8 records each, then the end of upload).

Reported: messages/s per kind (mean µs per message), the 0500's latency
against N, and the upload's cost per 0320. Default sizes: 100, 500 and 900
for cup (its field 48 counts are 3 digits: a batch holds at most 999 debits),
100, 1000 and 5000 for iso87. Figures, not a verdict: the exit
status says only whether the run worked (every batch closed in balance).
Progress goes to stderr; the report (or one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from possim.acquirer.core import HostCore, build_host
from possim.fixtures import load_fixture
from possim.hsm_mock.key_download import unpack
from possim.hsm_mock.message_mac import MessageMac
from possim.wire.batch_totals import BatchTotals, Totals, UploadRecord, encode_cup48, end_of_upload_48, pack_cup_upload
from possim.wire.batch_totals import decode_cup48, set_iso_totals
from possim.wire.clock import SteppingClock
from possim.wire.codec import Codec
from possim.wire.dialect import Dialect, load_dialect
from possim.wire.framing import split_envelope
from possim.wire.message import Message
from possim.wire.trace import mask_pan

from bench_fixtures import rich_fixtures

TID, MID = "10000001", "898310048160001"
START = datetime(2026, 6, 15, 9, 0, 0)
CARD = next(c for c in load_fixture("cards.yaml")["cards"] if c["name"] == "approve")
TMK = bytes.fromhex(next(t["tmk"] for t in load_fixture("terminals.yaml")["terminals"] if t["tid"] == TID))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Counter:
    """A terminal reduced to what the benchmark needs: STANs and the batch's totals and records."""

    def __init__(self, core: HostCore, dialect: Dialect):
        self.core, self.dialect, self.codec = core, dialect, Codec(dialect)
        self.stan = 0
        self.totals = Totals()
        self.records: list[UploadRecord] = []
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.mac = MessageMac(self.codec)
        self.mac_key: bytes | None = None
        """The working MAC key of the sign-on: every request after it is MACed, as a real terminal's."""

    def send(self, label: str, message: Message) -> Message:
        self.stan += 1
        message[11] = f"{self.stan:06d}"
        message[41], message[42] = TID, MID
        if self.dialect.convention("transmission_datetime"):
            message[7] = "0615090000"
        body = self.mac.sign(message, self.mac_key) if self.mac_key else self.codec.encode(message)
        payload = _payload(self.dialect, body)
        started = time.perf_counter()
        reply = self.core.handle(payload, "bench")
        self.timings[label].append(time.perf_counter() - started)
        assert reply.data is not None, f"{label}: no answer"
        body = split_envelope(self.dialect.framing, reply.data[self.dialect.framing.length_size:])[1]
        answer = self.codec.decode(body)
        keys = self.dialect.get_role(answer, "working_keys")
        if answer.mti == "0810" and keys:
            self.mac_key = unpack(TMK, bytes.fromhex(keys))[1].mac_key
        return answer

    def transaction(self, kind: str, amount: int, rrn: str | None = None, auth: str | None = None) -> Message:
        spec = self.dialect.transaction(kind)
        message = Message(spec.mti, {3: spec.processing_code, 4: f"{amount:012d}", 12: "090000", 13: "0615",
                                     22: "021", 25: spec.condition, 35: f"{CARD['pan']}D{CARD['expiry']}10100000",
                                     49: "156"})
        if spec.type_code:
            self.dialect.set_role(message, "transaction_type", spec.type_code)
            self.dialect.set_role(message, "batch_number", "000001")
            self.dialect.set_role(message, "network_code", "000")
        if rrn:
            message[37] = rrn
        if auth:
            message[38] = auth
        answer = self.send(kind, message)
        assert answer[39] == "00", f"{kind}: {answer[39]}"
        side = spec.totals
        if side != "none":
            self.totals = self.totals.add(side, amount)
            self.records.append(UploadRecord("00", message[11], mask_pan(CARD["pan"]), amount))
        return answer


def _payload(dialect: Dialect, body: bytes) -> bytes:
    framing = dialect.framing
    return (framing.tpdu or b"") + framing.header + body


def run_batch(dialect_name: str, size: int, folder: Path, rng: random.Random) -> dict[str, object]:
    dialect = load_dialect(dialect_name)
    core = build_host(dialect, folder / f"journal-{dialect_name}-{size}.sqlite", rich_fixtures(folder),
                      clock=SteppingClock(START, timedelta(milliseconds=1)), rng=random.Random(1))
    try:
        pos = Counter(core, dialect)
        network = Message("0800", {})
        dialect.set_role(network, "network_code", dialect.convention("sign_on_code", "001"))
        dialect.set_role(network, "batch_number", "000001")
        assert pos.send("sign-on", network)[39] == "00"
        done = 0
        while done < size:
            roll = rng.random()
            if roll < 0.70:
                pos.transaction("sale", rng.randrange(100, 50_000))
                done += 1
            elif roll < 0.80 and done + 2 <= size:
                auth = pos.transaction("preauth", 20_000)
                pos.transaction("completion", 21_000, rrn=auth[37], auth=auth[38])
                done += 1
            elif roll < 0.90 and done + 2 <= size:
                sale = pos.transaction("sale", 3_000)
                pos.transaction("sale_void", 3_000, rrn=sale[37])
                done += 2
            elif done + 2 <= size:
                sale = pos.transaction("sale", 8_000)
                pos.transaction("refund", 2_500, rrn=sale[37])
                done += 2
        close = Message("0500", {})
        if dialect_name == "cup":
            dialect.set_role(close, "transaction_type", "00")
            dialect.set_role(close, "batch_number", "000001")
            dialect.set_role(close, "network_code", "201")
            close[48] = encode_cup48(BatchTotals(domestic=pos.totals))
        else:
            set_iso_totals(close, BatchTotals(domestic=pos.totals), "0615")
        answer = pos.send("batch close (0500)", close)
        in_balance = decode_cup48(answer[48])[1] == "1" if dialect_name == "cup" else answer[39] == "00"
        if dialect_name == "cup":
            for packed in pack_cup_upload(pos.records):
                upload = Message("0320", {48: packed})
                dialect.set_role(upload, "transaction_type", "00")
                dialect.set_role(upload, "batch_number", "000001")
                dialect.set_role(upload, "network_code", "201")
                pos.send("upload (0320, 8 records)", upload)
            end = Message("0320", {48: end_of_upload_48(len(pos.records))})
            dialect.set_role(end, "transaction_type", "00")
            dialect.set_role(end, "batch_number", "000001")
            dialect.set_role(end, "network_code", "202")
            pos.send("end of upload", end)
        return {"size": size, "in_balance": in_balance, "records": len(pos.records), "timings": pos.timings}
    finally:
        core.close()


def summarise(runs: list[dict[str, object]]) -> dict[str, object]:
    per_kind: dict[str, list[float]] = defaultdict(list)
    closes = []
    for run in runs:
        timings = run["timings"]  # type: ignore[assignment]
        for label, values in timings.items():  # type: ignore[union-attr]
            if label != "batch close (0500)":
                per_kind[label].extend(values)
        closes.append({"size": run["size"], "records": run["records"], "in_balance": run["in_balance"],
                       "close_ms": 1000 * timings["batch close (0500)"][0]})  # type: ignore[index]
    kinds = {label: {"messages": len(v), "mean_us": 1e6 * sum(v) / len(v), "per_s": len(v) / sum(v)}
             for label, v in sorted(per_kind.items())}
    return {"kinds": kinds, "closes": closes}


def report(dialect: str, summary: dict[str, object]) -> str:
    lines = [f"possim batch close — {dialect}, {os.cpu_count()} cores, Python {sys.version.split()[0]}", "",
             "per message (host core, journal committed per message)",
             f"  {'kind':<26} {'messages':>9} {'mean µs':>9} {'per s':>9}"]
    for label, k in summary["kinds"].items():  # type: ignore[union-attr]
        lines.append(f"  {label:<26} {k['messages']:>9,} {k['mean_us']:>9.0f} {k['per_s']:>9,.0f}")
    lines += ["", "batch close (0500 answered from the journal)", f"  {'transactions':>12} {'records':>8} {'ms':>8}  in balance"]
    closes = summary["closes"]  # type: ignore[assignment]
    for c in closes:  # type: ignore[union-attr]
        lines.append(f"  {c['size']:>12,} {c['records']:>8,} {c['close_ms']:>8.1f}  {c['in_balance']}")
    if len(closes) >= 2:  # type: ignore[arg-type]
        first, last = closes[0], closes[-1]  # type: ignore[index]
        ratio = (last["close_ms"] / first["close_ms"]) / (last["size"] / first["size"])
        lines += ["", f"summary: closing {last['size']:,} transactions takes {last['close_ms']:.1f} ms, "
                      f"{ratio:.2f}× linear from {first['size']:,}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", help="transactions per batch, comma-separated (default 100,500,900 for cup, else 100,1000,5000)")
    parser.add_argument("--dialect", default="cup", choices=("cup", "iso87ascii", "iso87binary"))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in (args.sizes or ("100,500,900" if args.dialect == "cup" else "100,1000,5000")).split(",")]
    except ValueError:
        parser.error("--sizes must be whole numbers separated by commas")
    if any(s < 10 for s in sizes):
        parser.error("--sizes: each batch needs at least 10 transactions")
    runs = []
    with tempfile.TemporaryDirectory(prefix="possim-batch-") as folder:
        for size in sizes:
            log(f"batch of {size:,} transactions ({args.dialect}) ...")
            runs.append(run_batch(args.dialect, size, Path(folder), random.Random(size)))
    summary = summarise(runs)
    if args.json:
        print(json.dumps({"dialect": args.dialect, "cores": os.cpu_count(), **summary}, indent=2))
    else:
        print(report(args.dialect, summary))
    return 0 if all(c["in_balance"] for c in summary["closes"]) else 1  # type: ignore[union-attr]


if __name__ == "__main__":
    sys.exit(main())
