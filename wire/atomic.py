"""Writing a file so that readers only ever see the old file or the whole new one.

A clearing file or statement cut off by a crash, a full disk or a bad record
half way would look like a short but valid day to whoever picks it up next,
and a half-written load report or STAN book would mislead the next run;
writing to a temporary name and renaming it over the target makes that
impossible.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def atomic_text(path: Path, newline: str = "", mode: int = 0o600) -> Iterator[TextIO]:
    """Yield a UTF-8 text file that replaces `path` only if the block ends without an exception.

    The temporary file lives in the same folder because os.replace() is only
    atomic within one file system. It is hidden (leading dot) so a folder
    watcher does not take it for a finished file, and it is fsynced before the
    rename so a power cut cannot leave the new name pointing at empty blocks.
    `mode` defaults to owner-only: settlement data is not for other users of
    the machine (a load report, which CI collects, asks for 0o644).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", newline=newline, dir=path.parent, prefix=f".{path.name}.", delete=False
    )
    try:
        with temp:
            yield temp
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp.name, mode)
        os.replace(temp.name, path)
    except BaseException:
        os.unlink(temp.name)
        raise
