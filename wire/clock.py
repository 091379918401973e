"""Injectable time, so every scenario replays the same way."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

Clock = Callable[[], datetime]
"""Returns the current local time, naive, as terminals and hosts print it."""


def system_clock() -> datetime:
    return datetime.now()


class SteppingClock:
    """A clock for tests and replays: starts at `start`, advances `step` on each reading."""

    def __init__(self, start: datetime, step: timedelta = timedelta(milliseconds=10)):
        self._now = start
        self._step = step

    def __call__(self) -> datetime:
        now = self._now
        self._now += self._step
        return now

    def advance(self, delta: timedelta) -> None:
        self._now += delta
