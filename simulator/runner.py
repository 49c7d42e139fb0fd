"""Running the simulator from synchronous code: a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from simulator.server import SimConfig, SimulatorServer


class SimHandle:
    """A simulator running in a background thread; use as a context manager or call stop()."""

    def __init__(self, server: SimulatorServer, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread) -> None:  # fmt: skip
        self.server = server
        self._loop = loop
        self._thread = thread
        self.host = server.host
        self.port = server.port

    @property
    def base_url(self) -> str:
        """REST base (KIS_URL): http://host:port."""
        return self.server.base_url

    @property
    def ws_url(self) -> str:
        """WebSocket base: ws://host:port (any path is accepted)."""
        return self.server.ws_url

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def set_faults(self, command: dict[str, Any]) -> dict[str, Any]:
        """Same as POST /_sim/faults, from the calling thread."""
        result: dict[str, Any] = self.call(self.server.apply_faults(command))
        return result

    def stats(self) -> dict[str, Any]:
        async def _stats() -> dict[str, Any]:
            return self.server.stats()

        result: dict[str, Any] = self.call(_stats())
        return result

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.call(self.server.stop(), timeout=15.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15.0)

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(config: SimConfig | None = None) -> SimHandle:
    """Start a simulator on a daemon thread; returns once it accepts connections."""
    server = SimulatorServer(config)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    async def _start() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failure.append(exc)
        finally:
            started.set()

    def _run() -> None:
        asyncio.set_event_loop(loop)
        starter = loop.create_task(_start())
        try:
            loop.run_forever()
            starter.cancel()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=_run, name="kis-simulator", daemon=True)
    thread.start()
    if not started.wait(30) or failure:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        raise RuntimeError(f"simulator failed to start: {failure[0] if failure else 'timeout'}")
    return SimHandle(server, loop, thread)
