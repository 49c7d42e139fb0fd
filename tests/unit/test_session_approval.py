"""Approval keys: issued once, cached (0600, no secret in the name), refreshed, errors clear."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kis_stream.logging import redact
from kis_stream.settings import AppCredential
from producer.approval import ApprovalError, ApprovalKeys


class FakeKis:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.status = 200
        self.reply: dict[str, str] | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                reply = owner.reply or {"approval_key": f"approval-{len(owner.requests):04d}"}
                data = json.dumps(reply).encode()
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def kis() -> Iterator[FakeKis]:
    fake = FakeKis()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


CRED = AppCredential.parse("PSkey-123456:secret-abcdef")


def test_issues_once_and_reuses_the_cached_key_across_instances(
    kis: FakeKis, tmp_path: Path
) -> None:
    keys = ApprovalKeys(kis.url, tmp_path, ttl_s=3600)
    assert keys.get(CRED) == "approval-0001"
    assert keys.get(CRED) == "approval-0001"
    assert ApprovalKeys(kis.url, tmp_path, ttl_s=3600).get(CRED) == "approval-0001"
    assert kis.requests == [
        {"grant_type": "client_credentials", "appkey": "PSkey-123456", "secretkey": "secret-abcdef"}
    ]
    (cache,) = tmp_path.iterdir()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert "PSkey" not in cache.name and "secret" not in cache.read_text()
    assert redact("key approval-0001") == "key ***"  # registered for log redaction


def test_expired_or_rejected_keys_are_reissued(kis: FakeKis, tmp_path: Path) -> None:
    keys = ApprovalKeys(kis.url, tmp_path, ttl_s=3600)
    keys.get(CRED)
    keys.invalidate(CRED)
    assert keys.get(CRED) == "approval-0002"
    stale = ApprovalKeys(kis.url, tmp_path, ttl_s=0.0001)
    assert stale.get(CRED) == "approval-0003"
    other = AppCredential.parse("PSother:s2")
    assert keys.get(other) == "approval-0004"  # one key per app key
    assert ApprovalKeys(kis.url + "/", tmp_path, ttl_s=3600).get(CRED) == "approval-0003"


def test_http_errors_and_bad_replies_are_approval_errors(kis: FakeKis, tmp_path: Path) -> None:
    kis.status = 403
    kis.reply = {"error_code": "EGW00103", "error_description": "invalid AppKey"}
    keys = ApprovalKeys(kis.url, tmp_path, ttl_s=3600)
    with pytest.raises(ApprovalError, match="HTTP 403"):
        keys.get(CRED)
    kis.status, kis.reply = 200, {"nothing": "here"}
    with pytest.raises(ApprovalError, match="no approval_key"):
        keys.get(CRED)
    with pytest.raises(ApprovalError, match="request failed"):
        ApprovalKeys("http://127.0.0.1:9", tmp_path, ttl_s=1, timeout_s=1).get(CRED)
