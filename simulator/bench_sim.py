"""`kis-stream bench sim`: records/s the simulator sustains in load mode, seen by a client.

The simulator runs in its own process (as `kis-stream sim --load` would), a client in this
process subscribes a realistic plan (8 TRs x 5 symbols = 40 registrations, one session),
answers PINGPONG and counts records from each frame's count field. The figure is records
received per second over the measured window, after a warm-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import os
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import click
import websocket

from simulator.market import DEFAULT_SYMBOLS, MarketConfig
from simulator.server import SimConfig, SimulatorServer

SUSTAINED_SHARE = 0.99
"""Delivered/target ratio, by the server's count over the window, that counts as sustained."""
CLIENT_SHARE = 0.97
"""Received/target ratio the client must see too (its window edges cut frames in flight)."""
PLAN_TRS = ("H0STCNT0", "H0STASP0", "H0NXCNT0", "H0NXASP0", "H0UNCNT0", "H0UNASP0",
            "H0STPGM0", "H0UNPGM0")  # fmt: skip


def _serve(config: SimConfig, ports: Any, stop: Any) -> None:
    # falling behind is measured and reported by the bench, not logged mid-line
    logging.getLogger("kis_stream.simulator").setLevel(logging.ERROR)

    async def main() -> None:
        server = SimulatorServer(config)
        _, port = await server.start()
        ports.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await server.stop()

    asyncio.run(main())


def measure(target: float, seconds: float, warmup: float) -> dict[str, Any]:
    """Run the simulator in load mode in a child process and measure what a client receives."""
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    config = SimConfig(
        market=MarketConfig(seed=1, symbols=DEFAULT_SYMBOLS), start=9 * 3600 + 300, load=target
    )
    proc = ctx.Process(target=_serve, args=(config, ports, stop), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=60)
        base = f"http://127.0.0.1:{port}"
        body = json.dumps(
            {"grant_type": "client_credentials", "appkey": "bench", "secretkey": "bench"}
        ).encode()
        req = urllib.request.Request(
            base + "/oauth2/Approval", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            key = json.load(resp)["approval_key"]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/", timeout=10, skip_utf8_validation=True
        )
        try:
            for code in DEFAULT_SYMBOLS:
                for tr_id in PLAN_TRS:
                    header = {"approval_key": key, "custtype": "P", "tr_type": "1",
                              "content-type": "utf-8"}  # fmt: skip
                    ws.send(json.dumps(
                        {"header": header, "body": {"input": {"tr_id": tr_id, "tr_key": code}}}
                    ))  # fmt: skip

            def stats() -> dict[str, Any]:
                with urllib.request.urlopen(base + "/_sim/stats", timeout=10) as resp:
                    result: dict[str, Any] = json.load(resp)
                return result

            result = _count(ws, seconds, warmup, stats)
            return result | {"target": target}
        finally:
            ws.close()
    finally:
        stop.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _count(
    ws: websocket.WebSocket, seconds: float, warmup: float, stats: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    records = frames = 0
    cpu0 = sys0 = 0.0
    load0: dict[str, Any] = {}
    start = time.monotonic()
    measure_from = start + warmup
    end = measure_from + seconds
    counting = False
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if not counting and now >= measure_from:
            # the window starts before the stats call: what queues up meanwhile belongs to it
            counting, records, frames, t0 = True, 0, 0, time.monotonic()
            first = stats()
            cpu0, sys0 = first["process_cpu_seconds"], first["process_cpu_sys_seconds"]
            load0 = first["load"]
        msg = ws.recv()
        if isinstance(msg, bytes):
            continue
        if msg[0] == "{":
            if '"PINGPONG"' in msg:
                ws.send(msg)
            continue
        second_bar = msg.index("|", 2)
        records += int(msg[second_bar + 1 : second_bar + 4])
        frames += 1
    elapsed = time.monotonic() - t0
    final = stats()
    cpu = final["process_cpu_seconds"] - cpu0
    sys_cpu = final["process_cpu_sys_seconds"] - sys0
    return {
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "records": records,
        "frames": frames,
        "seconds": round(elapsed, 2),
        "records_per_s": round(records / elapsed),
        "records_per_frame": round(records / frames, 2) if frames else 0,
        "server_cpu_share": round(cpu / elapsed, 2),
        "server_sys_share": round(sys_cpu / elapsed, 2),
        "records_per_server_cpu_s": round(records / cpu) if cpu > 0 else None,
        "server_queued_frames": sum(s["queued"] for s in final["sessions"]),
        "server_written_off": final["load"]["written_off"] - load0["written_off"],
        "server_delivered_per_s": _rate(load0, final["load"]),
    }


def _rate(before: dict[str, Any], after: dict[str, Any]) -> int | None:
    """Records/s the server's schedule delivered between two `/_sim/stats` load snapshots."""
    seconds = after["active_seconds"] - before["active_seconds"]
    return round((after["delivered"] - before["delivered"]) / seconds) if seconds > 0 else None


def verdict(result: dict[str, Any]) -> tuple[bool, str]:
    """Whether the target was sustained over the window, and if not, what fell behind."""
    target = result["target"]
    # the server's own count is exact; the client's window also cuts frames in flight
    kept = (result["server_delivered_per_s"] or 0) >= SUSTAINED_SHARE * target
    received = result["records_per_s"] >= CLIENT_SHARE * target
    if kept and received and not result["server_written_off"]:
        return True, "sustained"
    if result["server_written_off"]:
        return False, (
            f"NOT sustained: the server fell {result['server_written_off']:,} records behind "
            f"schedule with {result['server_cpu_share']:.0%} of a core"
        )
    return False, (
        f"NOT sustained: the server delivered {result['server_delivered_per_s']:,}/s but the "
        "client received less "
        f"({result['server_queued_frames']:,} frames still queued: client or socket too slow)"
    )


@click.command("sim")
@click.option("--records-per-s", "targets", type=float, multiple=True, default=(25_000.0,),
              show_default=True,
              help="Load-mode target (total data records/s); repeat for several runs.")  # fmt: skip
@click.option("--seconds", default=10.0, show_default=True, help="Measured window.")
@click.option("--warmup", default=2.0, show_default=True, help="Seconds ignored at the start.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document per target.")
def bench_sim(targets: tuple[float, ...], seconds: float, warmup: float, as_json: bool) -> None:
    """Simulator load mode: data records/s received by one client session (40 registrations)."""
    for target in targets:
        result = measure(target, seconds, warmup)
        sustained, why = verdict(result)
        if as_json:
            click.echo(json.dumps({"bench": "sim", **result, "sustained": sustained}))
            continue
        click.echo(f"target {target:,.0f} records/s -> received {result['records_per_s']:,} "
                   f"records/s (server delivered {result['server_delivered_per_s'] or 0:,}/s; "
                   f"{result['records']:,} records in {result['frames']:,} frames, "
                   f"{result['records_per_frame']} records/frame, {result['seconds']} s): {why}; "
                   f"server used {result['server_cpu_share']:.0%} of a core = "
                   f"{result['records_per_server_cpu_s']:,} records per CPU-second; "
                   f"load average {result['load_avg_1m']}")  # fmt: skip
