"""The KIS wire format, written from the protocol (not from the project's decoder).

Data frames: `<enc>|<tr_id>|<NNN>|<payload>`, records' fields joined by `^` back to back;
encrypted payloads are base64(AES-256-CBC(PKCS#7(plaintext))) with the subscription's key/iv.
System messages are JSON: acknowledgements, errors and the PINGPONG heartbeat.
"""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Sequence
from typing import Any

import orjson
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

_ALNUM = string.ascii_letters + string.digits

# (msg_cd, rt_cd, msg1) of every system reply the simulator sends.
SUBSCRIBED = ("OPSP0000", "0", "SUBSCRIBE SUCCESS")
UNSUBSCRIBED = ("OPSP0001", "0", "UNSUBSCRIBE SUCCESS")
ALREADY_SUBSCRIBED = ("OPSP0002", "1", "ALREADY IN SUBSCRIBE")
NOT_SUBSCRIBED = ("OPSP0003", "1", "UNSUBSCRIBE ERROR(not found!)")
MAX_SUBSCRIBE = ("OPSP0008", "1", "MAX SUBSCRIBE OVER")
INVALID_APPKEY = ("OPSP0011", "1", "invalid appkey : NOT FOUND")
APPKEY_IN_USE = ("OPSP8996", "9", "ALREADY IN USE appkey")
PARSE_ERROR_CODE = "OPSP9999"


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def new_cipher_params() -> tuple[str, str]:
    """(key, iv): 32 and 16 ASCII characters, as KIS hands them out in acknowledgements."""
    return random_token(32), random_token(16)


def mask(secret: str) -> str:
    """What may appear in logs or error texts instead of a secret."""
    return (secret[:4] + "****") if len(secret) > 8 else "****"


def data_frame(tr_id: str, records: Sequence[Sequence[str]]) -> str:
    payload = "^".join("^".join(r) for r in records)
    return f"0|{tr_id}|{len(records):03d}|{payload}"


def encrypt_payload(plaintext: str, key: str, iv: str) -> str:
    cipher = AES.new(key.encode("utf-8"), AES.MODE_CBC, iv.encode("utf-8"))
    return base64.b64encode(cipher.encrypt(pad(plaintext.encode("utf-8"), AES.block_size))).decode(
        "ascii"
    )


def encrypted_frame(tr_id: str, records: Sequence[Sequence[str]], key: str, iv: str) -> str:
    payload = "^".join("^".join(r) for r in records)
    return f"1|{tr_id}|{len(records):03d}|{encrypt_payload(payload, key, iv)}"


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode("utf-8")


def ack(
    tr_id: str,
    tr_key: str,
    reply: tuple[str, str, str],
    *,
    encrypt: bool = False,
    cipher: tuple[str, str] | None = None,
) -> str:
    """A (un)subscribe acknowledgement; `cipher` = (key, iv) adds body.output."""
    msg_cd, rt_cd, msg1 = reply
    body: dict[str, Any] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if cipher is not None:
        body["output"] = {"iv": cipher[1], "key": cipher[0]}
    header = {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "Y" if encrypt else "N"}
    return _dumps({"header": header, "body": body})


def error(
    msg1: str,
    *,
    msg_cd: str = PARSE_ERROR_CODE,
    rt_cd: str = "9",
    tr_id: str | None = "(null)",
    tr_key: str | None = "(null)",
) -> str:
    """An error reply; tr_id=None leaves the header out, as KIS does for unparseable input."""
    body = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if tr_id is None:
        return _dumps({"body": body})
    return _dumps({"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"}, "body": body})


def pingpong(stamp: str) -> str:
    return _dumps({"header": {"tr_id": "PINGPONG", "datetime": stamp}})
