"""A client written only from PROTOCOL.md runs against the simulator without special cases.

Deliberately independent of the project's producer code: approval key over HTTP, connect,
subscribe, answer PINGPONG the way the broker's sample does (a pong control frame carrying
the text), split `enc|tr_id|count|payload` frames, decrypt AES-256-CBC notices with the key
and iv of the acknowledgement, and cut payloads into `count` equal records.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import urllib.request
from collections import Counter
from typing import Any

import websocket
from Crypto.Cipher import AES
from Crypto.Util.Padding import unpad

from simulator import MarketConfig, SimConfig, run_in_thread

CATALOGUE_WIDTHS = {"H0STCNT0": 47, "H0STASP0": 63, "H0STCNI0": 26, "H0NXCNT0": 46}


class ProtocolClient:
    """Approval -> connect -> subscribe -> PINGPONG -> decode, per PROTOCOL.md §1-3."""

    def __init__(self, rest_base: str, ws_base: str, app_key: str, app_secret: str) -> None:
        body = json.dumps(
            {"grant_type": "client_credentials", "appkey": app_key, "secretkey": app_secret}
        ).encode()
        req = urllib.request.Request(
            f"{rest_base}/oauth2/Approval", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            self.approval_key = json.load(resp)["approval_key"]
        self.ws = websocket.create_connection(f"{ws_base}/tryitout/H0STCNT0", timeout=5)
        self.cipher: dict[str, tuple[bytes, bytes]] = {}
        self.acks: list[dict[str, Any]] = []
        self.pings = 0

    def subscribe(self, tr_id: str, tr_key: str) -> None:
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "approval_key": self.approval_key,
                        "custtype": "P",
                        "tr_type": "1",
                        "content-type": "utf-8",
                    },
                    "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}},
                }
            )
        )

    def handle_system(self, text: str) -> None:
        msg = json.loads(text)
        header = msg.get("header", {})
        if header.get("tr_id") == "PINGPONG":
            self.pings += 1
            self.ws.pong(text)
            return
        self.acks.append(msg)
        body = msg.get("body", {})
        if body.get("rt_cd") == "0" and header.get("encrypt") == "Y":
            out = body["output"]
            self.cipher[header["tr_id"]] = (out["key"].encode(), out["iv"].encode())

    def decode(self, text: str) -> tuple[str, list[list[str]]]:
        enc, tr_id, count, payload = text.split("|", 3)
        if enc == "1":
            key, iv = self.cipher[tr_id]
            raw = AES.new(key, AES.MODE_CBC, iv).decrypt(base64.b64decode(payload))
            payload = unpad(raw, AES.block_size).decode("utf-8")
        fields = payload.split("^")
        n = int(count)
        width = len(fields) // n
        assert width * n == len(fields)
        return tr_id, [fields[i * width : (i + 1) * width] for i in range(n)]

    def run(self, seconds: float) -> list[tuple[str, list[str]]]:
        records: list[tuple[str, list[str]]] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ws.settimeout(max(0.05, end - time.monotonic()))
            try:
                text = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                break
            assert isinstance(text, str)
            if text[0] == "{":
                self.handle_system(text)
            elif text[0] in "01":
                tr_id, recs = self.decode(text)
                records.extend((tr_id, r) for r in recs)
        return records


def test_a_protocol_md_client_receives_plain_and_encrypted_records() -> None:
    config = SimConfig(
        market=MarketConfig(seed=4, rate=20.0, order_interval=0.5),
        date=dt.date(2026, 10, 5),
        start=9 * 3600 + 300,  # NXT's main market opens at 09:00:30
        ping_interval=0.3,
        ping_timeout=1.0,
    )
    with run_in_thread(config) as sim:
        client = ProtocolClient(sim.base_url, sim.ws_url, "my-app-key", "my-app-secret")
        try:
            for tr_id, key in [("H0STCNT0", "005930"), ("H0STASP0", "005930"),
                               ("H0NXCNT0", "000660"), ("H0STCNI0", "HTS0001")]:  # fmt: skip
                client.subscribe(tr_id, key)
            records = client.run(3.0)
            still_connected = client.ws.connected
        finally:
            client.ws.close()
    assert [a["body"]["msg1"] for a in client.acks] == ["SUBSCRIBE SUCCESS"] * 4
    assert client.pings >= 3 and still_connected  # answered with pong frames, kept alive
    widths = Counter((tr_id, len(fields)) for tr_id, fields in records)
    assert set(widths) == {(tr, CATALOGUE_WIDTHS[tr]) for tr in CATALOGUE_WIDTHS}
    notices = [f for tr, f in records if tr == "H0STCNI0"]
    assert all(f[0] == "HTS0001" for f in notices)
    assert all(f[0] == "005930" for tr, f in records if tr in ("H0STCNT0", "H0STASP0"))
    assert all(f[0] == "000660" for tr, f in records if tr == "H0NXCNT0")
