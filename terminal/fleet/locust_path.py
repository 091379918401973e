"""Where the shipped locustfile is, so `locust -f "$(possim load --locustfile)"` works from any install.

Kept apart from the locustfile itself: importing that one imports Locust,
which monkey-patches the whole process for gevent; this module imports
nothing but the standard library.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def locustfile_path() -> Path:
    """The file path of `possim.terminal.fleet.locustfile` (docs/locust.md)."""
    return Path(str(resources.files(__package__) / "locustfile.py"))
