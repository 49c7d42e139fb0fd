"""Session state machine against a scripted fake KIS connection (no network)."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websocket

from kis_stream.settings import AppCredential, MarketHours
from producer.approval import ApprovalKeys
from producer.plan import SessionPlan, Subscription
from producer.session import FrameItem, Session, SessionConfig, SessionState, backoff_delay
from producer.status import StatusEvent

TEXT = websocket.ABNF.OPCODE_TEXT
PING_TEXT = '{"header":{"tr_id":"PINGPONG","datetime":"20261123091500"}}'


def ack(tr_id: str, tr_key: str, rt_cd: str = "0", msg1: str = "SUBSCRIBE SUCCESS") -> str:
    return json.dumps(
        {
            "header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"},
            "body": {
                "rt_cd": rt_cd,
                "msg_cd": "OPSP0000" if rt_cd == "0" else "OPSP9999",
                "msg1": msg1,
                "output": {"iv": "0123456789abcdef", "key": "k" * 32},
            },
        }
    )


class FakeConnection:
    """Acks every subscribe; then plays `script` (callables returning messages or raising)."""

    def __init__(self, server: FakeServer, script: list[Any]) -> None:
        self.server = server
        self.inbox: deque[Any] = deque()
        self.script = deque(script)
        self.sent: list[str] = []
        self.pongs: list[Any] = []
        self.timeout = 0.1
        self.closed = False
        self.subscribes = 0

    def send(self, payload: str, opcode: int = TEXT) -> None:
        self.sent.append(payload)
        doc = json.loads(payload)
        if "body" in doc:
            self.subscribes += 1
            sub = doc["body"]["input"]
            self.inbox.append(self.server.reply(sub["tr_id"], sub["tr_key"]))
            if self.subscribes == len(self.server.plan.subscriptions):
                self.inbox.extend(self.script)

    def pong(self, payload: str | bytes = "") -> None:
        self.pongs.append(payload)

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout or 0.1

    def recv_data(self, control_frame: bool = False) -> tuple[int, Any]:
        if not self.inbox:
            time.sleep(min(self.timeout, 0.02))
            raise websocket.WebSocketTimeoutException("timed out")
        item = self.inbox.popleft()
        if isinstance(item, BaseException):
            raise item
        if item == "SILENCE":
            self.inbox.appendleft("SILENCE")
            time.sleep(min(self.timeout, 0.02))
            raise websocket.WebSocketTimeoutException("timed out")
        return TEXT, item.encode() if isinstance(item, str) else item

    def close(self, status: int = 1000, reason: bytes = b"", timeout: float = 1.0) -> None:
        self.closed = True


class FakeServer:
    def __init__(self, plan: SessionPlan, scripts: list[list[Any]]) -> None:
        self.plan = plan
        self.scripts = deque(scripts)
        self.connections: list[FakeConnection] = []
        self.reply: Callable[[str, str], str] = ack

    def connect(self, url: str, timeout: float) -> FakeConnection:
        script = self.scripts.popleft() if self.scripts else ["SILENCE"]
        conn = FakeConnection(self, script)
        self.connections.append(conn)
        return conn


class FakeApprovals(ApprovalKeys):
    def __init__(self) -> None:
        super().__init__("http://unused", Path("/nonexistent"), ttl_s=1)
        self.issued = 0
        self.invalidated = 0

    def get(self, cred: AppCredential) -> str:
        self.issued += 1
        return f"approval-{self.issued}"

    def invalidate(self, cred: AppCredential) -> None:
        self.invalidated += 1


PLAN = SessionPlan(
    0,
    (
        Subscription("H0STCNT0", "005930"),
        Subscription("H0STASP0", "005930"),
        Subscription("H0STCNT0", "000660"),
    ),
)
CRED = AppCredential.parse("app-key-x:app-secret-y")


class Harness:
    def __init__(self, scripts: list[list[Any]], **config: Any) -> None:
        self.server = FakeServer(PLAN, scripts)
        self.frames: list[FrameItem] = []
        self.events: list[StatusEvent] = []
        self.approvals = FakeApprovals()
        defaults: dict[str, Any] = {
            "ws_url": "ws://fake",
            "subscribe_interval_s": 0.01,
            "reconnect_initial_s": 0.01,
            "reconnect_max_s": 0.05,
            "recv_timeout_s": 0.05,
        }
        defaults.update(config)
        self.session = Session(
            PLAN,
            CRED,
            self.approvals,
            SessionConfig(**defaults),
            on_frame=self.frames.append,
            on_status=self.events.append,
            connect=self.server.connect,
            run_id="r1",
            rng=random.Random(1),
        )

    def __enter__(self) -> Harness:
        self.session.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.stop()
        self.session.join(5)

    def wait(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events={[e.event for e in self.events]}")
            time.sleep(0.01)

    def named(self, event: str) -> list[StatusEvent]:
        return [e for e in self.events if e.event == event]


def data(symbol: str, n: int) -> str:
    return f"0|H0STCNT0|001|{symbol}^09000{n}^100"


def test_subscribes_the_plan_paced_streams_and_answers_pingpong() -> None:
    script = [data("005930", 1), PING_TEXT, data("000660", 2), "SILENCE"]
    with Harness([script], pingpong_reply="both") as h:
        h.wait(lambda: len(h.frames) >= 5)  # 3 acks + 2 data frames
        conn = h.server.connections[0]
        h.wait(lambda: len(conn.pongs) == 1)
        assert h.session.state is SessionState.STREAMING and h.session.ready
    subs = [json.loads(s) for s in conn.sent if '"body"' in s]
    assert [(d["body"]["input"]["tr_id"], d["body"]["input"]["tr_key"]) for d in subs] == [
        (s.tr_id, s.tr_key) for s in PLAN.subscriptions
    ]
    assert all(d["header"]["approval_key"] == "approval-1" for d in subs)
    assert conn.pongs == [PING_TEXT] and PING_TEXT in conn.sent  # pong frame and echo
    seqs = [f[1] for f in h.frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {f[0] for f in h.frames} == {"s0.r1.1"}
    assert [f[3] for f in h.frames if f[3][:1] == b"0"] == [
        data("005930", 1).encode(),
        data("000660", 2).encode(),
    ]
    assert len(h.named("subscribed")) == 3 and len(h.named("streaming")) == 1
    assert not h.named("gap")


def test_reconnects_resubscribes_and_reports_the_gap() -> None:
    lost = websocket.WebSocketConnectionClosedException("bye")
    with Harness([[data("005930", 1), lost], [data("005930", 2), "SILENCE"]]) as h:
        h.wait(lambda: len(h.named("gap")) == 1)
        h.wait(lambda: any(f[3] == data("005930", 2).encode() for f in h.frames))
    assert len(h.server.connections) == 2
    assert h.server.connections[1].subscribes == len(PLAN.subscriptions)
    (gap,) = h.named("gap")
    (disconnected,) = h.named("disconnected")
    assert disconnected.reason == "connection closed by the server"
    assert gap.gap_from is not None and gap.gap_to is not None and gap.gap_from <= gap.gap_to
    assert gap.gap_from == disconnected.gap_from
    assert gap.connection == "s0.r1.2" and gap.subscriptions == 3
    second = [f for f in h.frames if f[0] == "s0.r1.2"]
    assert second and second[0][1] == 1  # sequence restarts per connection
    assert h.session.reconnects == 1


def test_rejected_approval_is_invalidated_and_reissued() -> None:
    def reply_once_invalid(tr_id: str, tr_key: str) -> str:
        if h.approvals.issued == 1:
            return json.dumps(
                {
                    "header": {"tr_id": tr_id},
                    "body": {
                        "rt_cd": "1",
                        "msg_cd": "OPSP0011",
                        "msg1": "invalid approval : approval-1",
                    },
                }
            )
        return ack(tr_id, tr_key)

    h = Harness([[], ["SILENCE"]])
    h.server.reply = reply_once_invalid
    with h:
        h.wait(lambda: h.session.state is SessionState.STREAMING)
    assert h.approvals.invalidated == 1 and h.approvals.issued == 2
    assert h.named("disconnected")[0].reason == "approval key rejected"


def test_a_refused_registration_is_loud_and_not_ready() -> None:
    def refuse_one(tr_id: str, tr_key: str) -> str:
        if tr_key == "000660":
            return ack(tr_id, tr_key, rt_cd="9", msg1="JSON PARSING ERROR : invalid tr_key")
        return ack(tr_id, tr_key)

    h = Harness([["SILENCE"]])
    h.server.reply = refuse_one
    with h:
        h.wait(lambda: h.session.state is SessionState.STREAMING)
        assert not h.session.ready
    (failed,) = h.named("subscribe_failed")
    assert (failed.tr_id, failed.tr_key) == ("H0STCNT0", "000660")
    assert "INVALID_TR_KEY" in (failed.reason or "")


def test_an_invalid_tr_key_is_not_asked_again() -> None:
    def refuse_one(tr_id: str, tr_key: str) -> str:
        if tr_key == "000660":
            return ack(tr_id, tr_key, rt_cd="9", msg1="JSON PARSING ERROR : invalid tr_key")
        return ack(tr_id, tr_key)

    h = Harness([["SILENCE"]], reconnect_initial_s=0.05)
    h.server.reply = refuse_one
    with h:
        h.wait(lambda: h.session.state is SessionState.STREAMING)
        time.sleep(0.4)
    requests = [json.loads(p)["body"]["input"] for p in h.server.connections[0].sent]
    assert [r["tr_key"] for r in requests].count("000660") == 1
    assert len(h.server.connections) == 1


def test_a_transiently_refused_registration_is_retried_with_backoff_on_the_same_connection() -> (
    None
):
    asked: list[tuple[str, float]] = []

    def busy_twice(tr_id: str, tr_key: str) -> str:
        asked.append((tr_key, time.monotonic()))
        if tr_key == "000660" and [k for k, _ in asked].count("000660") <= 2:
            return ack(tr_id, tr_key, rt_cd="1", msg1="SYSTEM BUSY, TRY AGAIN")
        return ack(tr_id, tr_key)

    h = Harness([[]], reconnect_initial_s=0.1, reconnect_max_s=1.0)
    h.server.reply = busy_twice
    with h:
        h.wait(lambda: h.session.ready, timeout=5)
        assert Subscription("H0STCNT0", "000660") in h.session.subscribed
    assert len(h.server.connections) == 1  # no reconnect needed
    times = [t for k, t in asked if k == "000660"]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # jittered in [d/2, d], d doubling from 0.1
    failed = h.named("subscribe_failed")
    assert len(failed) == 2 and all("retry in" in (e.reason or "") for e in failed)
    assert [e.tr_key for e in h.named("subscribed")].count("000660") == 1
    order = [(e.event, e.tr_key) for e in h.events if e.tr_key == "000660"]
    assert order == [("subscribe_failed", "000660")] * 2 + [("subscribed", "000660")]


def test_silence_during_market_hours_recycles_the_connection() -> None:
    with Harness(
        [["SILENCE"], ["SILENCE"]],
        silence_timeout_s=0.2,
        market_hours=MarketHours.parse("always"),
    ) as h:
        h.wait(lambda: len(h.server.connections) >= 2)
    assert h.named("disconnected")[0].reason is not None
    assert "silent" in (h.named("disconnected")[0].reason or "")


def test_connect_failures_back_off_and_stop_promptly() -> None:
    attempts: list[float] = []

    def refuse(url: str, timeout: float) -> Any:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("nobody home")

    h = Harness([])
    h.session._connect = refuse
    with h:
        h.wait(lambda: len(attempts) >= 4)
    stopped = time.monotonic()
    assert h.session.state is SessionState.STOPPED
    assert stopped - attempts[-1] < 1.0
    assert "connect failed" in (h.named("disconnected")[0].reason or "")
    assert h.named("stopped")


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_is_capped_and_jittered(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(50)]
    expected = min(60.0, 2.0**attempt)
    assert all(expected / 2 <= d <= expected for d in delays)
    assert len(set(delays)) > 1


def test_stop_ends_a_streaming_session_within_a_receive_timeout() -> None:
    h = Harness([["SILENCE"]])
    h.session.start()
    h.wait(lambda: h.session.state is SessionState.STREAMING)
    begun = time.monotonic()
    h.session.stop()
    h.session.join(2)
    assert not threading.Thread.is_alive(h.session._thread)  # type: ignore[arg-type]
    assert time.monotonic() - begun < 1.0
    assert h.server.connections[0].closed


def test_an_unexpected_error_costs_a_reconnect_not_the_session() -> None:
    with Harness([[RuntimeError("bug")], ["SILENCE"]]) as h:
        h.wait(lambda: len(h.server.connections) == 2 and h.session.state is SessionState.STREAMING)
    assert "internal error: RuntimeError" in [e.reason for e in h.named("disconnected")]
