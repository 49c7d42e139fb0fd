"""`kis-stream decode`: captured lines in, one JSON object per record (or error) out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from producer.decode_cli import date_text, decode_command, iso_utc_millis, time_text
from producer.frames import encrypt_payload

GOLDEN = {
    c["name"]: c
    for c in json.loads((Path(__file__).parent / "golden" / "real_frames.json").read_text("utf-8"))
}
KEY = "abcdefghijklmnopabcdefghijklmnop"
IV = "0123456789abcdef"
NOTICE = GOLDEN["notice_23_domestic_encrypted"]["plaintext"]
ACK = json.dumps(
    {
        "header": {"tr_id": "H0STCNI0", "tr_key": "HTS ID", "encrypt": "Y"},
        "body": {
            "rt_cd": "0",
            "msg_cd": "OPSP0000",
            "msg1": "SUBSCRIBE SUCCESS",
            "output": {"iv": IV, "key": KEY},
        },
    }
)


def _run(stdin: bytes, *args: str) -> tuple[int, list[dict[str, object]]]:
    result = CliRunner().invoke(decode_command, list(args), input=stdin)
    lines = [json.loads(line) for line in result.stdout_bytes.decode().splitlines()]
    return result.exit_code, lines


def test_records_errors_and_system_lines() -> None:
    stdin = "\n".join(
        [
            '{"header":{"tr_id":"PINGPONG","datetime":"20230502221924"}}',
            GOLDEN["overseas_trade_multi_26"]["frame"],
            "",
            "0|H0XXXXX0|001|a^b",
            GOLDEN["trade_46_krx_2023"]["frame"] + "\r",
        ]
    ).encode()
    code, out = _run(stdin)
    assert code == 0
    assert [o.get("tr_id") for o in out] == ["HDFSCNT0", "HDFSCNT0", None, "H0STCNT0"]
    first = out[0]
    assert list(first) == ["tr_id", "symbol", "event_time", "fields"]
    assert first["symbol"] == "DNASAAPL"
    assert first["event_time"] == "2023-05-02T13:19:12.000Z"
    fields = first["fields"]
    assert isinstance(fields, dict)
    assert list(fields)[:3] == ["rsym", "symb", "zdiv"]  # catalogue order
    assert (fields["khms"], fields["kymd"], fields["last"]) == ("22:19:12", "2023-05-02", 169.785)
    assert out[2] == {"error": "unknown_tr: 'H0XXXXX0'", "raw": "0|H0XXXXX0|001|a^b"}
    trade = out[3]["fields"]
    assert isinstance(trade, dict)
    assert trade["mrkt_trtm_cls_code"] is None and trade["prdy_vrss"] == 400


def test_acknowledgement_line_sets_the_key() -> None:
    frame = "1|H0STCNI0|001|" + encrypt_payload(NOTICE, KEY, IV)
    code, out = _run(f"{frame}\n{ACK}\n{frame}\n".encode(), "--business-date", "2024-05-03")
    assert code == 0
    assert (
        out[0]["error"] == "no_key: no AES key/iv for H0STCNI0 (no subscribe acknowledgement seen)"
    )
    assert out[1]["symbol"] == "136480"
    assert out[1]["event_time"] == "2024-05-03T00:49:41.000Z"
    assert out[1]["extra"] == ["하림"]


def test_key_and_iv_options() -> None:
    frame = "1|H0STCNI9|001|" + encrypt_payload(NOTICE, KEY, IV)
    code, out = _run(f"{frame}\n".encode(), "--key", KEY, "--iv", IV)
    assert code == 0 and out[0]["tr_id"] == "H0STCNI0"
    fields = out[0]["fields"]
    assert isinstance(fields, dict) and fields["acnt_name"] == "김한투"
    result = CliRunner().invoke(decode_command, ["--key", KEY])
    assert result.exit_code == 2


def test_business_date_for_book_frames() -> None:
    code, out = _run(GOLDEN["book_59_krx"]["frame"].encode(), "--business-date", "20240102")
    assert code == 0 and out[0]["event_time"] == "2024-01-02T02:30:19.000Z"


def test_invalid_utf8_is_reported_with_escaped_raw() -> None:
    code, out = _run(b"0|H0STCNT0|001|\xff\xfe\n")
    assert code == 0
    assert out == [{"error": "utf8: invalid UTF-8 at byte 15", "raw": "0|H0STCNT0|001|\\xff\\xfe"}]


def test_value_formatters() -> None:
    assert iso_utc_millis(1_679_624_776_123) == "2023-03-24T02:26:16.123Z"
    assert iso_utc_millis(-1000) == "1969-12-31T23:59:59.000Z"
    assert time_text(34_357_000) == "09:32:37" and time_text(1_500) == "00:00:01.500"
    assert date_text(19_440) == "2023-03-24"


def test_broken_pipe_is_quiet() -> None:
    frame = GOLDEN["program_11_krx"]["frame"] + "\n"
    proc = subprocess.run(
        f"yes '{frame.strip()}' | head -n 20000"
        f" | {sys.executable} -m kis_stream.cli decode | head -n 1",
        shell=True,
        capture_output=True,
        timeout=120,
    )
    assert proc.stdout.count(b"\n") == 1
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr
