"""The settlement jobs as the CLI and the demo run them: fixtures, journal file and clock wired to
cut-over, reconciliation and the practice generator."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from possim.acquirer.business_day import BusinessCalendar
from possim.acquirer.fee_desk import finance_key
from possim.acquirer.finance_client import FinanceClient
from possim.acquirer.registry import Registry
from possim.acquirer.settings import HostSettings
from possim.wire.clock import Clock, system_clock
from possim.wire.money import currency as find_currency
from possim.wire.nontax import MSG_DAILY_LIST, MSG_DAY_RECONCILED, RESULT_OK, amount_text

from .bank_statement import read_bank_statement
from .errors import SettlementError
from .treasury import TreasuryResult, reconcile_collections

from .cutover import CutoverResult, cut_over
from .fees import FeeSchedule
from .invariants import Invariant, check_invariants
from .practice import make_file, parse_injections
from .recon import ReconResult, reconcile
from .settings import load_settings, parse_key
from .store import SettlementStore


@dataclass
class CutoverReport:
    result: CutoverResult
    invariants: list[Invariant]

    @property
    def failed(self) -> bool:
        return not all(i.passed for i in self.invariants)

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "invariants": [i.to_json() for i in self.invariants]}


@contextmanager
def _store(db: str | Path) -> Iterator[SettlementStore]:
    store = SettlementStore(db)
    try:
        yield store
    finally:
        store.close()


def default_out(db: str | Path, what: str, business_date: str) -> Path:
    """Where a job writes when not told: beside the journal, one folder per job and date."""
    return Path(db).resolve().parent / what / business_date


def run_cutover(db: str | Path, business_date: str, fixtures: str | Path | None = None, out: str | Path | None = None,
                clock: Clock = system_clock) -> CutoverReport:
    settle, _ = load_settings(fixtures)
    with _store(db) as store:
        now = clock()
        today = BusinessCalendar(store.journal, settle.cutover_time).date_of(now)
        result = cut_over(store, business_date, settings=settle, fees=FeeSchedule.from_fixtures(fixtures),
                          out_dir=Path(out) if out else default_out(db, "settlement", business_date), now=now, today=today)
        return CutoverReport(result, check_invariants(store, business_date, result.files))


def run_recon(db: str | Path, business_date: str, files: list[tuple[str, Path]], fixtures: str | Path | None = None,
              out: str | Path | None = None, key: str | None = None, tolerance: int | None = None,
              clock: Clock = system_clock) -> ReconResult:
    _, recon = load_settings(fixtures)
    if tolerance is not None:
        recon = type(recon)(recon.match_keys, tolerance, recon.suspense_days)
    merchants = Registry.from_fixtures(fixtures).merchant_ids()
    with _store(db) as store:
        return reconcile(store, business_date, files, recon, merchants, clock(),
                         Path(out) if out else default_out(db, "recon", business_date),
                         clearing_key=parse_key(key, "--key") if key else None)


def run_make_file(db: str | Path, business_date: str, kind: str, inject: str | None, seed: int, path: str | Path,
                  fixtures: str | Path | None = None) -> dict[str, Any]:
    settle, _ = load_settings(fixtures)
    wanted = parse_injections(inject, kind)
    with _store(db) as store:
        return make_file(store, business_date, kind, wanted, seed, Path(path), settle.acquirer_id,
                         settle.settlement_account, HostSettings.from_fixtures(fixtures).fees.collection_account)


async def daily_list(finance: tuple[str, int], business_date: str, fixtures: str | Path | None = None,
                     clock: Clock = system_clock) -> dict[str, Any]:
    """The finance system's confirmation list of the date (the body of its 2004 answer)."""
    fees = HostSettings.from_fixtures(fixtures).fees
    try:
        day = date.fromisoformat(business_date)
    except ValueError:
        raise SettlementError(f"date {business_date!r} is not a date such as 2026-12-04") from None
    client = FinanceClient(finance, finance_key(fixtures), clock, random.Random(), fees.finance_timeout, fees.bank_id)
    answer = await client.exchange(MSG_DAILY_LIST, {"date": day.strftime("%Y%m%d")})
    if answer.body.get("result") != RESULT_OK:
        raise SettlementError(f"the finance system refused the daily list of {business_date}:"
                              f" {answer.body.get('result')} {answer.body.get('message', '')}")
    return answer.body


async def report_reconciled(finance: tuple[str, int], result: TreasuryResult, fixtures: str | Path | None = None,
                            clock: Clock = system_clock) -> str:
    """Tell the finance system the day balanced (message 1006), so it closes it too: no confirmation of it can
    be cancelled after, and later confirmations go to the next day. Returns its result code."""
    fees = HostSettings.from_fixtures(fixtures).fees
    summary = result.summary
    client = FinanceClient(finance, finance_key(fixtures), clock, random.Random(), fees.finance_timeout, fees.bank_id)
    answer = await client.exchange(MSG_DAY_RECONCILED, {
        "date": summary["business_date"].replace("-", ""), "count": str(summary["finance_count"]),
        "total": amount_text(summary["finance_amount"], summary["currency"]),
        "currency": find_currency(summary["currency"]).alpha})
    return str(answer.body.get("result", ""))


def run_treasury(db: str | Path, business_date: str, finance_list: dict[str, Any], statement: str | Path,
                 fixtures: str | Path | None = None, out: str | Path | None = None,
                 clock: Clock = system_clock) -> TreasuryResult:
    """The day's fee collections three ways: the journal, the finance system's daily list (daily_list()), and
    the collection account's statement; report_reconciled() then closes the day at the finance system."""
    fees = HostSettings.from_fixtures(fixtures).fees
    lines = read_bank_statement(Path(statement))
    with _store(db) as store:
        return reconcile_collections(store, business_date, finance_list, lines, Path(statement).name, fees,
                                     Path(out) if out else default_out(db, "treasury", business_date), clock())
