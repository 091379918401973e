"""What a government fee payment costs beside a card sale: the finance system's two round trips.

    python benchmarks/fee_payments.py [--count N] [--terminals K] [--json]

A finance bureau (its own thread, its own SQLite file) holds N fresh
notices; a host on loopback is connected to it; real terminals talk to the
host over TCP. Timed, one terminal at a time: N card sales, N notice
queries (fee_query: one finance round trip), N fee payments by card
(fee_payment: notice query, authorization, confirmation — two finance round
trips and one more journal commit). Then K terminals pay fees at once, to
show the host serving them while each waits for the finance system.

Reported: mean, p50 and p99 milliseconds per request and the ratio to a
card sale; fee payments per second with K terminals. Checked, not assumed:
every notice paid ends PAID at the finance system with exactly one
confirmation. Figures, not a verdict; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from possim.acquirer.core import build_host
from possim.acquirer.fee_desk import finance_key
from possim.acquirer.finance.bureau import open_bureau
from possim.acquirer.finance.notices import FeeItem, Notice, make_pay_code
from possim.acquirer.finance.server import FinanceThread
from possim.acquirer.server import HostServer
from possim.terminal import TcpLink, Terminal, TerminalState, load_profile, resolve_card

from bench_fixtures import rich_fixtures

AMOUNT = 1250
TIDS = ("10000001", "10000002", "10000003")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"mean_ms": statistics.fmean(ordered) * 1000, "p50_ms": ordered[len(ordered) // 2] * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000}


async def timed(action) -> float:
    started = time.perf_counter()
    result = await action()
    if result.response_code != "00":
        raise SystemExit(f"{result.operation} answered {result.response_code}: {result.message}")
    return time.perf_counter() - started


async def run(folder: Path, count: int, parallel: int) -> dict:
    fixtures = rich_fixtures(folder)
    bureau = open_bureau(folder / "finance.sqlite", fixtures, load_samples=False)
    rng = random.Random(8)
    codes = [make_pay_code("310101", rng, bureau.store.lengths) for _ in range(count * (1 + parallel))]
    for code in codes:
        bureau.store.add(Notice(code, "310101001", "Bench agency", "BENCH", (FeeItem("103050101", "fine", AMOUNT),), AMOUNT,
                                "156", "2030-12-31"))
    finance = FinanceThread(bureau)
    core = build_host("cup", folder / "journal.sqlite", fixtures)
    core.fees.connect(finance.start("127.0.0.1", 0), finance_key(fixtures))
    server = HostServer(core)
    address = await server.start("127.0.0.1", 0)
    terminals = []
    for tid in TIDS[:max(1, parallel)]:
        profile = load_profile(tid, fixtures, dialect="cup", host=f"{address[0]}:{address[1]}", timeout=10)
        terminal = Terminal(profile, TcpLink(*address, profile.framing), TerminalState(tid, folder / f"{tid}.sqlite"))
        await terminal.sign_on()
        terminals.append(terminal)
    card = resolve_card("approve", fixtures)
    one = terminals[0]
    try:
        log(f"{count} card sales ...")
        sales = [await timed(lambda: one.purchase(AMOUNT, card)) for _ in range(count)]
        log(f"{count} notice queries ...")
        queries = [await timed(lambda code=code: one.fee_query(code)) for code in codes[:count]]
        log(f"{count} fee payments ...")
        fees = [await timed(lambda code=code: one.fee_payment(code, AMOUNT, card)) for code in codes[:count]]
        log(f"{len(terminals)} terminals paying {count} fees each at once ...")
        rest = codes[count:]
        started = time.perf_counter()

        async def pay_all(terminal: Terminal, mine: list[str]) -> None:
            for code in mine:
                await timed(lambda code=code: terminal.fee_payment(code, AMOUNT, card))

        await asyncio.gather(*(pay_all(t, rest[i * count:(i + 1) * count]) for i, t in enumerate(terminals)))
        together = time.perf_counter() - started
    finally:
        for terminal in terminals:
            await terminal.link.close()
            terminal.state.close()
        await server.stop()
        core.close()
        finance.stop()
    paid = [bureau.store.get(code) for code in codes[:count] + rest[:count * len(terminals)]]
    confirmations = sum(1 for n in paid if n is not None and n.status == "paid")
    bureau.store.close()
    sale = figures(sales)
    return {
        "count": count, "terminals": len(terminals), "card_sale": sale, "fee_query": figures(queries),
        "fee_payment": figures(fees),
        "fee_payment_ratio_to_sale": statistics.fmean(fees) / statistics.fmean(sales),
        "fee_query_ratio_to_sale": statistics.fmean(queries) / statistics.fmean(sales),
        "parallel_fee_payments_per_s": count * len(terminals) / together,
        "paid_at_finance": confirmations, "expected_paid": len(paid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--terminals", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        result = asyncio.run(run(Path(scratch), args.count, args.terminals))
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("card_sale", "fee_query", "fee_payment"):
            f = result[name]
            print(f"{name:<12} mean {f['mean_ms']:6.2f} ms  p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms")
        print(f"fee payment / card sale: {result['fee_payment_ratio_to_sale']:.2f}×;"
              f" notice query / card sale: {result['fee_query_ratio_to_sale']:.2f}×")
        print(f"{result['terminals']} terminals at once: {result['parallel_fee_payments_per_s']:.0f} fee payments/s")
        print(f"paid at the finance system: {result['paid_at_finance']} of {result['expected_paid']}")
    sys.exit(0 if result["paid_at_finance"] == result["expected_paid"] else 1)


if __name__ == "__main__":
    main()
