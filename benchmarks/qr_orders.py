"""What QR payments cost: the host's work per QR message against a card sale's, the HTTP order API over
loopback, and the QR primitives (payload codec, images, payment codes).

    python benchmarks/qr_orders.py [--dialect cup|iso87ascii|iso87binary] [--count N] [--http-count N] [--json]

1. Host core, driven directly with encoded requests (`HostCore.handle`, its journal a real SQLite file):
   per message kind — order created, order queried, order paid by the wallet (the order service, as the
   HTTP wallet entry calls it), payment code scanned and paid, refund — in µs, and as a ratio to a card
   sale on the same host.
2. The HTTP API on loopback (host in its thread, one signed client, sequential): orders created and paid
   per second, p50 and p99 latency — what one partner system sees.
3. Primitives: EMV MPM decode and encode, QR PNG render and read-back (zxing-cpp), payment code verify.

Figures, not a verdict; progress on stderr, the report (or one JSON object) on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from possim.acquirer.core import HostCore, build_host
from possim.acquirer.journal import Unit
from possim.acquirer.partners import Partners
from possim.acquirer.server import HostThread
from possim.fixtures import fixture_path, load_fixture
from possim.wire.clock import SteppingClock
from possim.wire.codec import Codec
from possim.wire.emv_qr import decode_mpm
from possim.wire.framing import FrameReader, frame, split_envelope
from possim.wire.message import Message
from possim.wire.payment_code import generate, verify
from possim.wire.qr_data import decode_qr_data, encode_qr_data
from possim.wire.qr_image import qr_png, read_qr_png
from possim.wire.signed_http import SignedClient

from bench_fixtures import rich_fixtures

TID, MID = "10000001", "898310048160001"
START = datetime(2026, 6, 15, 9, 0, 0)
CARD = next(c for c in load_fixture("cards.yaml")["cards"] if c["name"] == "approve")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bench_fixtures(folder: Path) -> Path:
    """Rich accounts and wallets, terminals without master keys (no MAC: the figures are the QR work)."""
    fixtures = rich_fixtures(folder)
    terminals = load_fixture("terminals.yaml")
    for terminal in terminals["terminals"]:
        terminal.pop("tmk", None)
        terminal.pop("dukpt", None)
        terminal.pop("track_key", None)
    (fixtures / "terminals.yaml").write_text(yaml.safe_dump(terminals))
    wallets = load_fixture("wallets.yaml")
    for account in wallets["accounts"].values():
        account["balance"] = 10**15
        account["password_above"] = 10**15
        account["frozen"] = False
    (fixtures / "wallets.yaml").write_text(yaml.safe_dump(wallets))
    (fixtures / "partners.yaml").write_text(fixture_path("partners.yaml").read_text())
    return fixtures


class Pos:
    def __init__(self, core: HostCore):
        self.core, self.dialect, self.codec = core, core.dialect, Codec(core.dialect)
        self.stan = 0

    def send(self, message: Message) -> Message:
        self.stan += 1
        message[11], message[41], message[42] = f"{self.stan:06d}", TID, MID
        message[12], message[13] = "090000", "0615"
        if self.dialect.convention("transmission_datetime"):
            message[7] = "0615090000"
        (payload,) = FrameReader(self.dialect.framing).feed(frame(self.dialect.framing, self.codec.encode(message)))
        reply = self.core.handle(payload, "bench")
        assert reply.data is not None, f"{message.mti} {message.get(3)}: no answer"
        (answer,) = FrameReader(self.dialect.framing).feed(reply.data)
        return self.codec.decode(split_envelope(self.dialect.framing, answer)[1])

    def request(self, kind: str, amount: int | None = None, **data: str) -> Message:
        spec = self.dialect.transaction(kind)
        message = Message(spec.mti, {3: spec.processing_code, 25: spec.condition, 49: "156"})
        if amount is not None:
            message[4] = f"{amount:012d}"
        if spec.type_code:
            self.dialect.set_role(message, "transaction_type", spec.type_code)
        self.dialect.set_role(message, "batch_number", "000001")
        if data:
            self.dialect.set_role(message, "qr_data", encode_qr_data(data))
        return message

    def sale(self) -> Message:
        message = self.request("sale", 100)
        message[22], message[35] = "021", f"{CARD['pan']}D{CARD['expiry']}{CARD['service_code']}00000"
        return message


def timed(samples: dict[str, list[float]], label: str, action):
    started = time.perf_counter()
    result = action()
    samples.setdefault(label, []).append(time.perf_counter() - started)
    return result


def core_costs(dialect: str, count: int, folder: Path) -> dict[str, dict[str, float]]:
    clock = SteppingClock(START, timedelta(milliseconds=1))
    core = build_host(dialect, folder / f"core-{dialect}.sqlite", bench_fixtures(folder), clock=clock, rng=random.Random(7))
    pos = Pos(core)
    sign_on = Message("0800", {11: "000000", 41: TID, 42: MID})
    if dialect == "cup":
        sign_on[60], sign_on[63] = "00000001003", "001"
    else:
        core.dialect.set_role(sign_on, "network_code", "001")
    pos.send(sign_on)
    alice = core.orders.wallets.account("alice")
    samples: dict[str, list[float]] = {}
    for i in range(count):
        timed(samples, "card sale (reference)", lambda: pos.send(pos.sale()))
        order = decode_qr_data(core.dialect.get_role(timed(samples, "qr_order: create", lambda: pos.send(pos.request("qr_order", 100))), "qr_data"))
        timed(samples, "qr_query", lambda: pos.send(pos.request("qr_query", order_no=order["order_no"])))

        def pay() -> None:
            change = core.orders.pay(payload=order["payload"], account=alice, now=clock(), merchant=core.registry.merchant)
            core.journal.record(Unit(at=clock().isoformat(), **change.unit_parts()))

        timed(samples, "wallet pays the order", pay)
        code = generate(alice.provider, alice.number, alice.secret, clock())
        scanned = timed(samples, "qr_sale: code scanned, paid", lambda: pos.send(pos.request("qr_sale", 100, payment_code=code)))
        scanned_order = decode_qr_data(core.dialect.get_role(scanned, "qr_data"))["order_no"]
        timed(samples, "qr_refund", lambda: pos.send(pos.request("qr_refund", 50, order_no=scanned_order)))
        if (i + 1) % max(1, count // 4) == 0:
            log(f"  core {dialect}: {i + 1}/{count}")
    core.close()
    reference = statistics.mean(samples["card sale (reference)"])
    return {label: {"mean_us": statistics.mean(values) * 1e6, "ratio_to_card_sale": statistics.mean(values) / reference}
            for label, values in samples.items()}


def http_costs(count: int, folder: Path) -> dict[str, float]:
    core = build_host("cup", folder / "http.sqlite", bench_fixtures(folder), rng=random.Random(9))
    partners = Partners.from_fixtures(bench_fixtures(folder))
    thread = HostThread(core, http=("127.0.0.1", 0), partners=partners)
    thread.start()
    try:
        address = thread.http_address
        assert address is not None
        partner = partners.get("cityhall-web")
        assert partner is not None
        client = SignedClient(f"http://{address[0]}:{address[1]}", partner.id, partner.key)
        alice = core.orders.wallets.account("alice")
        wallet = SignedClient(f"http://{address[0]}:{address[1]}", "wallet:alice", alice.secret)
        creates, pays = [], []
        for i in range(count):
            started = time.perf_counter()
            answer = client.post("/v1/orders", {"out_order_no": f"BENCH{i:08d}", "amount": 100})
            creates.append(time.perf_counter() - started)
            assert answer.status == 201, answer.body[:200]
            payload = answer.json()["payload"]
            started = time.perf_counter()
            paid = wallet.post("/wallet/v1/payments", {"payload": payload})
            pays.append(time.perf_counter() - started)
            assert paid.json()["status"] == "paid", paid.body[:200]
            if (i + 1) % max(1, count // 4) == 0:
                log(f"  http: {i + 1}/{count}")
    finally:
        thread.stop()
        core.close()
    return {
        "orders_created_per_s": count / sum(creates), "create_p50_ms": _percentile(creates, 50) * 1e3,
        "create_p99_ms": _percentile(creates, 99) * 1e3, "wallet_pays_per_s": count / sum(pays),
        "pay_p50_ms": _percentile(pays, 50) * 1e3, "pay_p99_ms": _percentile(pays, 99) * 1e3,
    }


def primitive_costs(rounds: int) -> dict[str, float]:
    from possim.acquirer.qr_orders import MERCHANT_ACCOUNT_GUI
    from possim.wire.emv_qr import dynamic_order_qr

    def payload() -> str:
        return dynamic_order_qr(merchant_account={"00": MERCHANT_ACCOUNT_GUI, "01": MID}, mcc="9311", currency="156",
                                amount_minor=1250, country="CN", name="CITY NON-TAX REVENUE HALL", city="HUANGPU",
                                reference="2606150000000001", terminal_label=TID)

    text = payload()
    png = qr_png(text)
    secret, at = bytes(range(20)), START
    code = generate("wechat", "100001", secret, at)
    measures = {
        "mpm_encode_us": (payload, 1e6),
        "mpm_decode_us": (lambda: decode_mpm(text), 1e6),
        "qr_png_render_ms": (lambda: qr_png(text), 1e3),
        "qr_png_read_ms": (lambda: read_qr_png(png), 1e3),
        "payment_code_verify_us": (lambda: verify(code, secret, at), 1e6),
    }
    out = {}
    for name, (action, scale) in measures.items():
        n = rounds if name.endswith("_us") else max(1, rounds // 20)
        started = time.perf_counter()
        for _ in range(n):
            action()
        out[name] = (time.perf_counter() - started) / n * scale
    assert read_qr_png(png) == text
    out["qr_png_bytes"] = len(png)
    return out


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialect", default="all", choices=["all", "cup", "iso87ascii", "iso87binary"])
    parser.add_argument("--count", type=int, default=500, help="rounds of each QR kind in the host core")
    parser.add_argument("--http-count", type=int, default=300, help="orders created and paid over HTTP")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dialects = ["cup", "iso87ascii", "iso87binary"] if args.dialect == "all" else [args.dialect]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log("primitives ...")
        report = {"primitives": primitive_costs(2000)}
        report["core"] = {}
        for dialect in dialects:
            log(f"host core, {dialect} ...")
            report["core"][dialect] = core_costs(dialect, args.count, folder)
        log("HTTP API ...")
        report["http"] = http_costs(args.http_count, folder)
    if args.json:
        print(json.dumps(report, indent=None))
        return
    p = report["primitives"]
    print("QR primitives")
    print(f"  EMV MPM encode {p['mpm_encode_us']:.0f} µs, decode {p['mpm_decode_us']:.0f} µs; "
          f"PNG render {p['qr_png_render_ms']:.1f} ms ({p['qr_png_bytes']} bytes), read back {p['qr_png_read_ms']:.1f} ms; "
          f"payment code verify {p['payment_code_verify_us']:.0f} µs")
    for dialect, kinds in report["core"].items():
        print(f"host core, {dialect} (µs per message, × a card sale)")
        for label, figures in kinds.items():
            print(f"  {label:<30} {figures['mean_us']:8.0f} µs  {figures['ratio_to_card_sale']:5.2f}×")
    h = report["http"]
    print("HTTP API on loopback, one partner, sequential")
    print(f"  create order: {h['orders_created_per_s']:.0f}/s, p50 {h['create_p50_ms']:.1f} ms, p99 {h['create_p99_ms']:.1f} ms"
          f" (each answer carries its PNG)")
    print(f"  wallet pays:  {h['wallet_pays_per_s']:.0f}/s, p50 {h['pay_p50_ms']:.1f} ms, p99 {h['pay_p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
