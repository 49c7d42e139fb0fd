"""KIS JSON system messages as a closed set of typed outcomes.

The WebSocket carries JSON control messages (first character ``{``) beside the ``|``-framed
data. `parse_system` turns every one of them into exactly one of:

- `SubscribeAck`: a (un)subscribe succeeded; for a subscribe it carries the AES key/iv
  that decrypt this TR's data frames (``encrypt`` says whether they will be encrypted);
- `PingPong`: the server's heartbeat; the client must send ``raw`` back (as a text message
  or a pong control frame) or the server drops the session;
- `KisError`: anything else, classified into `KisErrorCode` (malformed JSON included).

It never raises. AES key/iv are masked in every repr, and an approval key that KIS echoes
inside an error text ("invalid approval : <key>") is masked in ``msg1``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PINGPONG = "PINGPONG"


def mask(secret: str | None) -> str:
    """A loggable stand-in for a secret: its first 4 characters, then ``***``."""
    if not secret:
        return "''"
    return repr(secret[:4] + "***") if len(secret) > 8 else "'***'"


@dataclass(frozen=True, slots=True)
class SubscribeAck:
    tr_id: str
    tr_key: str
    subscribed: bool
    """True for SUBSCRIBE SUCCESS, False for UNSUBSCRIBE SUCCESS."""
    encrypt: bool
    """``header.encrypt == "Y"``: this TR's data frames will be AES-encrypted."""
    key: str | None
    iv: str | None
    msg_cd: str
    msg1: str

    def __repr__(self) -> str:
        return (
            f"SubscribeAck(tr_id={self.tr_id!r}, tr_key={self.tr_key!r}, "
            f"subscribed={self.subscribed}, encrypt={self.encrypt}, key={mask(self.key)}, "
            f"iv={mask(self.iv)}, msg_cd={self.msg_cd!r}, msg1={self.msg1!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class PingPong:
    raw: str
    """The exact text received: echo it back unchanged."""
    datetime: str | None
    """``header.datetime`` (``YYYYMMDDHHMMSS``, Korea time) when present."""


class KisErrorCode(StrEnum):
    ALREADY_SUBSCRIBED = "ALREADY_SUBSCRIBED"
    MAX_SUBSCRIBE_OVER = "MAX_SUBSCRIBE_OVER"
    INVALID_TR_KEY = "INVALID_TR_KEY"
    INVALID_APPROVAL = "INVALID_APPROVAL"
    INVALID_APPKEY = "INVALID_APPKEY"
    APPKEY_IN_USE = "APPKEY_IN_USE"
    NOT_FOUND = "NOT_FOUND"
    """UNSUBSCRIBE ERROR(not found!): releasing something that was not registered."""
    HEADER_NOT_FOUND = "HEADER_NOT_FOUND"
    OTHER = "OTHER"
    """Unrecognised error text, a message of unknown shape, or text that is not JSON."""


@dataclass(frozen=True, slots=True)
class KisError:
    code: KisErrorCode
    rt_cd: str
    msg_cd: str
    msg1: str
    """The server's text, with any echoed approval key masked."""
    tr_id: str | None = None
    tr_key: str | None = None


SystemMessage = SubscribeAck | PingPong | KisError

# Order matters: more specific phrases first ("invalid appkey : NOT FOUND" is an appkey error,
# "header not found" is not an unsubscribe of an unknown registration).
_PHRASES: tuple[tuple[str, KisErrorCode], ...] = (
    ("ALREADY IN SUBSCRIBE", KisErrorCode.ALREADY_SUBSCRIBED),
    ("MAX SUBSCRIBE OVER", KisErrorCode.MAX_SUBSCRIBE_OVER),
    ("ALREADY IN USE", KisErrorCode.APPKEY_IN_USE),
    ("INVALID TR_KEY", KisErrorCode.INVALID_TR_KEY),
    ("INVALID APPROVAL", KisErrorCode.INVALID_APPROVAL),
    ("INVALID APPKEY", KisErrorCode.INVALID_APPKEY),
    ("HEADER NOT FOUND", KisErrorCode.HEADER_NOT_FOUND),
    ("NOT FOUND", KisErrorCode.NOT_FOUND),
)
_MSG_CODES: dict[str, KisErrorCode] = {
    "OPSP0002": KisErrorCode.ALREADY_SUBSCRIBED,
    "OPSP0008": KisErrorCode.MAX_SUBSCRIBE_OVER,
    "OPSP8996": KisErrorCode.APPKEY_IN_USE,
    "OPSP0003": KisErrorCode.NOT_FOUND,
}
_APPROVAL_IN_TEXT = re.compile(r"(invalid approval\s*:\s*)(\S+)", re.IGNORECASE)


def _mask_msg(msg1: str) -> str:
    return _APPROVAL_IN_TEXT.sub(lambda m: m.group(1) + mask(m.group(2)).strip("'"), msg1)


def classify_error(msg_cd: str, msg1: str) -> KisErrorCode:
    """The error class of a KIS reply, from its text first and its msg_cd second."""
    upper = msg1.upper()
    for phrase, code in _PHRASES:
        if phrase in upper:
            return code
    return _MSG_CODES.get(msg_cd, KisErrorCode.OTHER)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return None if text in ("", "(null)") else text


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_system(text: str | bytes) -> SystemMessage:
    """Classify one JSON system message from KIS; never raises."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return KisError(KisErrorCode.OTHER, "", "", f"not JSON: {text[:80]!r}")
    if not isinstance(doc, dict):
        return KisError(KisErrorCode.OTHER, "", "", f"not a JSON object: {text[:80]!r}")
    header, body = _dict(doc.get("header")), _dict(doc.get("body"))
    tr_id, tr_key = _text(header.get("tr_id")), _text(header.get("tr_key"))
    if tr_id == PINGPONG:
        return PingPong(raw=text, datetime=_text(header.get("datetime")))

    rt_cd = _text(body.get("rt_cd")) or ""
    msg_cd = _text(body.get("msg_cd")) or ""
    msg1 = str(body.get("msg1") or "")
    code = classify_error(msg_cd, msg1)
    upper = msg1.upper()
    if rt_cd == "0" and code is KisErrorCode.OTHER and tr_id and "SUBSCRIBE" in upper:
        output = _dict(body.get("output"))
        return SubscribeAck(
            tr_id=tr_id,
            tr_key=tr_key or "",
            subscribed=not upper.startswith("UNSUBSCRIBE"),
            encrypt=str(header.get("encrypt", "")).upper() == "Y",
            key=_text(output.get("key")),
            iv=_text(output.get("iv")),
            msg_cd=msg_cd,
            msg1=msg1,
        )
    if not msg1 and not rt_cd:
        msg1 = f"unrecognised message: {text[:80]!r}"
    return KisError(code, rt_cd, msg_cd, _mask_msg(msg1), tr_id, tr_key)
