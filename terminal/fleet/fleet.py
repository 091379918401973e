"""Who takes part in a load run, and the run from fleet to report.

A fleet is the first N terminals of terminals.yaml (each with its own master
key, so each signs on for working keys of its own and MACs its messages), or
N consecutive terminal IDs from `tid_from` with no keys at all — for a host
that takes any terminal (`possim host run --permissive`) or a third party's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from possim.fixtures import load_fixture
from possim.wire.clock import Clock, system_clock
from possim.wire.codec import Codec

from ..cards import Card, resolve_card
from ..profile import load_profile
from .driver import LoadPlan, run_fleet
from .protocol import FleetTerminal
from .stats import Recorder, Snapshot

MAX_SIGN_ON_PROBLEMS = 10
"""Sign-on problems the report lists one by one (the count covers the rest)."""


class FleetError(ValueError):
    """A fleet that cannot be made as asked; the message says what to change."""


def build_fleet(count: int, dialect: str, *, card: str = "approve", fixtures_dir: str | Path | None = None,
                tid_from: str | None = None, mid: str | None = None, clock: Clock = system_clock,
                stan_from: int | None = None) -> list[FleetTerminal]:
    """`stan_from`: the first STAN less one; by default from the time of day (`day_stan`)."""
    fleet = _fleet(count, dialect, card, fixtures_dir, tid_from, mid, clock)
    start = day_stan(clock()) if stan_from is None else stan_from % 999_999
    for terminal in fleet:
        terminal.stan = start
    return fleet


def day_stan(now: datetime) -> int:
    """Ten STANs a second since midnight: where a terminal starts when nothing says where it stopped (no STAN
    book for the host, a Locust worker). A host keys transactions by terminal, STAN and date, so a second run the
    same day must not start where the first did; runs averaging more than ten transactions a second per
    terminal can still overlap, which is what the STAN book (stans.py) is for."""
    return ((now.hour * 60 + now.minute) * 60 + now.second) * 10 % 999_999


def _fleet(count: int, dialect: str, card: str, fixtures_dir: str | Path | None, tid_from: str | None,
           mid: str | None, clock: Clock) -> list[FleetTerminal]:
    if count < 1:
        raise FleetError(f"--terminals {count}: a fleet needs at least one terminal")
    if tid_from is not None:
        return _generated(count, dialect, resolve_card(card, fixtures_dir), tid_from, mid, fixtures_dir, clock)
    entries = load_fixture("terminals.yaml", fixtures_dir).get("terminals") or []
    if len(entries) < count:
        raise FleetError(f"--terminals {count}: terminals.yaml has {len(entries)}; use --embedded (it makes a fleet's "
                         "terminals), --fixtures with more, or --tid-from for a host that takes any terminal")
    the_card = resolve_card(card, fixtures_dir)
    fleet = []
    for entry in entries[:count]:
        profile = load_profile(str(entry["tid"]), fixtures_dir, dialect=dialect)
        spoken = profile.load_dialect()
        fleet.append(FleetTerminal(profile.tid, profile.mid, spoken, Codec(spoken), the_card, profile.currency,
                                   profile.master_key, clock))
    return fleet


def _generated(count: int, dialect: str, card: Card, tid_from: str, mid: str | None,
               fixtures_dir: str | Path | None, clock: Clock) -> list[FleetTerminal]:
    if not (tid_from.isdigit() and len(tid_from) == 8 and int(tid_from) + count <= 10**8):
        raise FleetError(f"--tid-from {tid_from!r}: 8 digits, leaving room for {count} terminals")
    merchant = mid or str(load_fixture("merchants.yaml", fixtures_dir)["merchants"][0]["id"])
    if len(merchant) != 15:
        raise FleetError(f"--mid {merchant!r}: a merchant ID is 15 characters (field 42)")
    profile = load_profile(None, fixtures_dir, dialect=dialect)
    spoken = profile.load_dialect()
    codec = Codec(spoken)
    return [FleetTerminal(f"{int(tid_from) + n:08d}", merchant, spoken, codec, card, profile.currency, None, clock)
            for n in range(count)]


async def run_load(plan: LoadPlan, fleet: list[FleetTerminal], address: tuple[str, int], *, target: str,
                   mix_text: str, progress: Callable[[Snapshot], None] | None = None,
                   clock: Clock = system_clock) -> tuple[dict[str, Any], Recorder]:
    """The run, and its report (JSON-ready) with the recorder that holds every latency."""
    started = clock()
    recorder, seconds, problems = await run_fleet(plan, fleet, address, progress=progress)
    report = {
        "run": {
            "target": target, "dialect": fleet[0].dialect.name, "terminals": len(fleet),
            "signed_on": sum(t.signed_on for t in fleet),
            "mode": "closed loop" if plan.rate is None else f"open loop at {plan.rate:g}/s",
            "rate": plan.rate, "duration_s": seconds, "mix": mix_text,
            "amounts": list(plan.amounts), "timeout_s": plan.timeout, "seed": plan.seed,
            "started": started.isoformat(timespec="seconds"),
        },
        "figures": recorder.summary(seconds),
        "sign_on_problems": problems[:MAX_SIGN_ON_PROBLEMS],
        "sign_on_problem_count": len(problems),
    }
    return report, recorder

