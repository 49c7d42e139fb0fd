"""`kis-stream sim`: run the KIS simulator on loopback and print where to connect."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from pathlib import Path
from typing import Any

import click

from simulator.clock import parse_time_of_day
from simulator.market import DEFAULT_OVERSEAS, DEFAULT_SYMBOLS, MarketConfig
from simulator.server import SimConfig, SimulatorServer


def _symbols(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _app_keys(values: tuple[str, ...]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for value in values:
        key, sep, secret = value.partition(":")
        if not sep or not key or not secret:
            raise click.BadParameter("expected KEY:SECRET", param_hint="--app-key")
        keys[key] = secret
    return keys


def _missing(value: str) -> dict[str, Any]:
    tr_id, _, count = value.partition(":")
    if not tr_id or (count and not count.isdigit()):
        raise click.BadParameter("expected TR_ID or TR_ID:N", param_hint="--missing-fields")
    return {"tr_id": tr_id, "count": int(count or 1)}


def _refuse(value: str) -> dict[str, Any]:
    """TR_ID[:TR_KEY[:N]] (`*` for any) -> a `refuse_subscribe` rule (MAX SUBSCRIBE OVER)."""
    parts = value.split(":")
    times = parts[2] if len(parts) == 3 else "1"
    if not 1 <= len(parts) <= 3 or not all(parts) or not times.isdigit() or int(times) < 1:
        raise click.BadParameter("expected TR_ID[:TR_KEY[:N]]", param_hint="--refuse-subscribe")
    rule: dict[str, Any] = {"times": int(times)}
    if parts[0] != "*":
        rule["tr_id"] = parts[0]
    if len(parts) > 1 and parts[1] != "*":
        rule["tr_key"] = parts[1]
    return rule


def _start(value: str) -> float:
    try:
        return parse_time_of_day(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--start") from exc


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=0, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option(
    "--app-key",
    "app_keys",
    multiple=True,
    metavar="KEY:SECRET",
    help="Accept only these app keys (repeatable). Default: any key (demo).",
)
@click.option(
    "--approval-ttl",
    default=86_400.0,
    show_default=True,
    type=float,
    help="Seconds an approval key stays valid.",
)
@click.option(
    "--max-subscriptions",
    default=41,
    show_default=True,
    type=int,
    help="Registrations per session before MAX SUBSCRIBE OVER.",
)
@click.option(
    "--ping-interval",
    default=10.0,
    show_default=True,
    type=float,
    help="Seconds between PINGPONG heartbeats.",
)
@click.option(
    "--ping-timeout",
    default=30.0,
    show_default=True,
    type=float,
    help="Close a session that has not answered a PINGPONG for this long.",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Market seed.")
@click.option(
    "--symbols",
    default=",".join(DEFAULT_SYMBOLS),
    show_default=True,
    help="Domestic symbols generated from the start (others appear on subscribe).",
)
@click.option(
    "--overseas",
    default=",".join(DEFAULT_OVERSEAS),
    show_default=True,
    help="Overseas symbols (HDFSCNT0/HDFSASP0 keys).",
)
@click.option(
    "--start",
    "start",
    default="09:00:00",
    show_default=True,
    help="Market time to start at (HH:MM[:SS], Korea time) or 'now' for real time.",
)
@click.option(
    "--date",
    "date",
    default=None,
    type=click.DateTime(["%Y-%m-%d", "%Y%m%d"]),
    help="Business date. Default: today in Korea.",
)
@click.option(
    "--speed", default=1.0, show_default=True, type=float, help="Market seconds per wall second."
)
@click.option(
    "--rate",
    default=2.0,
    show_default=True,
    type=float,
    help="Market events per market second per domestic symbol.",
)
@click.option(
    "--load",
    default=None,
    type=float,
    metavar="RECORDS_PER_S",
    help="Load mode: sustain this many data records/s across subscribers.",
)
@click.option(
    "--vi-pct",
    default=3.0,
    show_default=True,
    type=float,
    help="Move in % from the reference price that triggers a VI.",
)
@click.option(
    "--order-interval",
    default=20.0,
    show_default=True,
    type=float,
    help="Mean market seconds between simulated own orders (execution notices).",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve a recorded frames file (JSONL, optionally gzip) instead of a market.",
)
@click.option(
    "--replay-speed",
    default=1.0,
    show_default=True,
    type=float,
    help="Replay N times faster than recorded.",
)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every sent (and unsent) record to this JSONL file.",
)
@click.option(
    "--max-batch",
    default=10,
    show_default=True,
    type=int,
    help="Most records per multi-record frame.",
)
@click.option(
    "--malformed-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Fault: fraction of data frames sent corrupted.",
)
@click.option(
    "--extra-field",
    "extra_fields",
    multiple=True,
    metavar="TR_ID",
    help="Fault: append one trailing field to every record of this TR (repeatable).",
)
@click.option(
    "--missing-fields",
    "missing_fields",
    multiple=True,
    metavar="TR_ID:N",
    help="Fault: leave the last N fields out of every record of this TR (repeatable).",
)
@click.option(
    "--refuse-subscribe",
    "refuse_subscribe",
    multiple=True,
    metavar="TR_ID[:TR_KEY[:N]]",
    help="Fault: answer the first N (default 1) registration requests of each matching "
    "TR/key with MAX SUBSCRIBE OVER; * matches any (repeatable).",
)
@click.option(
    "--drop-every",
    type=float,
    metavar="SECONDS",
    help="Fault: abort all WebSocket connections every N seconds.",
)
@click.option(
    "--stall-every",
    type=float,
    metavar="SECONDS",
    help="Fault: go silent every N seconds (for --stall-seconds).",
)
@click.option(
    "--stall-seconds",
    default=5.0,
    show_default=True,
    type=float,
    help="Length of each --stall-every stall.",
)
@click.option(
    "--expire-keys-every",
    type=float,
    metavar="SECONDS",
    help="Fault: expire every approval key every N seconds.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log sessions and faults.")
def sim(**opts: Any) -> None:
    """Serve a KIS-compatible approval endpoint and WebSocket with a simulated market.

    One loopback port serves POST /oauth2/Approval, the WebSocket (any path), and the test
    controls POST/GET /_sim/faults and GET /_sim/stats. Point the producer at it with
    KIS_URL=<the printed base URL>.
    """
    logging.basicConfig(level=logging.INFO if opts["verbose"] else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    config = build_config(opts)
    asyncio.run(_serve(config))


def build_config(opts: dict[str, Any]) -> SimConfig:
    faults: dict[str, Any] = {}
    if opts["malformed_rate"]:
        faults["malformed_rate"] = opts["malformed_rate"]
    if opts["extra_fields"]:
        faults["extra_field"] = [{"tr_id": tr} for tr in opts["extra_fields"]]
    if opts["missing_fields"]:
        faults["missing_fields"] = [_missing(v) for v in opts["missing_fields"]]
    if opts.get("refuse_subscribe"):
        faults["refuse_subscribe"] = [_refuse(v) for v in opts["refuse_subscribe"]]
    date: dt.datetime | None = opts["date"]
    return SimConfig(
        host=opts["host"],
        port=opts["port"],
        app_keys=_app_keys(opts["app_keys"]),
        approval_ttl=opts["approval_ttl"],
        max_subscriptions=opts["max_subscriptions"],
        ping_interval=opts["ping_interval"],
        ping_timeout=opts["ping_timeout"],
        market=MarketConfig(
            seed=opts["seed"],
            symbols=_symbols(opts["symbols"]),
            overseas=_symbols(opts["overseas"]),
            rate=opts["rate"],
            vi_pct=opts["vi_pct"],
            order_interval=opts["order_interval"],
        ),
        start=_start(opts["start"]),
        date=date.date() if date else None,
        speed=opts["speed"],
        load=opts["load"],
        replay=opts["replay"],
        replay_speed=opts["replay_speed"],
        truth=opts["truth"],
        max_batch=opts["max_batch"],
        faults=faults,
        drop_every=opts["drop_every"],
        stall_every=opts["stall_every"],
        stall_seconds=opts["stall_seconds"],
        expire_keys_every=opts["expire_keys_every"],
    )


async def _serve(config: SimConfig) -> None:
    server = SimulatorServer(config)
    await server.start()
    mode = "replay of " + str(config.replay) if config.replay else (
        f"load {config.load:g} records/s" if config.load else "calm market"
    )  # fmt: skip
    click.echo(f"kis-stream simulator ({mode}) on {server.base_url}")
    click.echo(f"  KIS_URL={server.base_url}")
    click.echo(f"  WebSocket: {server.ws_url}/tryitout/H0STCNT0 (any path)")
    click.echo(f"  market time {server.clock.stamp()} KST, speed x{config.speed:g}; Ctrl-C stops")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
