"""What online PIN verification costs the host, with the HSM in process and behind TCP.

    python benchmarks/pin_security.py [--iterations 2000] [--json]

The PIN path is exactly what the host runs for a purchase with a PIN:
`acquirer.pin_check.PinVerifier.check`, i.e. CA (PIN block from the
terminal's TPK to the issuer's ZPK) then EC (Visa PVV verify), and for a
DUKPT terminal G0 then EC. It is timed once against `LocalHsm` (the HSM
object in this process) and once against `TcpHsm` talking to an `HsmThread`
on 127.0.0.1, the setup the tests use: the HSM's event loop runs in a thread
of this process, so the TCP figure includes its share of the GIL and both
ends' socket work on the same cores. Every call is timed on its own
(latency percentiles) and the whole loop gives calls/s.

The raw primitives under those commands (format 0 PIN block, retail MAC over
100 bytes, UnionPay ECB MAC, DUKPT key derivation, Visa PVV) are timed as
best of a few rounds with the garbage collector waiting, as in timeit, so a
noisy moment does not count against them.

Inputs are the built-in fixtures: card "approve" (its PIN, PVKI and PVV),
its issuer's PIN keys, terminal 10000003's DUKPT BDK and KSN. Before timing,
each path must verify the right PIN and call a wrong one wrong.

Figures, not a verdict: the exit status says only whether the run worked
(every timed check said "verified"). Progress goes to stderr; the report (or
one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

from possim.acquirer.issuer import Card, Issuer, IssuerStub
from possim.acquirer.pin_check import VERIFIED, WRONG, PinVerifier
from possim.fixtures import load_fixture
from possim.hsm_mock import dukpt_tdes, mac, pinblock, pinverify
from possim.hsm_mock.client import HsmClient, LocalHsm, TcpHsm
from possim.hsm_mock.device import Hsm
from possim.hsm_mock.key_download import odd_parity
from possim.hsm_mock.lmk import TPK, VariantLmk
from possim.hsm_mock.server import HsmThread

CARD = "approve"
TID = "10000001"
"""A terminal that signs on for a TPK (no DUKPT)."""
DUKPT_TID = "10000003"
WRONG_PIN = "9999"
WARMUP = 50
"""Untimed PIN checks before each timed run: connect, caches, first-call costs."""
PRIMITIVE_ROUNDS = 5
MAC_MESSAGE = bytes(range(100))
"""The 100-byte message the MAC primitives run over (about one ISO 8583 purchase)."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- the inputs: fixtures, keys under the LMK, PIN blocks ----


@dataclass(frozen=True)
class Inputs:
    card: Card
    issuer: Issuer
    pin: str
    tpk_under_lmk: str
    pin_block: str
    wrong_block: str
    bdk: bytes
    ksn: str
    dukpt_block: str
    dukpt_wrong_block: str


def inputs(lmk: VariantLmk, stub: IssuerStub) -> Inputs:
    raw_card = next(c for c in load_fixture("cards.yaml")["cards"] if c["name"] == CARD)
    pan, pin = str(raw_card["pan"]), str(raw_card["pin"])
    card, issuer = stub.card(pan), stub.issuer_for(pan)
    if card is None or issuer is None or issuer.pin is None:
        raise RuntimeError(f"fixtures: card {CARD} has no card record or no PIN-verifying issuer")
    tpk = odd_parity(os.urandom(16))
    terminal = next(t for t in load_fixture("terminals.yaml")["terminals"] if t["tid"] == DUKPT_TID)
    bdk = bytes.fromhex(terminal["dukpt"]["bdk"])
    ksn = dukpt_tdes.next_ksn(bytes.fromhex(terminal["dukpt"]["ksn"]))  # the loaded KSN names the IPEK; use the first transaction
    pin_key = dukpt_tdes.pin_key(dukpt_tdes.transaction_key(dukpt_tdes.initial_key(bdk, ksn), ksn))
    return Inputs(
        card=card,
        issuer=issuer,
        pin=pin,
        tpk_under_lmk=lmk.encrypt(tpk, TPK).hex().upper(),
        pin_block=pinblock.encipher(tpk, 0, pin, pan).hex().upper(),
        wrong_block=pinblock.encipher(tpk, 0, WRONG_PIN, pan).hex().upper(),
        bdk=bdk,
        ksn=ksn.hex().upper(),
        dukpt_block=pinblock.encipher(pin_key, 0, pin, pan).hex().upper(),
        dukpt_wrong_block=pinblock.encipher(pin_key, 0, WRONG_PIN, pan).hex().upper(),
    )


# ---- the PIN path through PinVerifier ----


@dataclass
class PathResult:
    path: str
    """CA+EC (TPK) or G0+EC (DUKPT)."""
    hsm: str
    """in-process or tcp."""
    iterations: int
    calls_per_s: float
    mean_us: float
    p50_us: float
    p99_us: float
    max_us: float
    not_verified: int


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def time_path(name: str, where: str, check: Callable[[str], str], good: str, wrong: str, iterations: int) -> PathResult:
    """`check(block)` returns the outcome; it must verify `good` and call `wrong` wrong before timing."""
    for block, expected in ((good, VERIFIED), (wrong, WRONG)):
        outcome = check(block)
        if outcome != expected:
            raise RuntimeError(f"{name} via {where}: expected {expected}, got {outcome}")
    for _ in range(WARMUP):
        check(good)
    latencies: list[float] = []
    failed = 0
    clock = time.perf_counter
    start = clock()
    for _ in range(iterations):
        before = clock()
        outcome = check(good)
        latencies.append(clock() - before)
        failed += outcome != VERIFIED
    elapsed = clock() - start
    ordered = sorted(latencies)
    return PathResult(
        path=name,
        hsm=where,
        iterations=iterations,
        calls_per_s=iterations / elapsed,
        mean_us=sum(latencies) / iterations * 1e6,
        p50_us=percentile(ordered, 0.50) * 1e6,
        p99_us=percentile(ordered, 0.99) * 1e6,
        max_us=ordered[-1] * 1e6,
        not_verified=failed,
    )


def time_paths(client: HsmClient, where: str, lmk: VariantLmk, stub: IssuerStub, given: Inputs, iterations: int) -> list[PathResult]:
    verifier = PinVerifier(client, lmk, stub.issuers(), {DUKPT_TID: given.bdk})
    pan = given.card.pan

    def tpk_check(block: str) -> str:
        return verifier.check(tid=TID, tpk=given.tpk_under_lmk, ksn=None, pin_block=block, pan=pan,
                              issuer=given.issuer, card=given.card).outcome

    def dukpt_check(block: str) -> str:
        return verifier.check(tid=DUKPT_TID, tpk=None, ksn=given.ksn, pin_block=block, pan=pan,
                              issuer=given.issuer, card=given.card).outcome

    log(f"PIN path, HSM {where}: {iterations:,} × CA+EC, then {iterations:,} × G0+EC")
    return [
        time_path("CA+EC", where, tpk_check, given.pin_block, given.wrong_block, iterations),
        time_path("G0+EC", where, dukpt_check, given.dukpt_block, given.dukpt_wrong_block, iterations),
    ]


# ---- raw primitives ----


@dataclass
class PrimitiveResult:
    name: str
    per_s: float
    us: float


def time_primitives(given: Inputs, iterations: int) -> list[PrimitiveResult]:
    """Each primitive `iterations` times per round; the best of the rounds counts."""
    assert given.issuer.pin is not None
    pan, pin, pvk = given.card.pan, given.pin, given.issuer.pin.pvk
    if pinverify.visa_pvv(pvk, pan, given.card.pvki or "", pin) != given.card.pvv:
        raise RuntimeError(f"visa_pvv does not reproduce the PVV cards.yaml stores for card {CARD}")
    key = odd_parity(os.urandom(16))
    ksn = bytes.fromhex(given.ksn)
    work: dict[str, Callable[[], object]] = {
        "pinblock.encipher (format 0)": lambda: pinblock.encipher(key, 0, pin, pan),
        f"mac.retail_mac ({len(MAC_MESSAGE)} bytes)": lambda: mac.retail_mac(key, MAC_MESSAGE),
        f"mac.cup_ecb_mac ({len(MAC_MESSAGE)} bytes)": lambda: mac.cup_ecb_mac(key, MAC_MESSAGE),
        "dukpt_tdes.derive_keys": lambda: dukpt_tdes.derive_keys(given.bdk, ksn),
        "pinverify.visa_pvv": lambda: pinverify.visa_pvv(pvk, pan, given.card.pvki or "", pin),
    }
    log(f"primitives: best of {PRIMITIVE_ROUNDS} rounds of {iterations:,} calls each")
    best = {name: float("inf") for name in work}
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _ in range(PRIMITIVE_ROUNDS):
            for name, call in work.items():
                start = time.perf_counter()
                for _ in range(iterations):
                    call()
                best[name] = min(best[name], (time.perf_counter() - start) / iterations)
    finally:
        if collecting:
            gc.enable()
    return [PrimitiveResult(name, 1 / seconds, seconds * 1e6) for name, seconds in best.items()]


# ---- ratios and report ----


def ratios(paths: list[PathResult], primitives: list[PrimitiveResult]) -> dict[str, float]:
    by = {(p.path, p.hsm): p for p in paths}
    retail = next(p for p in primitives if p.name.startswith("mac.retail_mac")).us
    result: dict[str, float] = {}
    for name in ("CA+EC", "G0+EC"):
        local, tcp = by[(name, "in-process")], by[(name, "tcp")]
        result[f"{name} tcp/in-process p50"] = tcp.p50_us / local.p50_us
        result[f"{name} tcp/in-process p99"] = tcp.p99_us / local.p99_us
        result[f"{name} tcp/in-process mean"] = tcp.mean_us / local.mean_us
        result[f"{name} in-process mean / one retail MAC"] = local.mean_us / retail
        result[f"{name} tcp mean / one retail MAC"] = tcp.mean_us / retail
    return result


def report(paths: list[PathResult], primitives: list[PrimitiveResult], figures: dict[str, float]) -> str:
    lines = [f"possim PIN security cost — {os.cpu_count()} cores, Python {sys.version.split()[0]}", ""]
    lines.append("PIN path (PinVerifier.check, card approve, Visa PVV)")
    lines.append(f"  {'path':<7} {'HSM':<11} {'calls/s':>9} {'mean µs':>9} {'p50 µs':>9} {'p99 µs':>9} {'max µs':>9}  not verified")
    for p in paths:
        lines.append(f"  {p.path:<7} {p.hsm:<11} {p.calls_per_s:>9,.0f} {p.mean_us:>9.1f} {p.p50_us:>9.1f}"
                     f" {p.p99_us:>9.1f} {p.max_us:>9.1f}  {p.not_verified}")
    lines += ["", "primitives (best round)"]
    for r in primitives:
        lines.append(f"  {r.name:<32} {r.per_s:>10,.0f}/s  {r.us:>7.1f} µs")
    lines += ["", "ratios"]
    for name, value in figures.items():
        lines.append(f"  {name:<40} {value:6.2f}×")
    lines.append("")
    ca = {p.hsm: p for p in paths if p.path == "CA+EC"}
    lines.append(
        f"summary: CA+EC {ca['in-process'].calls_per_s:,.0f}/s in process, {ca['tcp'].calls_per_s:,.0f}/s over TCP"
        f" (p50 ×{figures['CA+EC tcp/in-process p50']:.2f}); one PIN check in process costs"
        f" {figures['CA+EC in-process mean / one retail MAC']:.1f} retail MACs"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000,
                        help="timed PIN checks per path and HSM, and calls per primitive round (default 2000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    lmk = VariantLmk.test()
    stub = IssuerStub.from_fixtures()
    given = inputs(lmk, stub)
    paths = time_paths(LocalHsm(Hsm(lmk)), "in-process", lmk, stub, given, args.iterations)
    server = HsmThread(Hsm(lmk))
    host, port = server.start("127.0.0.1", 0)
    client = TcpHsm(host, port)
    try:
        paths += time_paths(client, "tcp", lmk, stub, given, args.iterations)
    finally:
        client.close()
        server.stop()
    primitives = time_primitives(given, args.iterations)
    figures = ratios(paths, primitives)
    if args.json:
        print(json.dumps({
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "iterations": args.iterations,
            "pin_path": [asdict(p) for p in paths],
            "primitives": [asdict(r) for r in primitives],
            "ratios": figures,
        }, indent=2))
    else:
        print(report(paths, primitives, figures))
    return 0 if all(p.not_verified == 0 for p in paths) else 1


if __name__ == "__main__":
    sys.exit(main())
