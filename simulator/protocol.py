"""The KIS session protocol without the I/O: approval keys, app-key binding, registrations.

`Registry.request(session, text)` turns one client message into the reply KIS would send
(or None for a PINGPONG answer); `Registry.approve(body)` is the approval endpoint's logic.
The server owns the sockets and calls these; tests can drive them directly.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from simulator import wire
from simulator.market import GenRecord
from simulator.spec import TrLayout, canonical_tr_id

DOMESTIC_KEY = re.compile(r"^[0-9A-Z]{6}$")
OVERSEAS_KEY = re.compile(r"^[DR][A-Z]{3}[A-Z0-9.\-]{1,16}$")
HTS_ID = re.compile(r"^[A-Za-z0-9_\-]{1,16}$")


@dataclass(slots=True)
class Delivery:
    """What a queued data frame carries, for the truth log."""

    tr_id: str
    key: str
    records: list[GenRecord] | None
    rows: list[list[str]] | None
    fault: str | None = None
    raw: str | None = None
    due: float = 0.0
    """Load mode: the monotonic time before which the writer holds the frame back (0: now)."""


class Session:
    """One WebSocket connection: its app key, registrations, cipher and outgoing queue."""

    def __init__(self, sid: str, ws: Any = None, request: Any = None) -> None:
        self.id = sid
        self.ws = ws
        self.request = request
        self.app_key: str | None = None
        self.subs: dict[tuple[str, str], str] = {}
        """(catalogue tr_id, key) -> tr_id as the client subscribed it (paper ids kept)."""
        self.cipher = wire.new_cipher_params()
        self.queue: asyncio.Queue[tuple[str | bytes, Delivery | None]] = asyncio.Queue()
        self.awaiting_pong_since: float | None = None
        self.frames_sent = 0
        self.records_sent = 0
        self.connected_at = time.time()
        self.closed = False

    def pong(self) -> None:
        self.awaiting_pong_since = None


def valid_key(layout: TrLayout, key: str) -> bool:
    """Whether a tr_key has the shape KIS accepts for this TR."""
    if layout.kind == "notice":
        return bool(HTS_ID.match(key))
    if layout.venue == "OVERSEAS":
        return bool(OVERSEAS_KEY.match(key))
    return bool(DOMESTIC_KEY.match(key))


_BAD_REQUEST = ("EGW00101", "유효하지 않은 요청입니다.")
_BAD_APPKEY = ("EGW00103", "유효하지 않은 AppKey입니다.")
_BAD_SECRET = ("EGW00105", "유효하지 않은 AppSecret입니다.")


class Registry:
    """Approval keys, which session holds which app key, and who is registered to what."""

    def __init__(
        self,
        layouts: dict[str, TrLayout],
        *,
        app_keys: dict[str, str],
        approval_ttl: float,
        max_subscriptions: int,
        on_subscribe: Callable[[str, str], None] = lambda tr_id, key: None,
        refusal: Callable[[str, str], str | None] = lambda tr_id, key: None,
    ) -> None:
        self.layouts = layouts
        self.app_keys = app_keys
        self.approval_ttl = approval_ttl
        self.max_subscriptions = max_subscriptions
        self.on_subscribe = on_subscribe
        self.refusal = refusal
        """(catalogue tr_id, key) -> None to accept a registration, or the error to refuse it
        with (the `refuse_subscribe` fault)."""
        self.approvals: dict[str, tuple[str, float]] = {}
        """approval key -> (app key, monotonic expiry)."""
        self.app_key_sessions: dict[str, Session] = {}
        self.subscribers: dict[tuple[str, str], dict[Session, str]] = {}
        """(catalogue tr_id, key) -> {session: tr_id as subscribed}."""

    def approve(self, body: Any) -> tuple[dict[str, str], str | None]:
        """POST /oauth2/Approval: ({"approval_key"} or a KIS OAuth error, issued app key)."""
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            return _oauth_error(_BAD_REQUEST), None
        appkey, secret = body.get("appkey"), body.get("secretkey")
        if not isinstance(appkey, str) or not appkey:
            return _oauth_error(_BAD_APPKEY), None
        if not isinstance(secret, str) or not secret:
            return _oauth_error(_BAD_SECRET), None
        if self.app_keys:
            if appkey not in self.app_keys:
                return _oauth_error(_BAD_APPKEY), None
            if self.app_keys[appkey] != secret:
                return _oauth_error(_BAD_SECRET), None
        approval_key = str(uuid.uuid4())
        self.approvals[approval_key] = (appkey, time.monotonic() + self.approval_ttl)
        return {"approval_key": approval_key}, appkey

    def expire_all(self) -> int:
        self.approvals = {k: (app, 0.0) for k, (app, _) in self.approvals.items()}
        return len(self.approvals)

    def release(self, session: Session) -> None:
        """Forget a closed session: its app key and registrations."""
        if session.app_key and self.app_key_sessions.get(session.app_key) is session:
            del self.app_key_sessions[session.app_key]
        for sub_key in session.subs:
            self._unindex(sub_key, session)

    def _unindex(self, sub_key: tuple[str, str], session: Session) -> None:
        subs = self.subscribers.get(sub_key)
        if subs is not None:
            subs.pop(session, None)
            if not subs:
                del self.subscribers[sub_key]

    def request(self, session: Session, text: str) -> str | None:
        """The reply to one client message (None: a PINGPONG echo, which needs none)."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return wire.error("JSON PARSING ERROR : invalid json", tr_id=None)
        header = obj.get("header") if isinstance(obj, dict) else None
        if not isinstance(header, dict):
            return wire.error("JSON PARSING ERROR : header not found", tr_id=None)
        if header.get("tr_id") == "PINGPONG":
            session.pong()
            return None
        body = obj.get("body")
        inp = body.get("input") if isinstance(body, dict) else None
        if not isinstance(inp, dict):
            return wire.error("JSON PARSING ERROR : body not found")
        tr_id, tr_key = inp.get("tr_id"), inp.get("tr_key")
        tr_id_s = tr_id if isinstance(tr_id, str) and tr_id else "(null)"
        tr_key_s = tr_key if isinstance(tr_key, str) and tr_key else "(null)"
        return self._register(session, header, tr_id_s, tr_key_s)

    def _register(self, session: Session, header: dict[str, Any], tr_id: str, tr_key: str) -> str:
        approval = header.get("approval_key")
        if not isinstance(approval, str) or not approval:
            return wire.ack(tr_id, tr_key, wire.INVALID_APPKEY)
        entry = self.approvals.get(approval)
        if entry is None or entry[1] <= time.monotonic():
            msg = ("OPSP0011", "1", f"invalid approval : {wire.mask(approval)}")
            return wire.ack(tr_id, tr_key, msg)
        app_key = entry[0]
        holder = self.app_key_sessions.get(app_key)
        if holder is not None and holder is not session:
            return wire.ack(tr_id, tr_key, wire.APPKEY_IN_USE)
        if session.app_key is None:
            session.app_key = app_key
            self.app_key_sessions[app_key] = session
        canonical = canonical_tr_id(tr_id)
        if canonical is None:
            return wire.error("JSON PARSING ERROR : invalid tr_id", tr_id=tr_id, tr_key=tr_key)
        layout = self.layouts[canonical]
        if not valid_key(layout, tr_key):
            return wire.error("JSON PARSING ERROR : invalid tr_key", tr_id=tr_id, tr_key=tr_key)
        sub_key = (canonical, tr_key)
        tr_type = header.get("tr_type")
        if tr_type == "1":
            if sub_key in session.subs:
                return wire.ack(tr_id, tr_key, wire.ALREADY_SUBSCRIBED)
            if len(session.subs) >= self.max_subscriptions:
                return wire.ack(tr_id, tr_key, wire.MAX_SUBSCRIBE)
            refused = self.refusal(canonical, tr_key)
            if refused == "invalid_tr_key":
                return wire.error("JSON PARSING ERROR : invalid tr_key", tr_id=tr_id, tr_key=tr_key)
            if refused is not None:
                return wire.ack(tr_id, tr_key, wire.MAX_SUBSCRIBE)
            session.subs[sub_key] = tr_id
            self.subscribers.setdefault(sub_key, {})[session] = tr_id
            self.on_subscribe(canonical, tr_key)
            return wire.ack(
                tr_id, tr_key, wire.SUBSCRIBED, encrypt=layout.encrypted, cipher=session.cipher
            )
        if tr_type == "2":
            if sub_key not in session.subs:
                return wire.ack(tr_id, tr_key, wire.NOT_SUBSCRIBED)
            del session.subs[sub_key]
            self._unindex(sub_key, session)
            return wire.ack(
                tr_id, tr_key, wire.UNSUBSCRIBED, encrypt=layout.encrypted, cipher=session.cipher
            )
        return wire.error("JSON PARSING ERROR : invalid tr_type", tr_id=tr_id, tr_key=tr_key)


def _oauth_error(error: tuple[str, str]) -> dict[str, str]:
    """KIS's OAuth error body (sent with HTTP 403)."""
    return {"error_description": error[1], "error_code": error[0]}
