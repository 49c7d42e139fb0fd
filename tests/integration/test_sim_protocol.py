"""Protocol conformance of the simulator server (no Kafka needed): HTTP, WebSocket, faults."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from producer.frames import FrameDecoder
from producer.records import DecodeError, Record
from simulator import MarketConfig, SimConfig, SimHandle, run_in_thread
from simulator.truth import read_truth

DATE = dt.date(2026, 10, 5)


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def approval(sim: SimHandle, appkey: str = "demo-key", secret: str = "demo-secret") -> str:
    status, body = http(
        sim.base_url + "/oauth2/Approval",
        {"grant_type": "client_credentials", "appkey": appkey, "secretkey": secret},
    )
    assert status == 200, body
    return str(body["approval_key"])


def request(key: str | None, tr_id: str, tr_key: str, tr_type: str = "1") -> str:
    header: dict[str, str] = {"custtype": "P", "tr_type": tr_type, "content-type": "utf-8"}
    if key is not None:
        header["approval_key"] = key
    return json.dumps({"header": header, "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}}})


def connect(sim: SimHandle, path: str = "/tryitout/H0STCNT0") -> websocket.WebSocket:
    ws = websocket.create_connection(sim.ws_url + path, timeout=5)
    return ws


def next_json(ws: websocket.WebSocket, skip_ping: bool = True) -> dict[str, Any]:
    """The next JSON system message, answering PINGPONGs and skipping data frames."""
    while True:
        msg = ws.recv()
        if isinstance(msg, bytes) or not msg.startswith("{"):
            continue
        obj: dict[str, Any] = json.loads(msg)
        if skip_ping and obj.get("header", {}).get("tr_id") == "PINGPONG":
            ws.send(msg)
            continue
        return obj


def ask(ws: websocket.WebSocket, text: str) -> dict[str, Any]:
    ws.send(text)
    return next_json(ws)


def data_frames(ws: websocket.WebSocket, seconds: float) -> Iterator[str | bytes]:
    """Data frames received for `seconds`, answering PINGPONG by echo."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ws.settimeout(max(0.05, end - time.monotonic()))
        try:
            msg = ws.recv()
        except websocket.WebSocketTimeoutException:
            break
        if isinstance(msg, str) and msg.startswith('{"header":{"tr_id":"PINGPONG"'):
            ws.send(msg)
        elif isinstance(msg, bytes) or not msg.startswith("{"):
            yield msg


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    with run_in_thread(SimConfig(market=MarketConfig(seed=5, rate=20.0), date=DATE)) as handle:
        yield handle


def started(**kwargs: Any) -> SimHandle:
    kwargs.setdefault("date", DATE)
    return run_in_thread(SimConfig(**kwargs))


# ---- approval ---------------------------------------------------------------------------


def test_approval_in_demo_mode_accepts_any_key(sim: SimHandle) -> None:
    key = approval(sim, "anything", "whatever")
    assert len(key) == 36 and key != approval(sim, "anything", "whatever")


def test_approval_rejects_unknown_keys_and_bad_secrets_like_kis() -> None:
    with started(app_keys={"KEY1": "SECRET1"}) as sim:
        url = sim.base_url + "/oauth2/Approval"
        ok = {"grant_type": "client_credentials", "appkey": "KEY1", "secretkey": "SECRET1"}
        assert http(url, ok)[0] == 200
        status, body = http(url, {**ok, "appkey": "OTHER"})
        assert status == 403 and body["error_code"] == "EGW00103"
        assert set(body) == {"error_code", "error_description"}
        status, body = http(url, {**ok, "secretkey": "wrong"})
        assert status == 403 and body["error_code"] == "EGW00105"
        status, body = http(url, {**ok, "grant_type": "password"})
        assert status == 403 and body["error_code"].startswith("EGW")


def test_plain_get_on_a_path_describes_the_service(sim: SimHandle) -> None:
    with urllib.request.urlopen(sim.base_url + "/", timeout=5) as resp:
        assert json.load(resp)["websocket"] == sim.ws_url


# ---- subscribe / unsubscribe ------------------------------------------------------------


def test_subscribe_acknowledgement_shape_and_per_session_cipher(sim: SimHandle) -> None:
    key = approval(sim)
    ws = connect(sim, "/")
    try:
        plain = ask(ws, request(key, "H0STCNT0", "005930"))
        assert plain["header"] == {"tr_id": "H0STCNT0", "tr_key": "005930", "encrypt": "N"}
        body = plain["body"]
        assert (body["rt_cd"], body["msg_cd"], body["msg1"]) == (
            "0",
            "OPSP0000",
            "SUBSCRIBE SUCCESS",
        )
        assert len(body["output"]["key"]) == 32 and len(body["output"]["iv"]) == 16
        notice = ask(ws, request(key, "H0STCNI9", "myhtsid"))
        assert notice["header"] == {"tr_id": "H0STCNI9", "tr_key": "myhtsid", "encrypt": "Y"}
        assert notice["body"]["output"] == body["output"]
        again = ask(ws, request(key, "H0STCNT0", "005930"))
        assert (again["body"]["msg_cd"], again["body"]["msg1"]) == (
            "OPSP0002",
            "ALREADY IN SUBSCRIBE",
        )
        assert again["body"]["rt_cd"] != "0"
    finally:
        ws.close()


def test_unsubscribe_success_and_not_found(sim: SimHandle) -> None:
    key = approval(sim)
    ws = connect(sim)
    try:
        ask(ws, request(key, "H0STASP0", "000660"))
        done = ask(ws, request(key, "H0STASP0", "000660", tr_type="2"))
        assert done["body"]["rt_cd"] == "0" and done["body"]["msg1"] == "UNSUBSCRIBE SUCCESS"
        missing = ask(ws, request(key, "H0STASP0", "000660", tr_type="2"))
        assert missing["body"]["msg_cd"] == "OPSP0003"
        assert missing["body"]["msg1"] == "UNSUBSCRIBE ERROR(not found!)"
    finally:
        ws.close()


def test_registration_limit_registers_nothing_past_it() -> None:
    with started(max_subscriptions=3) as sim:
        key = approval(sim)
        ws = connect(sim)
        try:
            for code in ("005930", "000660", "035420"):
                assert ask(ws, request(key, "H0STCNT0", code))["body"]["rt_cd"] == "0"
            over = ask(ws, request(key, "H0STCNT0", "005380"))
            assert over["body"]["msg1"] == "MAX SUBSCRIBE OVER" and over["body"]["rt_cd"] != "0"
            assert over["body"]["msg_cd"] == "OPSP0008"
            subs = sim.stats()["sessions"][0]["subscriptions"]
            assert len(subs) == 3 and {"tr_id": "H0STCNT0", "tr_key": "005380"} not in subs
            # releasing one frees a slot
            ask(ws, request(key, "H0STCNT0", "005930", tr_type="2"))
            assert ask(ws, request(key, "H0STCNT0", "005380"))["body"]["rt_cd"] == "0"
        finally:
            ws.close()


@pytest.mark.parametrize(
    ("tr_id", "tr_key", "msg1"),
    [("H0STCNT0", "", "JSON PARSING ERROR : invalid tr_key"),
     ("H0STCNT0", "59", "JSON PARSING ERROR : invalid tr_key"),
     ("HDFSCNT0", "AAPL", "JSON PARSING ERROR : invalid tr_key"),
     ("H0XXXXX0", "005930", "JSON PARSING ERROR : invalid tr_id")],
)  # fmt: skip
def test_invalid_requests_get_parse_errors(
    sim: SimHandle, tr_id: str, tr_key: str, msg1: str
) -> None:
    key = approval(sim)
    ws = connect(sim)
    try:
        reply = ask(ws, request(key, tr_id, tr_key))
        assert reply["body"]["msg1"] == msg1 and reply["body"]["rt_cd"] == "9"
        assert "output" not in reply["body"]
    finally:
        ws.close()


def test_garbage_and_headerless_messages_do_not_break_the_session(sim: SimHandle) -> None:
    key = approval(sim)
    ws = connect(sim)
    try:
        reply = ask(ws, json.dumps({"body": {"input": {"tr_id": "H0STCNT0", "tr_key": "005930"}}}))
        assert "header" not in reply and reply["body"]["msg1"].endswith("header not found")
        assert ask(ws, "not json at all")["body"]["rt_cd"] == "9"
        ws.send_binary(b"\xff\xfe\x00")
        assert next_json(ws)["body"]["rt_cd"] == "9"
        assert ask(ws, request(key, "H0STCNT0", "005930"))["body"]["rt_cd"] == "0"
    finally:
        ws.close()


def test_invalid_missing_and_expired_approval_keys() -> None:
    with started(approval_ttl=0.5) as sim:
        ws = connect(sim)
        try:
            bogus = "00000000-1111-2222-3333-444444444444"
            reply = ask(ws, request(bogus, "H0STCNT0", "005930"))
            assert reply["body"]["msg_cd"] == "OPSP0011"
            assert reply["body"]["msg1"].startswith("invalid approval : ")
            assert bogus not in reply["body"]["msg1"]  # secrets are masked
            missing = ask(ws, request(None, "H0STCNT0", "005930"))
            assert missing["body"]["msg1"] == "invalid appkey : NOT FOUND"
            key = approval(sim)
            assert ask(ws, request(key, "H0STCNT0", "005930"))["body"]["rt_cd"] == "0"
            time.sleep(0.7)
            expired = ask(ws, request(key, "H0STASP0", "005930"))
            assert expired["body"]["msg_cd"] == "OPSP0011"
        finally:
            ws.close()


def test_one_session_per_app_key() -> None:
    with started() as sim:
        first, second = connect(sim), connect(sim)
        try:
            k1 = approval(sim, "samekey")
            k2 = approval(sim, "samekey")
            assert ask(first, request(k1, "H0STCNT0", "005930"))["body"]["rt_cd"] == "0"
            busy = ask(second, request(k2, "H0STCNT0", "000660"))
            assert busy["body"] == {
                "rt_cd": "9",
                "msg_cd": "OPSP8996",
                "msg1": "ALREADY IN USE appkey",
            }
            other = approval(sim, "another-key")
            assert ask(second, request(other, "H0STCNT0", "000660"))["body"]["rt_cd"] == "0"
            first.close()
            third = connect(sim)
            deadline = time.monotonic() + 5
            while True:  # the server notices the close asynchronously
                reply = ask(third, request(k1, "H0STCNT0", "005930"))
                if reply["body"]["rt_cd"] == "0" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert reply["body"]["rt_cd"] == "0"
            third.close()
        finally:
            first.close()
            second.close()


# ---- PINGPONG -----------------------------------------------------------------------------


def _alive_after(sim: SimHandle, answer: Callable[[websocket.WebSocket, str], None] | None,
                 seconds: float) -> bool:  # fmt: skip
    ws = connect(sim)
    pings = 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ws.settimeout(0.2)
            try:
                msg = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException:
                return False
            if msg == "" and not ws.connected:
                return False
            if isinstance(msg, str) and '"PINGPONG"' in msg:
                header = json.loads(msg)["header"]
                assert len(header["datetime"]) == 14
                pings += 1
                if answer is not None:
                    answer(ws, msg)
        assert pings >= 2
        return ws.connected
    finally:
        ws.close()


def test_pingpong_answered_by_echo_or_pong_frame_keeps_the_session() -> None:
    with started(ping_interval=0.2, ping_timeout=1.0) as sim:

        def echo(ws: websocket.WebSocket, msg: str) -> None:
            ws.send(msg)

        def pong(ws: websocket.WebSocket, msg: str) -> None:
            ws.pong(msg)

        assert _alive_after(sim, echo, 3.0)
        assert _alive_after(sim, pong, 3.0)


def test_silent_client_is_disconnected() -> None:
    with started(ping_interval=0.2, ping_timeout=1.0) as sim:
        assert not _alive_after(sim, None, 4.0)
        assert sim.stats()["sessions"] == []


# ---- data ---------------------------------------------------------------------------------


def test_plain_and_encrypted_frames_decode_with_the_project_decoder(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    config = SimConfig(market=MarketConfig(seed=9, rate=30.0, order_interval=0.5), date=DATE,
                       truth=truth)  # fmt: skip
    with run_in_thread(config) as sim:
        key = approval(sim)
        ws = connect(sim)
        decoder = FrameDecoder(business_date=lambda: DATE)
        try:
            for tr_id, tr_key in [("H0STCNT0", "005930"), ("H0STASP0", "005930"),
                                  ("H0UNCNT0", "005930"), ("H0STCNI0", "hts01"),
                                  ("HDFSCNT0", "DNASAAPL")]:  # fmt: skip
                ack = ask(ws, request(key, tr_id, tr_key))
                out = ack["body"]["output"]
                decoder.set_key(tr_id, out["key"], out["iv"])
            frames = list(data_frames(ws, 3.0))
        finally:
            ws.close()
    records: list[Record] = []
    for frame in frames:
        decoded = decoder.decode(frame, received_at=0)
        assert not isinstance(decoded, DecodeError), decoded
        records.extend(decoded)
    by_tr = {r.tr_id for r in records}
    assert {"H0STCNT0", "H0STASP0", "H0UNCNT0", "H0STCNI0", "HDFSCNT0"} <= by_tr
    assert all(r.extra is None for r in records)
    assert any(isinstance(f, str) and f.startswith("1|H0STCNI0|") for f in frames)
    assert any(isinstance(f, str) and int(f.split("|")[2]) > 1 for f in frames), (
        "no multi-record frame"
    )
    assert {r.symbol for r in records if r.tr_id == "H0STCNT0"} == {"005930"}
    # ground truth: every received record is in the log, in order, with the same fields
    sent = [e for e in read_truth(truth) if e["sent"]]
    assert [e["seq"] for e in sent] == sorted(e["seq"] for e in sent)
    assert len(sent) >= len(records)
    received = [(r.tr_id, r.index) for r in records]
    logged = [(e["tr_id"], e["index"]) for e in sent]
    # frames sent while the client was still subscribing were skipped by `ask`: what it
    # received afterwards is one unbroken run of what was sent
    start = next(
        (k for k in range(len(logged) - len(received) + 1)
         if logged[k : k + len(received)] == received),
        None,
    )  # fmt: skip
    assert start is not None, "received records are not a run of the truth log"
    first_trade = next(r for r in records if r.tr_id == "H0STCNT0")
    truth_trade = next(e for e in sent[start:] if e["tr_id"] == "H0STCNT0")
    assert str(first_trade.fields["stck_prpr"]) == truth_trade["fields"][2]


def test_truth_marks_records_generated_while_nobody_listens(tmp_path: Path) -> None:
    truth = tmp_path / "t.jsonl"
    with started(market=MarketConfig(seed=2, rate=30.0), truth=truth) as sim:
        key = approval(sim)
        ws = connect(sim)
        ask(ws, request(key, "H0STCNT0", "005930"))
        list(data_frames(ws, 0.5))
        ask(ws, request(key, "H0STCNT0", "005930", tr_type="2"))
        time.sleep(0.5)
        ws.close()
    entries = read_truth(truth)
    assert any(e["sent"] for e in entries)
    unsent = [e for e in entries if not e["sent"]]
    assert unsent and all(e["session"] is None and e["tr_id"] == "H0STCNT0" for e in unsent)
    assert len({e["seq"] for e in entries}) == len(entries)


# ---- faults and stats -----------------------------------------------------------------------


def test_drop_connections_fault_closes_sockets(sim: SimHandle) -> None:
    key = approval(sim)
    ws = connect(sim)
    ask(ws, request(key, "H0STCNT0", "005930"))
    status, body = http(sim.base_url + "/_sim/faults", {"drop_connections": True})
    assert status == 200 and body["dropped"] == 1
    ws.settimeout(3)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        for _ in range(1000):
            if ws.recv() == "":
                raise websocket.WebSocketConnectionClosedException("closed")
    ws.close()


def test_malformed_and_extra_field_faults_reach_the_client(sim: SimHandle) -> None:
    key = approval(sim)
    ws = connect(sim)
    decoder = FrameDecoder(business_date=lambda: DATE)
    try:
        ask(ws, request(key, "H0STCNT0", "005930"))
        ask(ws, request(key, "H0STASP0", "005930"))
        sim.set_faults({"extra_field": {"tr_id": "H0STCNT0", "value": "NEW"}})
        list(data_frames(ws, 0.2))  # drain frames queued before the fault
        extra = [decoder.decode(f, received_at=0) for f in data_frames(ws, 1.5)]
        trades = [r for d in extra if isinstance(d, list) for r in d if r.tr_id == "H0STCNT0"]
        assert trades and all(r.extra == ["NEW"] for r in trades)
        books = [r for d in extra if isinstance(d, list) for r in d if r.tr_id == "H0STASP0"]
        assert books and all(r.extra is None for r in books)
        status, _ = http(sim.base_url + "/_sim/faults", {"clear": True, "malformed_rate": 1.0})
        assert status == 200
        list(data_frames(ws, 0.2))
        bad = [decoder.decode(f, received_at=0) for f in data_frames(ws, 1.0)]
        assert bad and all(isinstance(d, DecodeError) for d in bad)
    finally:
        ws.close()


def test_bad_fault_command_is_a_400(sim: SimHandle) -> None:
    status, body = http(sim.base_url + "/_sim/faults", {"malformed_rate": "lots"})
    assert status == 400 and "malformed_rate" in body["error"]


def test_stall_fault_silences_the_server_then_delivers(sim: SimHandle) -> None:
    key = approval(sim)
    ws = connect(sim)
    try:
        ask(ws, request(key, "H0STASP0", "005930"))
        assert list(data_frames(ws, 0.5))
        sim.set_faults({"stall_seconds": 1.0})
        list(data_frames(ws, 0.1))
        assert list(data_frames(ws, 0.6)) == []
        assert list(data_frames(ws, 1.0))
    finally:
        ws.close()


def test_expire_fault_invalidates_issued_keys(sim: SimHandle) -> None:
    key = approval(sim)
    ws = connect(sim)
    try:
        assert ask(ws, request(key, "H0STCNT0", "005930"))["body"]["rt_cd"] == "0"
        assert sim.set_faults({"expire_approval_keys": True})["expired_approval_keys"] >= 1
        assert ask(ws, request(key, "H0STASP0", "005930"))["body"]["msg_cd"] == "OPSP0011"
        fresh = approval(sim)
        assert ask(ws, request(fresh, "H0STASP0", "005930"))["body"]["rt_cd"] == "0"
    finally:
        ws.close()


def test_stats_count_what_was_sent(sim: SimHandle) -> None:
    key = approval(sim)
    ws = connect(sim)
    try:
        ask(ws, request(key, "H0STCNT0", "005930"))
        ask(ws, request(key, "H0STASP0", "005930"))
        received = 0
        for frame in data_frames(ws, 1.5):
            assert isinstance(frame, str)
            received += int(frame.split("|")[2])
    finally:
        ws.close()
    with urllib.request.urlopen(sim.base_url + "/_sim/stats", timeout=5) as resp:
        stats = json.load(resp)
    assert stats["records_sent"] >= received > 0
    assert set(stats["records_sent_by_tr"]) == {"H0STCNT0", "H0STASP0"}


# ---- replay --------------------------------------------------------------------------------


def test_replay_serves_recorded_frames_to_matching_subscriptions(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    lines = []
    for i in range(20):
        code = "005930" if i % 2 == 0 else "000660"
        frame = f"0|H0STCNT0|001|{code}^0900{i:02d}^{71000 + i * 100}"
        lines.append(json.dumps({"received_at": 1_000_000 + i * 50_000, "frame": frame}))
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with started(replay=path, replay_speed=2.0) as sim:
        key = approval(sim)
        ws = connect(sim)
        try:
            ask(ws, request(key, "H0STCNT0", "005930"))
            frames = list(data_frames(ws, 1.5))
        finally:
            ws.close()
        progress = sim.stats()["replay"]
    assert frames and all(isinstance(f, str) and "|005930^" in f for f in frames)
    assert frames == sorted(frames)  # recorded order kept
    assert progress["done"]


def test_load_mode_delivers_valid_multi_record_frames() -> None:
    config = SimConfig(market=MarketConfig(seed=3), date=DATE, start=9 * 3600 + 300, load=5000.0)
    with run_in_thread(config) as sim:
        key = approval(sim)
        ws = connect(sim)
        decoder = FrameDecoder(business_date=lambda: DATE)
        try:
            for tr_id in ("H0STCNT0", "H0STASP0", "H0UNASP0"):
                ask(ws, request(key, tr_id, "005930"))
            frames = list(data_frames(ws, 1.0))
        finally:
            ws.close()
    decoded = [decoder.decode(f, received_at=0) for f in frames]
    assert decoded and all(isinstance(d, list) for d in decoded)
    assert max(len(d) for d in decoded if isinstance(d, list)) > 1


def test_periodic_drop_flag_disconnects_clients() -> None:
    with started(drop_every=0.5) as sim:
        ws = connect(sim)
        try:
            ws.settimeout(5)
            with pytest.raises((websocket.WebSocketConnectionClosedException, OSError)):
                for _ in range(1000):
                    if ws.recv() == "":
                        raise websocket.WebSocketConnectionClosedException("closed")
        finally:
            ws.close()


def test_frames_lost_with_a_dropped_session_are_in_the_truth_as_unsent(tmp_path: Path) -> None:
    truth = tmp_path / "t.jsonl"
    with started(market=MarketConfig(seed=2, rate=30.0), truth=truth) as sim:
        key = approval(sim)
        ws = connect(sim)
        ask(ws, request(key, "H0STASP0", "005930"))
        sim.set_faults({"stall_seconds": 5})
        time.sleep(0.6)  # frames pile up in the session's queue
        assert sim.set_faults({"drop_connections": True})["dropped"] == 1
        ws.close()
    lost = [e for e in read_truth(truth) if e["session"] == "s1" and not e["sent"]]
    assert lost and all(e["frame"] is None and e["tr_id"] == "H0STASP0" for e in lost)
