"""The host's business date: which day's settlement a message belongs to.

Two things move it past the calendar date. A cut-over time (host.yaml
`settlement.cutover_time`): a bank closing its day at 23:00 counts a payment
made at 23:30 with tomorrow's. And the cut-over itself: once settlement has
closed a date (`possim settle cutover`), nothing more may join it, so every
later message belongs to the day after the last one closed — even when the
operator closed the day before its clock time came.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from .journal import Journal

MIDNIGHT = time(0)


class BusinessCalendar:
    def __init__(self, journal: Journal, cutover_time: time = MIDNIGHT):
        self._journal = journal
        self.cutover_time = cutover_time

    def date_of(self, now: datetime) -> str:
        """The business date (ISO) of a message arriving at `now`.

        The journal is asked every time, not cached: `possim settle cutover`
        runs in another process while the host serves, and one indexed read
        is cheap beside a request's commit.
        """
        return _later(self.clock_date(now), self._journal.last_cutover())

    def clock_date(self, now: datetime) -> str:
        """The business date by the clock alone: the calendar date, or the next one from the cut-over time on."""
        day = now.date()
        if self.cutover_time != MIDNIGHT and now.time() >= self.cutover_time:
            day += timedelta(days=1)
        return day.isoformat()


def _later(by_clock: str, last_closed: str | None) -> str:
    if last_closed is None or by_clock > last_closed:
        return by_clock
    return (date.fromisoformat(last_closed) + timedelta(days=1)).isoformat()
