"""One aiohttp process, one port: KIS's approval endpoint, its WebSocket, and test controls.

Routes: `POST /oauth2/Approval`; a WebSocket on any path (e.g. /tryitout/H0STCNT0 or /);
`POST/GET /_sim/faults`; `GET /_sim/stats`. A pump task pulls records from the market (or a
replay file) every `tick` seconds, batches them per (tr_id, key) into multi-record frames and
queues them to each subscribed session; one writer task per session sends them, so a slow
client never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from simulator import wire
from simulator.clock import MarketClock
from simulator.faults import FaultError, Faults
from simulator.market import GenRecord, Market, MarketConfig
from simulator.pacing import LoadPacer
from simulator.protocol import Delivery, Registry, Session
from simulator.replay import ReplayFrame, ReplaySource
from simulator.spec import TrLayout, canonical_tr_id, load_layouts
from simulator.truth import TruthLog

log = logging.getLogger("kis_stream.simulator")

LOAD_STEP_SECONDS = 0.1
"""Load mode generates this many seconds' worth of records per step: enough for frames to
fill up to `max_batch` records (fewer, larger frames are cheaper for every reader)."""
MAX_LOAD_CHUNK = 4_000
"""Records per step, at most: small enough to keep the event loop responsive."""
LOAD_REPORT_EVERY = 30.0
"""Seconds between warnings that load mode is behind its schedule."""
LOAD_GC_GEN0 = 50_000
"""Load mode's young-generation GC threshold (default 700): records die within a chunk, so a
collection every 700 allocations only walks objects about to be freed (~10 % of the CPU)."""


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    app_keys: dict[str, str] = field(default_factory=dict)
    """app key -> secret; empty accepts any key (demo)."""
    approval_ttl: float = 86_400.0
    max_subscriptions: int = 41
    ping_interval: float = 10.0
    ping_timeout: float = 30.0
    market: MarketConfig = field(default_factory=MarketConfig)
    start: float = 9 * 3600.0
    date: dt.date | None = None
    speed: float = 1.0
    load: float | None = None
    """Load mode: total data records per second to sustain across sessions."""
    replay: Path | None = None
    replay_speed: float = 1.0
    truth: Path | None = None
    tick: float = 0.05
    max_batch: int = 10
    max_queue: int = 20_000
    """Frames queued for one session before it is closed as a slow consumer."""
    load_spread: bool = True
    """Load mode: send a chunk's frames spread over the time the chunk stands for, as a live
    feed arrives, instead of all at once (a burst every LOAD_STEP_SECONDS)."""
    load_spread_granule: float = 0.01
    """Spread frames go out in groups: a writer sends together every frame due within this
    many seconds (one timer and one wake-up of the reader per group, not per frame)."""
    faults: dict[str, Any] = field(default_factory=dict)
    drop_every: float | None = None
    stall_every: float | None = None
    stall_seconds: float = 5.0
    expire_keys_every: float | None = None


class SimulatorServer:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.layouts: dict[str, TrLayout] = load_layouts()
        self.clock = MarketClock(self.config.start, date=self.config.date, speed=self.config.speed)
        self.market: Market | None = None
        self.replay: ReplaySource | None = None
        if self.config.replay is not None:
            self.replay = ReplaySource(self.config.replay, speed=self.config.replay_speed)
        else:
            self.market = Market(self.config.market, date=self.clock.date, start=self.clock.now())
        self.faults = Faults(seed=self.config.market.seed)
        self.truth: TruthLog | None = None
        self.sessions: dict[str, Session] = {}
        self.registry = Registry(
            self.layouts,
            app_keys=self.config.app_keys,
            approval_ttl=self.config.approval_ttl,
            max_subscriptions=self.config.max_subscriptions,
            on_subscribe=self.market.add_interest if self.market is not None else _ignore,
            refusal=self.faults.refusal,
        )
        self.subscribers = self.registry.subscribers
        self.sent_by_tr: Counter[str] = Counter()
        self.frames_by_tr: Counter[str] = Counter()
        self.unsent = 0
        self.load_delivered = 0
        self.pacer: LoadPacer | None = None
        self._session_counter = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._gc_threshold: tuple[int, int, int] | None = None
        self.host = self.config.host
        self.port = 0

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> tuple[str, int]:
        """Bind, start serving and generating; returns the (host, port) actually bound."""
        if self.config.faults:
            self.faults.configure(self.config.faults, time.monotonic())
        if self.config.truth is not None:
            self.truth = TruthLog(self.config.truth)
        if self.config.load and self.replay is None:
            self._gc_threshold = gc.get_threshold()
            gc.set_threshold(LOAD_GC_GEN0, *self._gc_threshold[1:])
        app = web.Application()
        app.router.add_post("/oauth2/Approval", self._approval)
        app.router.add_post("/_sim/faults", self._post_faults)
        app.router.add_get("/_sim/faults", self._get_faults)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_get("/{tail:.*}", self._websocket)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        self._tasks.append(asyncio.create_task(self._pump(), name="sim-pump"))
        self._tasks.append(asyncio.create_task(self._scheduled_faults(), name="sim-faults"))
        log.info("simulator listening on %s", self.base_url)
        return self.host, self.port

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._session_tasks):
            task.cancel()
        if self.truth is not None:
            self.truth.close()
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None

    # ---- HTTP: approval, faults, stats ----------------------------------------------------

    async def _approval(self, request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=orjson.loads)
        except Exception:
            body = None
        reply, app_key = self.registry.approve(body)
        if app_key is None:
            return web.json_response(reply, status=403, dumps=_json_dumps)
        log.info("approval key issued for app key %s", wire.mask(app_key))
        return web.json_response(reply, dumps=_json_dumps)

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            command = await request.json(loads=orjson.loads)
            if not isinstance(command, dict):
                raise FaultError("body must be a JSON object")
            result = await self.apply_faults(command)
        except (FaultError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400, dumps=_json_dumps)
        return web.json_response(result, dumps=_json_dumps)

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.snapshot(time.monotonic()), dumps=_json_dumps)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats(), dumps=_json_dumps)

    async def apply_faults(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply one fault command (same JSON as POST /_sim/faults); returns the fault state."""
        now = time.monotonic()
        self.faults.configure(command, now)
        actions: dict[str, Any] = {}
        if command.get("expire_approval_keys"):
            actions["expired_approval_keys"] = self.registry.expire_all()
        if "trigger_vi" in command:
            code = command["trigger_vi"]
            if self.market is None or not isinstance(code, str):
                raise FaultError("trigger_vi needs a symbol code and a generated market")
            started = self.market.trigger_vi(code)
            self._dispatch(self.market.take_pending())
            actions["vi_started"] = started
        if command.get("drop_connections"):
            actions["dropped"] = self.drop_connections()
        return {**self.faults.snapshot(now), **actions}

    def drop_connections(self) -> int:
        """Abort every WebSocket connection at the TCP level (no close handshake)."""
        dropped = 0
        for session in list(self.sessions.values()):
            transport = session.request.transport
            if transport is not None:
                transport.abort()
                dropped += 1
            self._end_session(session)
        return dropped

    def stats(self) -> dict[str, Any]:
        return {
            "market_time": self.clock.stamp(),
            "mode": "replay" if self.replay else ("load" if self.config.load else "market"),
            "sessions": [
                {
                    "id": s.id,
                    "app_key": wire.mask(s.app_key) if s.app_key else None,
                    "subscriptions": [
                        {"tr_id": tr, "tr_key": key} for (_, key), tr in s.subs.items()
                    ],
                    "frames_sent": s.frames_sent,
                    "records_sent": s.records_sent,
                    "queued": s.queue.qsize(),
                }
                for s in self.sessions.values()
            ],
            "records_sent_by_tr": dict(self.sent_by_tr),
            "frames_sent_by_tr": dict(self.frames_by_tr),
            "records_sent": sum(self.sent_by_tr.values()),
            "records_generated": self.market.generated if self.market else 0,
            "records_unsent": self.unsent,
            "approval_keys": len(self.registry.approvals),
            "truth_seq": self.truth.seq if self.truth else None,
            "replay": self.replay.progress() if self.replay else None,
            "faults": self.faults.snapshot(time.monotonic()),
            "load": self.pacer.snapshot(time.monotonic()) if self.pacer else None,
            "process_cpu_seconds": round(time.process_time(), 3),
            "process_cpu_sys_seconds": round(os.times().system, 3),
        }

    # ---- WebSocket ------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response(
                {"service": "kis-stream simulator", "websocket": self.ws_url}, dumps=_json_dumps
            )
        ws = web.WebSocketResponse(
            autoping=False, max_msg_size=1 << 20, timeout=2.0, compress=False
        )
        await ws.prepare(request)
        self._session_counter += 1
        session = Session(f"s{self._session_counter}", ws, request)
        self.sessions[session.id] = session
        writer = asyncio.create_task(self._writer(session), name=f"sim-writer-{session.id}")
        pinger = asyncio.create_task(self._pinger(session), name=f"sim-ping-{session.id}")
        for task in (writer, pinger):
            self._session_tasks.add(task)
            task.add_done_callback(self._session_tasks.discard)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(session, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._on_text(session, msg.data.decode("utf-8", "replace"))
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    session.pong()
                elif msg.type == WSMsgType.ERROR:
                    break
        except Exception as exc:  # a broken client must never take the server down
            log.debug("session %s ended: %r", session.id, exc)
        finally:
            self._end_session(session)
            writer.cancel()
            pinger.cancel()
        return ws

    def _end_session(self, session: Session) -> None:
        if session.closed:
            return
        session.closed = True
        self.sessions.pop(session.id, None)
        self.registry.release(session)
        while not session.queue.empty():  # frames that will never be written
            _, delivery = session.queue.get_nowait()
            if delivery is not None:
                self._account(session, delivery, sent=False)
        session.queue.put_nowait(("", None))  # wake the writer so it can exit

    def _reply(self, session: Session, text: str) -> None:
        session.queue.put_nowait((text, None))

    def _on_text(self, session: Session, text: str) -> None:
        reply = self.registry.request(session, text)
        if reply is not None:
            self._reply(session, reply)

    async def _writer(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        ws = session.ws
        while not session.closed:
            payload, delivery = await session.queue.get()
            if session.closed:
                return
            if delivery is not None and delivery.due:
                wait = delivery.due - loop.time()
                if wait > self.config.load_spread_granule:
                    await asyncio.sleep(wait)
                    if session.closed:  # its queue was accounted; this frame was not
                        self._account(session, delivery, sent=False)
                        return
            while (wait := self.faults.stalled(time.monotonic())) > 0:
                await asyncio.sleep(min(wait, 0.2))
            try:
                if isinstance(payload, bytes):
                    await ws.send_bytes(payload)
                else:
                    await ws.send_str(payload)
            except Exception:
                self._end_session(session)
                return
            if delivery is None:
                if session.awaiting_pong_since is None and _is_ping(payload):
                    session.awaiting_pong_since = loop.time()
                continue
            session.frames_sent += 1
            self._account(session, delivery)

    def _account(self, session: Session, delivery: Delivery, *, sent: bool = True) -> None:
        """Count a frame written to the socket (or, sent=False, lost with its session)."""
        count = len(delivery.rows) if delivery.rows is not None else 1
        if sent:
            session.records_sent += count
            self.sent_by_tr[delivery.tr_id] += count
            self.frames_by_tr[delivery.tr_id] += 1
        else:
            self.unsent += count
        truth = self.truth
        if truth is None:
            return
        base: dict[str, Any] = {
            "session": session.id,
            "tr_id": delivery.tr_id,
            "tr_key": delivery.key,
            "frame": session.frames_sent if sent else None,
            "sent": sent,
            "at": time.time_ns() // 1000,
        }
        if delivery.fault:
            base["fault"] = delivery.fault
        if delivery.records is None or delivery.rows is None:
            truth.write({**base, "index": 0, "raw": delivery.raw})
            return
        for index, (rec, row) in enumerate(zip(delivery.records, delivery.rows, strict=True)):
            truth.write({**base, "record": rec.id, "index": index, "fields": row})

    async def _pinger(self, session: Session) -> None:
        interval, timeout = self.config.ping_interval, self.config.ping_timeout
        loop = asyncio.get_running_loop()
        step = max(0.01, min(interval, timeout) / 4)
        next_ping = loop.time() + interval
        while not session.closed:
            await asyncio.sleep(step)
            now = loop.time()
            since = session.awaiting_pong_since
            if since is not None and now - since > timeout:
                log.info("session %s: no PINGPONG answer for %.1fs, closing", session.id, timeout)
                self._end_session(session)
                with contextlib.suppress(Exception):
                    await session.ws.close()
                return
            if now >= next_ping:
                next_ping = now + interval
                if self.faults.stalled(time.monotonic()) == 0:
                    self._reply(session, wire.pingpong(self.clock.stamp()))

    # ---- data -----------------------------------------------------------------------------

    async def _pump(self) -> None:
        if self.replay is not None:
            await self._pump_replay(self.replay)
        elif self.config.load:
            await self._pump_load(self.config.load)
        else:
            while True:
                await asyncio.sleep(self.config.tick)
                self._advance_market()

    async def _pump_replay(self, replay: ReplaySource) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.tick)
            try:
                # the recording starts playing when the first client has subscribed
                if replay.started or self.subscribers:
                    self._dispatch_replay(replay.due(loop.time()))
            except Exception:  # keep serving whatever one tick did
                log.exception("simulator replay tick failed")

    def _advance_market(self) -> int:
        """The market's own events up to the clock's time; returns records delivered."""
        assert self.market is not None
        try:
            return self._dispatch(self.market.advance(self.clock.now()))
        except Exception:  # keep serving whatever one tick did
            log.exception("simulator market tick failed")
            return 0

    async def _pump_load(self, rate: float) -> None:
        """Load mode: extra events in chunks, paced against an absolute schedule.

        A chunk is LOAD_STEP_SECONDS' worth of records (at most MAX_LOAD_CHUNK), and the loop
        yields after each: writers and PINGPONG run between chunks. On schedule, a chunk's
        frames are sent spread over the time it stands for (`load_spread`): a live feed
        arrives continuously, and a burst of a whole step's frames at once would make every
        reader queue them (the last frame waits for all the others); behind schedule they go
        at once.
        """
        loop = asyncio.get_running_loop()
        market = self.market
        assert market is not None
        pacer = self.pacer = LoadPacer(rate, loop.time())  # loop.time() is time.monotonic()
        next_tick = loop.time()
        reported_off = 0
        next_report = loop.time() + LOAD_REPORT_EVERY
        while True:
            now = loop.time()
            if now >= next_tick:
                next_tick = now + self.config.tick
                pacer.add(self._advance_market())
            if not self.subscribers:
                pacer.pause(now)
                await asyncio.sleep(self.config.tick)
                continue
            chunk = max(1, min(MAX_LOAD_CHUNK, int(rate * LOAD_STEP_SECONDS)))
            owed = pacer.owed(now)
            if owed < chunk:
                await asyncio.sleep(min((chunk - owed) / rate, next_tick - now, self.config.tick))
                continue
            spread = chunk / rate if self.config.load_spread and owed < 2 * chunk else 0.0
            try:
                burst = market.burst(chunk, self.clock.now(), self.subscribers)
                delivered = self._dispatch(burst, spread=spread, start=now)
            except Exception:
                log.exception("simulator load chunk failed")
                delivered = chunk  # do not retry a failing chunk in a tight loop
            pacer.add(delivered)
            self.load_delivered += delivered
            if now >= next_report:
                next_report = now + LOAD_REPORT_EVERY
                if pacer.written_off > reported_off:
                    log.warning("load mode cannot keep up with %.0f records/s: %d records behind "
                                "schedule written off in the last %.0f s", rate,
                                pacer.written_off - reported_off, LOAD_REPORT_EVERY)  # fmt: skip
                    reported_off = pacer.written_off
            await asyncio.sleep(0)

    def _dispatch(
        self, records: list[GenRecord], *, spread: float = 0.0, start: float = 0.0
    ) -> int:
        """Frame and queue records to their subscribers; returns records delivered (once each).

        `spread` > 0: the frames are due evenly over [start, start + spread), in the order
        framed (each session's writer holds a frame back until it is due).
        """
        if not records:
            return 0
        queued: list[Delivery] = []
        groups: dict[tuple[str, str], list[GenRecord]] = {}
        for rec in records:
            groups.setdefault((rec.tr_id, rec.key), []).append(rec)
        delivered = 0
        batch = self.config.max_batch
        for (tr_id, key), recs in groups.items():
            subs = self.subscribers.get((tr_id, key))
            if not subs:
                self._log_unsent(recs)
                continue
            delivered += len(recs)
            encrypted = self.layouts[tr_id].encrypted
            extra = self.faults.extra_fields.get(tr_id)
            missing = self.faults.missing_fields.get(tr_id, 0)
            drift = "extra_field" if extra is not None else "missing_fields" if missing else None
            for i in range(0, len(recs), batch):
                chunk = recs[i : i + batch]
                rows = [r.fields for r in chunk]
                if extra is not None:
                    rows = [[*row, extra] for row in rows]
                elif missing:
                    rows = [row[: max(1, len(row) - missing)] for row in rows]
                plain: dict[str, str] = {}
                for session, sub_tr in list(subs.items()):
                    if encrypted:
                        frame = wire.encrypted_frame(sub_tr, rows, *session.cipher)
                    else:
                        frame = plain.get(sub_tr) or plain.setdefault(
                            sub_tr, wire.data_frame(sub_tr, rows)
                        )
                    fault = drift
                    payload: str | bytes = frame
                    kind = self.faults.pick_malformed()
                    if kind is not None:
                        payload = self.faults.malform(frame, kind)
                        fault = f"malformed:{kind}"
                    delivery = Delivery(sub_tr, key, chunk, rows, fault)
                    if spread:
                        queued.append(delivery)
                    self._enqueue(session, payload, delivery)
        if queued:
            step = spread / len(queued)
            for index, delivery in enumerate(queued):
                delivery.due = start + index * step
        return delivered

    def _enqueue(self, session: Session, payload: str | bytes, delivery: Delivery) -> None:
        if session.closed:
            return
        if session.queue.qsize() >= self.config.max_queue:
            log.warning("session %s: %d frames queued, closing slow consumer", session.id,
                        session.queue.qsize())  # fmt: skip
            self._end_session(session)
            with contextlib.suppress(Exception):
                transport = session.request.transport
                if transport is not None:
                    transport.abort()
            return
        session.queue.put_nowait((payload, delivery))

    def _log_unsent(self, records: list[GenRecord]) -> None:
        self.unsent += len(records)
        truth = self.truth
        if truth is None:
            return
        for rec in records:
            truth.write(
                {
                    "session": None,
                    "record": rec.id,
                    "tr_id": rec.tr_id,
                    "tr_key": rec.key,
                    "fields": rec.fields,
                    "sent": False,
                    "at": time.time_ns() // 1000,
                }
            )

    def _dispatch_replay(self, frames: list[ReplayFrame]) -> None:
        for fr in frames:
            canonical = canonical_tr_id(fr.tr_id) or fr.tr_id
            subs = self.subscribers.get((canonical, fr.key))
            if not subs:
                continue
            for session in list(subs):
                delivery = Delivery(fr.tr_id, fr.key, None, None, raw=fr.raw)
                self._enqueue(session, fr.raw, delivery)

    async def _scheduled_faults(self) -> None:
        """The periodic faults of the CLI flags (--drop-every, --stall-every, ...)."""
        cfg = self.config
        periods = {
            "drop": cfg.drop_every,
            "stall": cfg.stall_every,
            "expire": cfg.expire_keys_every,
        }
        active = {k: v for k, v in periods.items() if v}
        if not active:
            return
        loop = asyncio.get_running_loop()
        due = {k: loop.time() + v for k, v in active.items()}
        while True:
            await asyncio.sleep(0.1)
            now = loop.time()
            for name, at in due.items():
                if now < at:
                    continue
                due[name] = now + active[name]
                if name == "drop":
                    await self.apply_faults({"drop_connections": True})
                elif name == "stall":
                    await self.apply_faults({"stall_seconds": cfg.stall_seconds})
                else:
                    await self.apply_faults({"expire_approval_keys": True})


def _is_ping(payload: str | bytes) -> bool:
    return isinstance(payload, str) and payload.startswith('{"header":{"tr_id":"PINGPONG"')


def _ignore(tr_id: str, key: str) -> None:
    """Replay mode: subscriptions need no market."""


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode("utf-8")
