"""The practice generator: an external file made from the journal, with discrepancies put in on purpose.

Testers practise reconciliation on it, and tests check that every injected
discrepancy is found and classified and nothing else is flagged. It returns
a manifest of what it injected, keyed the way reconciliation reports it.
The seed makes the same journal give the same file.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .bank_statement import StatementLine, write_bank_statement
from .clearing_file import ClearingHeader, ClearingRecord, write_clearing_file
from .cutover import channel_settlement_id
from .discrepancies import (
    AMOUNT_MISMATCH, DUPLICATE, FEE_MISMATCH, LATE_PRESENTMENT, MISSING_AT_HOST, MISSING_IN_FILE, STATUS_MISMATCH,
    UNIDENTIFIED_FUNDS,
)
from .errors import SettlementError
from .store import SettlementStore

INJECTIONS = {
    "clearing": {"missing": MISSING_IN_FILE, "amount": AMOUNT_MISMATCH, "duplicate": DUPLICATE,
                 "unknown": MISSING_AT_HOST, "status": STATUS_MISMATCH, "fee": FEE_MISMATCH, "late": LATE_PRESENTMENT},
    "bank": {"missing": MISSING_IN_FILE, "amount": AMOUNT_MISMATCH, "duplicate": DUPLICATE,
             "unidentified": UNIDENTIFIED_FUNDS},
    "collection": {"missing": MISSING_IN_FILE, "amount": AMOUNT_MISMATCH, "duplicate": DUPLICATE,
                   "unidentified": UNIDENTIFIED_FUNDS},
}


def parse_injections(text: str | None, kind: str) -> dict[str, int]:
    """"missing=3,amount=2" → {"missing": 3, "amount": 2}; names checked against the file kind's."""
    if kind not in INJECTIONS:
        raise SettlementError(f"--kind {kind}: one of {', '.join(INJECTIONS)}")
    wanted: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, count = part.partition("=")
        if name not in INJECTIONS[kind]:
            raise SettlementError(f"--inject {part}: {name!r} is not a {kind} discrepancy ({', '.join(INJECTIONS[kind])})")
        if not count.isdigit():
            raise SettlementError(f"--inject {part}: the count must be a whole number, as in {name}=2")
        wanted[name] = wanted.get(name, 0) + int(count)
    return wanted


def make_file(store: SettlementStore, business_date: str, kind: str, inject: dict[str, int], seed: int,
              path: Path, sender_id: str, account: str, collection_account: str = "") -> dict[str, Any]:
    """`account` is the settlement account a bank statement lists; `collection_account` the government fee
    collection account a collection statement lists (one credit per confirmed fee payment)."""
    if store.cutover_of(business_date) is None:
        raise SettlementError(f"{business_date} has no cut-over: run `possim settle cutover --date {business_date}` first")
    rng = random.Random(seed)
    if kind == "clearing":
        injected, count = _clearing(store, business_date, inject, rng, path, sender_id)
    elif kind == "bank":
        injected, count = _bank(store, business_date, inject, rng, path, account)
    else:
        injected, count = _collection(store, business_date, inject, rng, path, collection_account)
    expected: dict[str, int] = {}
    for name, keys in injected.items():
        cls = INJECTIONS[kind][name]
        expected[cls] = expected.get(cls, 0) + len(keys)
    return {"file": str(path), "kind": kind, "business_date": business_date, "seed": seed, "records": count,
            "injected": injected, "expected": expected}


def _pick(pool: list[Any], n: int, rng: random.Random, what: str) -> list[Any]:
    if n > len(pool):
        raise SettlementError(f"--inject asks for {n} {what}, but only {len(pool)} are left to choose from"
                              f" (each injection takes records of its own)")
    chosen = rng.sample(pool, n)
    for item in chosen:
        pool.remove(item)
    return chosen


def _clearing(store: SettlementStore, day: str, inject: dict[str, int], rng: random.Random, path: Path,
              sender_id: str) -> tuple[dict[str, list[str]], int]:
    records = [_record(day, row) for row in store.settled_rows(day)]
    pool = list(range(len(records)))
    injected: dict[str, list[str]] = {}
    dropped = set(_pick(pool, inject.get("missing", 0), rng, "records to leave out"))
    injected["missing"] = [key(records[i]) for i in sorted(dropped)]
    for i in _pick(pool, inject.get("amount", 0), rng, "records to change the amount of"):
        records[i] = replace(records[i], amount=records[i].amount + rng.randint(1, 999))
        injected.setdefault("amount", []).append(key(records[i]))
    for i in _pick(pool, inject.get("fee", 0), rng, "records to change the fee of"):
        records[i] = replace(records[i], fee=records[i].fee + rng.randint(1, 99))
        injected.setdefault("fee", []).append(key(records[i]))
    extra: list[ClearingRecord] = []
    for i in _pick(pool, inject.get("duplicate", 0), rng, "records to present twice"):
        extra.append(records[i])
        injected.setdefault("duplicate", []).append(key(records[i]))
    unsettled = [_record(day, row) for row in store.unsettled_rows(day)]
    for r in _pick(unsettled, inject.get("status", 0), rng, "reversed or voided payments"):
        extra.append(r)
        injected.setdefault("status", []).append(key(r))
    # A late presentment practises best on what an earlier reconciliation found missing: it clears that item.
    waiting = store.open_missing_in_file_ids()
    earlier = list(store.settled_rows_before(day))
    first = [row for row in earlier if row[_ROW_ID] in waiting]
    late = inject.get("late", 0)
    if late > len(earlier):
        _pick(earlier, late, rng, "payments settled on earlier dates")  # says how many there are
    rest = [row for row in earlier if row[_ROW_ID] not in waiting]
    for row in first[:late] + _pick(rest, max(0, late - len(first)), rng, "payments settled on earlier dates"):
        r = _record(day, row)
        extra.append(r)
        injected.setdefault("late", []).append(key(r))
    known = {r.rrn for r in records}
    template = records[0] if records else None
    for _ in range(inject.get("unknown", 0)):
        if template is None:
            raise SettlementError("--inject unknown needs at least one settled payment to model the record on")
        rrn = f"{rng.randrange(10**11, 10**12)}"
        while rrn in known:
            rrn = f"{rng.randrange(10**11, 10**12)}"
        known.add(rrn)
        made = replace(template, rrn=rrn, stan=f"{rng.randrange(1, 999999):06d}", amount=rng.randint(100, 99999))
        extra.append(made)
        injected.setdefault("unknown", []).append(key(made))
    kept = [r for i, r in enumerate(records) if i not in dropped]
    for r in extra:  # extra lines go in at random places, as a real file would mix them in
        kept.insert(rng.randrange(len(kept) + 1), r)
    injected = {k: v for k, v in injected.items() if v}
    write_clearing_file(path, ClearingHeader(business_date=day, created_at=f"{day}T23:59:59", sender_id=sender_id),
                        kept)
    return injected, len(kept)


def key(record: ClearingRecord) -> str:
    """A record's key as reconciliation reports it under the default match key (rrn, terminal_id)."""
    return f"{record.rrn}/{record.terminal_id}"


def _bank(store: SettlementStore, day: str, inject: dict[str, int], rng: random.Random, path: Path,
          account: str) -> tuple[dict[str, list[str]], int]:
    credits: dict[str, list[Any]] = {}
    value_date = day
    for b in store.batches(day):  # the channel pays on the value date, as the acquirer pays its merchants
        ref = channel_settlement_id(day, b.channel, b.currency)
        entry = credits.setdefault(ref, [0, b.currency, b.channel])
        entry[0] += b.sales_amount - b.refunds_amount
        value_date = b.value_date
    lines = [StatementLine(0, account, value_date, "CR" if amount >= 0 else "DR", abs(amount), currency, ref,
                           f"{channel} settlement {day}")
             for ref, (amount, currency, channel) in sorted(credits.items()) if amount != 0]
    return _statement(lines, inject, rng, path, account, value_date, "channel credits")


def _statement(lines: list[StatementLine], inject: dict[str, int], rng: random.Random, path: Path, account: str,
               value_date: str, what: str) -> tuple[dict[str, list[str]], int]:
    """A statement of `lines` with the injected discrepancies, written to `path`."""
    pool = list(range(len(lines)))
    injected: dict[str, list[str]] = {}
    dropped = set(_pick(pool, inject.get("missing", 0), rng, f"{what} to leave out"))
    injected["missing"] = [lines[i].reference for i in sorted(dropped)]
    for i in _pick(pool, inject.get("amount", 0), rng, f"{what} to change"):
        lines[i] = replace(lines[i], amount=lines[i].amount + rng.randint(1, 999))
        injected.setdefault("amount", []).append(lines[i].reference)
    extra = [lines[i] for i in _pick(pool, inject.get("duplicate", 0), rng, f"{what} to repeat")]
    injected["duplicate"] = [line.reference for line in extra]
    currency = lines[0].currency if lines else "156"
    for _ in range(inject.get("unidentified", 0)):
        ref = f"UNKNOWN-{rng.randrange(10**8, 10**9)}"
        extra.append(StatementLine(0, account, value_date, "CR", rng.randint(100, 99999), currency, ref,
                                   "transfer without a known reference"))
        injected.setdefault("unidentified", []).append(ref)
    kept: list[StatementLine] = [line for i, line in enumerate(lines) if i not in dropped]
    for line in extra:
        kept.insert(rng.randrange(len(kept) + 1), line)
    count = write_bank_statement(path, kept)
    return {k: v for k, v in injected.items() if v}, count


_ROW_ID = 14
"""Where a settled_rows row keeps its transaction id."""


def _collection(store: SettlementStore, day: str, inject: dict[str, int], rng: random.Random, path: Path,
                account: str) -> tuple[dict[str, list[str]], int]:
    lines = [StatementLine(0, account, day, "CR", amount, currency, trade, f"fee {code} agency {agency}")
             for trade, code, agency, amount, currency, *_ in store.collections(day)]
    return _statement(lines, inject, rng, path, account, day, "fee credits")


def _record(day: str, row: Iterable[Any]) -> ClearingRecord:
    (_day, merchant, terminal, channel, kind, stan, rrn, pan, amount, currency, fee, created, auth, reference,
     _id, sign) = row
    return ClearingRecord(
        business_date=day, merchant_id=merchant or "", terminal_id=terminal, channel=channel or "", kind=kind or "",
        sign=sign, stan=stan[-16:], rrn=rrn or "", masked_pan=pan or "", amount=amount or 0, currency=currency or "",
        fee=abs(fee or 0), transacted_at=created[:19], auth_code=auth or "", reference=reference,
    )
