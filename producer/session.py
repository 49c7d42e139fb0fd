"""One KIS WebSocket session per app key: connect, subscribe, keep alive, reconnect.

A session runs on its own thread and does nothing but socket work: it reads every message,
stamps data frames with their receive time and a per-connection sequence number, and hands
them on through a non-blocking callback (the pipeline thread decodes and produces), so
Kafka never slows the socket down.

Lifecycle of one connection: approval key -> connect -> paced subscribe requests (KIS warns
that rapid connect/subscribe loops can get an app key or IP blocked) -> streaming. It
answers PINGPONG, recycles a connection that has been silent too long during market hours,
and after any loss reconnects with capped exponential backoff and jitter, resubscribes the
whole plan and reports the gap (from the last message received to the moment every
registration is acknowledged again) as a status event. A send that fails (a PINGPONG
answer, a subscribe request) does not drop the connection at once: what the server wrote
before it went away is still readable, so the session keeps reading and handing on frames
until the read fails, comes up empty or `drain_timeout_s` passes, and only then closes; the
gap starts at the last message so read. A registration KIS refuses is asked again on the
same connection after a backoff of its own (except an invalid tr_key); the session is not
ready while one is refused.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import websocket

from kis_stream.logging import register_secret
from kis_stream.settings import AppCredential, MarketHours
from producer.approval import ApprovalError, ApprovalKeys
from producer.marks import ReceiveMarks
from producer.plan import SessionPlan, Subscription
from producer.status import StatusEvent
from producer.system import KisError, KisErrorCode, PingPong, SubscribeAck, parse_system
from producer.ws_reader import BufferedConnection

log = logging.getLogger(__name__)

FrameItem = tuple[str, int, int, bytes]
"""(connection id, seq, received_at epoch us, raw message bytes)."""


class Connection(Protocol):
    """The slice of websocket.WebSocket a session uses (a fake one in unit tests)."""

    def recv_data(self, control_frame: bool = False) -> tuple[int, Any]: ...
    def send(self, payload: str, opcode: int = ...) -> Any: ...
    def pong(self, payload: str | bytes = "") -> Any: ...
    def settimeout(self, timeout: float | None) -> Any: ...
    def close(self, status: int = ..., reason: bytes = ..., timeout: float = ...) -> Any: ...


Connect = Callable[[str, float], Connection]


def websocket_connect(url: str, timeout: float) -> Connection:
    """websocket-client for the handshake and sends, a buffered reader for receiving."""
    # KIS text frames occasionally hold bytes that are not UTF-8: keep them, never fail on them.
    ws = websocket.create_connection(
        url, timeout=timeout, skip_utf8_validation=True, enable_multithread=True
    )
    return BufferedConnection(ws)


ALWAYS = MarketHours.parse("always")


class SessionState(enum.StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    STREAMING = "streaming"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    ws_url: str
    custtype: str = "P"
    subscribe_interval_s: float = 0.2
    reconnect_initial_s: float = 1.0
    reconnect_max_s: float = 60.0
    reconnect_reset_s: float = 60.0
    connect_timeout_s: float = 10.0
    silence_timeout_s: float = 60.0
    market_hours: MarketHours = ALWAYS
    pingpong_reply: str = "both"
    recv_timeout_s: float = 0.5
    drain_timeout_s: float = 2.0
    """After a failed send, how long at most to keep reading what the connection still holds."""


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with jitter: uniform in [d/2, d], d = min(cap, initial*2^n)."""
    delay = min(cap, initial * (2 ** min(attempt, 30)))
    return rng.uniform(delay / 2, delay)


class _Closed(Exception):
    """The connection ended; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _SendFailed(_Closed):
    """A send failed: the connection is lost, but what it already received is still readable."""


def _now_us() -> int:
    return time.time_ns() // 1000


class Session:
    """One app key's connection, kept alive on its own thread until `stop`."""

    def __init__(
        self,
        plan: SessionPlan,
        credential: AppCredential,
        approvals: ApprovalKeys,
        config: SessionConfig,
        *,
        on_frame: Callable[[FrameItem], None],
        on_status: Callable[[StatusEvent], None],
        on_state: Callable[[str, SessionState], None] | None = None,
        connect: Connect = websocket_connect,
        run_id: str | None = None,
        rng: random.Random | None = None,
        marks: ReceiveMarks | None = None,
    ) -> None:
        """``marks``: receive times are stamped through it and held until the pipeline has
        handed the frame on (producer/marks.py); a message not passed on is settled here."""
        self.plan = plan
        self._marks = marks
        self.name = plan.name
        self._credential = credential
        self._approvals = approvals
        self._config = config
        self._on_frame = on_frame
        self._on_status = on_status
        self._on_state = on_state
        self._connect = connect
        self._run_id = run_id or secrets.token_hex(3)
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._connections = 0
        self.state = SessionState.IDLE
        self.reconnects = 0
        self.subscribed: set[Subscription] = set()
        self.rejected: dict[Subscription, str] = {}
        self._gap_from: int | None = None
        self._gap_reason: str | None = None
        self._retry_due: list[tuple[float, Subscription]] = []
        self._retry_attempts: dict[Subscription, int] = {}

    # --- control ---
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"kis-session-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stop reading: the loop leaves within one receive timeout."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        return self.state is SessionState.STREAMING and not self.rejected

    def _set_state(self, state: SessionState) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(self.name, state)

    def _status(self, event: str, **fields: Any) -> None:
        self._on_status(StatusEvent(event=event, session=self.name, at=_now_us(), **fields))

    # --- the loop ---
    def run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    reason = self._one_connection()
                except Exception as exc:  # a bug must cost a reconnect, never the session
                    log.exception("session failed unexpectedly", extra={"session": self.name})
                    reason = f"internal error: {type(exc).__name__}"
                    self._mark_lost(reason)
                if self._stop.is_set():
                    break
                streamed = time.monotonic() - started
                if streamed >= self._config.reconnect_reset_s:
                    attempt = 0
                delay = backoff_delay(
                    attempt,
                    self._config.reconnect_initial_s,
                    self._config.reconnect_max_s,
                    self._rng,
                )
                attempt += 1
                self.reconnects += 1
                log.warning(
                    "session lost; reconnecting",
                    extra={"session": self.name, "reason": reason, "delay_s": round(delay, 3)},
                )
                self._set_state(SessionState.BACKOFF)
                self._stop.wait(delay)
        finally:
            self._set_state(SessionState.STOPPED)
            self._status("stopped", reason="shutdown")

    def _one_connection(self) -> str:
        """Connect, subscribe and stream until the connection ends; returns why it ended."""
        self._set_state(SessionState.CONNECTING)
        try:
            approval = self._approvals.get(self._credential)
        except ApprovalError as exc:
            self._mark_lost(str(exc))
            return str(exc)
        self._connections += 1
        conn_id = f"{self.name}.{self._run_id}.{self._connections}"
        try:
            conn = self._connect(self._config.ws_url, self._config.connect_timeout_s)
        except Exception as exc:  # any socket/handshake failure is a reason to back off
            reason = f"connect failed: {type(exc).__name__}: {exc}"
            self._mark_lost(reason)
            return reason
        self._conn = conn
        self.subscribed = set()
        self.rejected = {}
        self._status("connected", connection=conn_id)
        try:
            self._stream(conn, conn_id, approval)
            return "stopped"
        except _Closed as closed:
            self._mark_lost(closed.reason, connection=conn_id)
            return closed.reason
        finally:
            self._conn = None
            try:
                conn.close(timeout=1.0)
            except Exception:  # already gone; nothing to release
                log.debug("close failed", exc_info=True)

    def _mark_lost(self, reason: str, connection: str | None = None) -> None:
        if self._gap_from is None:
            self._gap_from = self._last_message_at or _now_us()
            self._gap_reason = reason
        self._status("disconnected", connection=connection, reason=reason, gap_from=self._gap_from)

    _last_message_at: int | None = None

    def _stream(self, conn: Connection, conn_id: str, approval: str) -> None:
        cfg = self._config
        pending = deque(self.plan.subscriptions)
        outstanding: deque[Subscription] = deque()
        next_send = time.monotonic()
        seq = 0
        last_data = time.monotonic()
        current_timeout = -1.0
        marks = self._marks
        stamp = _now_us if marks is None else marks.stamp
        unstamp = (lambda received_at: None) if marks is None else marks.settle
        self._retry_due, self._retry_attempts = [], {}
        failed: _SendFailed | None = None  # once a send failed: only read (drain), then close
        drain_until, drained_from = 0.0, 0
        self._set_state(SessionState.SUBSCRIBING)
        while not self._stop.is_set():
            now = time.monotonic()
            if failed is not None:
                if now >= drain_until:
                    raise self._drained(failed, seq - drained_from)
                timeout = max(0.001, min(cfg.recv_timeout_s, drain_until - now))
            else:
                if self._retry_due:
                    self._queue_due_retries(now, pending)
                if pending and now >= next_send:
                    sub = pending.popleft()
                    try:
                        self._send_subscribe(conn, approval, sub)
                    except _SendFailed as exc:
                        failed, drain_until = exc, now + cfg.drain_timeout_s
                        drained_from = seq
                        continue
                    outstanding.append(sub)
                    next_send = now + cfg.subscribe_interval_s
                if self.state is SessionState.SUBSCRIBING and not pending and not outstanding:
                    self._streaming(conn_id)
                    last_data = time.monotonic()
                if (
                    self.state is SessionState.STREAMING
                    and cfg.silence_timeout_s > 0
                    and now - last_data > cfg.silence_timeout_s
                    and cfg.market_hours.contains(dt.datetime.now(dt.UTC))
                ):
                    raise _Closed(f"silent for {cfg.silence_timeout_s:g}s during market hours")
                timeout = cfg.recv_timeout_s
                if pending:
                    timeout = max(0.001, min(timeout, next_send - time.monotonic()))
                if self._retry_due:
                    first_due = min(due for due, _ in self._retry_due)
                    timeout = max(0.001, min(timeout, first_due - time.monotonic()))
            if timeout != current_timeout:  # a syscall: not once per frame while streaming
                conn.settimeout(timeout)
                current_timeout = timeout
            try:
                opcode, data = conn.recv_data()
            except (OSError, websocket.WebSocketException) as exc:  # a timeout too
                if failed is not None:  # the read failed, closed or came up empty: drained
                    raise self._drained(failed, seq - drained_from) from None
                if isinstance(exc, websocket.WebSocketTimeoutException):
                    continue
                if isinstance(exc, websocket.WebSocketConnectionClosedException):
                    raise _Closed("connection closed by the server") from None
                raise _Closed(f"socket error: {type(exc).__name__}: {exc}") from None
            received_at = stamp()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                unstamp(received_at)
                if failed is not None:
                    raise self._drained(failed, seq - drained_from)
                raise _Closed("connection closed by the server")
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                unstamp(received_at)
                continue
            raw = bytes(data) if not isinstance(data, bytes) else data
            if not raw:
                unstamp(received_at)
                continue
            self._last_message_at = received_at
            if raw[0] != 0x7B:  # not "{": a data frame, or junk for the dead-letter topic
                seq += 1
                self._on_frame((conn_id, seq, received_at, raw))
                last_data = time.monotonic()
                continue
            message = parse_system(raw)
            if isinstance(message, PingPong):
                unstamp(received_at)
                if failed is None:
                    try:
                        self._answer_ping(conn, message)
                    except _SendFailed as exc:
                        failed, drain_until = exc, time.monotonic() + cfg.drain_timeout_s
                        drained_from = seq
                continue
            seq += 1
            self._on_frame((conn_id, seq, received_at, raw))  # acks carry keys: keep them
            if isinstance(message, SubscribeAck):
                self._on_ack(message, outstanding, conn_id)
            else:
                self._on_error(message, outstanding, conn_id)

    def _drained(self, failed: _SendFailed, frames: int) -> _SendFailed:
        """The drain after a failed send is over: the connection closes for that failure."""
        log.info(
            "read what the connection still held after a failed send",
            extra={"session": self.name, "reason": failed.reason, "frames": frames},
        )
        return failed

    def _queue_due_retries(self, now: float, pending: deque[Subscription]) -> None:
        due = [item for item in self._retry_due if item[0] <= now]
        for item in due:
            self._retry_due.remove(item)
            pending.append(item[1])  # sent at the subscribe pace, like the plan

    def _send_subscribe(self, conn: Connection, approval: str, sub: Subscription) -> None:
        request = json.dumps(
            {
                "header": {
                    "approval_key": approval,
                    "custtype": self._config.custtype,
                    "tr_type": "1",
                    "content-type": "utf-8",
                },
                "body": {"input": {"tr_id": sub.tr_id, "tr_key": sub.tr_key}},
            }
        )
        try:
            conn.send(request)
        except (OSError, websocket.WebSocketException) as exc:
            raise _SendFailed(f"send failed: {type(exc).__name__}") from None

    def _answer_ping(self, conn: Connection, ping: PingPong) -> None:
        mode = self._config.pingpong_reply
        try:
            if mode in ("pong", "both"):
                conn.pong(ping.raw)
            if mode in ("echo", "both"):
                conn.send(ping.raw)
        except (OSError, websocket.WebSocketException) as exc:
            raise _SendFailed(f"send failed: {type(exc).__name__}") from None

    def _take(
        self, outstanding: deque[Subscription], tr_id: str | None, tr_key: str | None
    ) -> Subscription | None:
        for sub in outstanding:
            if sub.tr_id == tr_id and (tr_key is None or sub.tr_key == tr_key):
                outstanding.remove(sub)
                return sub
        return outstanding.popleft() if outstanding else None

    def _on_ack(self, ack: SubscribeAck, outstanding: deque[Subscription], conn_id: str) -> None:
        register_secret(ack.key)
        register_secret(ack.iv)
        if not ack.subscribed:
            return
        sub = self._take(outstanding, ack.tr_id, ack.tr_key or None)
        if sub is None:
            return
        self._registered(sub)
        self._status(
            "subscribed",
            connection=conn_id,
            tr_id=sub.tr_id,
            tr_key=sub.tr_key,
            subscriptions=len(self.subscribed),
        )

    def _on_error(self, error: KisError, outstanding: deque[Subscription], conn_id: str) -> None:
        code = error.code
        if code is KisErrorCode.INVALID_APPROVAL:
            self._approvals.invalidate(self._credential)
            raise _Closed("approval key rejected")
        if code is KisErrorCode.INVALID_APPKEY:
            log.error("KIS rejected the app key", extra={"session": self.name})
            raise _Closed("app key rejected")
        if code is KisErrorCode.APPKEY_IN_USE:
            raise _Closed("app key already in use by another session")
        if code is KisErrorCode.NOT_FOUND:
            return
        sub = self._take(outstanding, error.tr_id, error.tr_key)
        if sub is None:
            log.warning(
                "unexpected KIS message",
                extra={"session": self.name, "code": str(code), "msg1": error.msg1},
            )
            return
        if code is KisErrorCode.ALREADY_SUBSCRIBED:
            self._registered(sub)
            return
        # Refused: loud, visible, and not ready until it is registered. An invalid tr_key
        # will not become valid; anything else (MAX SUBSCRIBE OVER while the server still
        # counts the previous connection's registrations, a busy or unknown error) is asked
        # again on this connection after a capped, jittered backoff of its own.
        reason = f"{code}: {error.msg1}"
        self.rejected[sub] = reason
        retry_in: float | None = None
        if code is not KisErrorCode.INVALID_TR_KEY:
            attempt = self._retry_attempts.get(sub, 0)
            self._retry_attempts[sub] = attempt + 1
            cfg = self._config
            retry_in = backoff_delay(
                attempt,
                max(cfg.reconnect_initial_s, cfg.subscribe_interval_s),
                cfg.reconnect_max_s,
                self._rng,
            )
            self._retry_due.append((time.monotonic() + retry_in, sub))
            reason += f" (retry in {retry_in:.1f}s)"
        log.error(
            "KIS refused a registration",
            extra={
                "session": self.name,
                "tr_id": sub.tr_id,
                "tr_key": sub.tr_key,
                "code": str(code),
                "msg1": error.msg1,
                "retry_in_s": None if retry_in is None else round(retry_in, 3),
            },
        )
        self._status(
            "subscribe_failed",
            connection=conn_id,
            tr_id=sub.tr_id,
            tr_key=sub.tr_key,
            reason=reason,
            subscriptions=len(self.subscribed),
        )

    def _registered(self, sub: Subscription) -> None:
        self.subscribed.add(sub)
        self._retry_attempts.pop(sub, None)
        if self.rejected.pop(sub, None) is not None:
            log.info(
                "registration accepted on retry",
                extra={"session": self.name, "tr_id": sub.tr_id, "tr_key": sub.tr_key},
            )

    def _streaming(self, conn_id: str) -> None:
        self._set_state(SessionState.STREAMING)
        now = _now_us()
        self._status("streaming", connection=conn_id, subscriptions=len(self.subscribed))
        if self._gap_from is not None:
            self._status(
                "gap",
                connection=conn_id,
                gap_from=self._gap_from,
                gap_to=now,
                reason=self._gap_reason,
                subscriptions=len(self.subscribed),
            )
            self._gap_from = None
            self._gap_reason = None
