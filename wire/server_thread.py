"""An asyncio server on its own event loop in a background thread.

For callers in synchronous code, and for a server that another server calls
with blocking I/O: the host asks its HSM over a blocking socket, so an HSM
sharing the host's event loop would wait for itself forever.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, Protocol


class Serving(Protocol):
    async def start(self, host: str, port: int) -> tuple[str, int]: ...
    async def serve_forever(self) -> None: ...
    async def stop(self) -> None: ...


class ServerThread:
    """Runs the server `make_server` builds (inside the thread, on the thread's loop) until `stop`."""

    def __init__(self, make_server: Callable[[], Serving], name: str):
        self._make_server = make_server
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Serving | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        loop = self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = self._make_server()
                self.address = loop.run_until_complete(self._server.start(host, port))
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_until_complete(self._server.serve_forever())
            loop.close()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        assert self.address is not None
        return self.address

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._server is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=30)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> ServerThread:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
