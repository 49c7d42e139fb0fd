"""A KIS-protocol-faithful server with a synthetic two-venue market, replay and faults.

Python API (for tests and other tools)::

    from simulator import SimConfig, MarketConfig, SimulatorServer, run_in_thread

    # synchronous code: a background thread with its own event loop
    with run_in_thread(SimConfig(market=MarketConfig(seed=7), ping_interval=1)) as sim:
        sim.base_url      # "http://127.0.0.1:<port>"  -> KIS_URL (POST /oauth2/Approval)
        sim.ws_url        # "ws://127.0.0.1:<port>"     -> any path is a KIS WebSocket
        sim.set_faults({"drop_connections": True})   # same JSON as POST /_sim/faults
        sim.stats()       # same as GET /_sim/stats

    # asynchronous code
    server = SimulatorServer(SimConfig(port=0, truth=Path("truth.jsonl")))
    host, port = await server.start()
    ...
    await server.stop()

See docs/simulator.md for the protocol behaviour, the truth-log format and the fault commands.
"""

from simulator.market import MarketConfig
from simulator.runner import SimHandle, run_in_thread
from simulator.server import SimConfig, SimulatorServer

__all__ = ["MarketConfig", "SimConfig", "SimHandle", "SimulatorServer", "run_in_thread"]
