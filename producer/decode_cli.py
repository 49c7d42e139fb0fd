"""``kis-stream decode`` (captured frames -> JSON lines) and ``kis-stream schemas``.

decode: one raw WebSocket message per stdin line. Data frames become one JSON object per
record, ``{"tr_id", "symbol", "event_time", "fields"}`` (plus ``"extra"`` when KIS sent
fields the catalogue does not name); an undecodable frame becomes ``{"error", "raw"}`` and
decoding goes on. JSON system lines are not printed: a subscribe acknowledgement sets the
AES key/iv for its TR, PINGPONG and error replies are skipped.

Value formats: ``event_time`` is an ISO-8601 UTC instant with milliseconds and ``Z``
(``2023-03-24T02:26:16.000Z``) or null; in ``fields`` times are ``"HH:MM:SS"`` (Korea
time of day), dates ``"YYYY-MM-DD"``, numbers JSON numbers, empty/``(null)`` null; the
fields keep the catalogue's order.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import sys
from collections.abc import Iterator
from typing import IO, Any

import click
import orjson

from producer.catalogue import Catalogue, TrSpec, load_catalogue
from producer.frames import FrameDecoder
from producer.records import DecodeError, Record
from producer.system import SubscribeAck, parse_system

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)


def iso_utc_millis(epoch_ms: int) -> str:
    """``2023-03-24T02:26:16.000Z`` for an epoch-millisecond instant."""
    moment = _EPOCH + dt.timedelta(milliseconds=epoch_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def time_text(millis: int) -> str:
    seconds, ms = divmod(millis, 1000)
    text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text if not ms else f"{text}.{ms:03d}"


def date_text(days: int) -> str:
    return (_EPOCH_DATE + dt.timedelta(days=days)).isoformat()


class JsonRenderer:
    """Turns decoded records into the documented JSON objects."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._columns: dict[str, list[tuple[str, str]]] = {}

    def _columns_of(self, spec: TrSpec) -> list[tuple[str, str]]:
        columns = self._columns.get(spec.tr_id)
        if columns is None:
            columns = self._columns[spec.tr_id] = [(f.column, f.type) for f in spec.fields]
        return columns

    def record(self, record: Record) -> dict[str, Any]:
        spec = self._catalogue[record.tr_id]
        fields: dict[str, Any] = {}
        values = record.fields
        for column, ftype in self._columns_of(spec):
            value = values.get(column)
            if value is not None and ftype == "time":
                value = time_text(value)
            elif value is not None and ftype == "date":
                value = date_text(value)
            fields[column] = value
        out: dict[str, Any] = {
            "tr_id": record.tr_id,
            "symbol": record.symbol,
            "event_time": None if record.event_time is None else iso_utc_millis(record.event_time),
            "fields": fields,
        }
        if record.extra is not None:
            out["extra"] = record.extra
        return out

    @staticmethod
    def error(error: DecodeError) -> dict[str, Any]:
        raw = error.raw
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "backslashreplace")
        return {"error": error.reason, "raw": text}


def decode_lines(
    lines: Iterator[bytes],
    decoder: FrameDecoder,
    renderer: JsonRenderer,
    *,
    session: str = "stdin",
) -> Iterator[dict[str, Any]]:
    """JSON objects for a stream of captured lines (bytes, line endings included)."""
    seq = 0
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        if line.lstrip()[:1] == b"{":
            message = parse_system(line)
            if isinstance(message, SubscribeAck) and message.key and message.iv:
                decoder.set_key(message.tr_id, message.key, message.iv)
            continue
        seq += 1
        result = decoder.decode(line, received_at=0, session=session, seq=seq)
        if isinstance(result, DecodeError):
            yield renderer.error(result)
        else:
            for record in result:
                yield renderer.record(record)


def _interactive(stream: IO[bytes]) -> bool:
    try:
        return not stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


@click.command("decode")
@click.option(
    "--key",
    envvar="KIS_AES_KEY",
    help="AES key (32 chars) for encrypted frames, if no acknowledgement line "
    "(env KIS_AES_KEY keeps it out of the process list).",
)
@click.option("--iv", envvar="KIS_AES_IV", help="AES iv (16 chars); env KIS_AES_IV.")
@click.option(
    "--business-date",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y%m%d"]),
    help="Date for TRs that carry only a time (order books); default today in Korea.",
)
def decode_command(key: str | None, iv: str | None, business_date: dt.datetime | None) -> None:
    """Decode captured KIS frames (one per stdin line) into JSON lines on stdout.

    Each record prints {"tr_id", "symbol", "event_time", "fields"}; a frame that cannot be
    decoded prints {"error", "raw"} and decoding continues. A subscribe acknowledgement
    line in the input sets the AES key/iv of its TR; PINGPONG lines are ignored.
    """
    if (key is None) != (iv is None):
        raise click.UsageError("--key and --iv go together")
    catalogue = load_catalogue()
    day = business_date.date() if business_date else None
    decoder = FrameDecoder(catalogue, business_date=(lambda: day) if day else None)
    if key is not None and iv is not None:
        for spec in catalogue:
            if spec.encrypted:
                for tr_id in spec.tr_ids:
                    decoder.set_key(tr_id, key, iv)
    renderer = JsonRenderer(catalogue)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    flush_each = _interactive(stdin)
    try:
        for obj in decode_lines(iter(stdin.readline, b""), decoder, renderer):
            stdout.write(orjson.dumps(obj) + b"\n")
            if flush_each:
                stdout.flush()
        stdout.flush()
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, but say so in the status.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except OSError as exc:
        click.echo(f"kis-stream decode: I/O error: {exc}", err=True)
        sys.exit(1)


@click.command("schemas")
@click.option("--check", is_flag=True, help="Exit 1 if the checked-in schemas are stale.")
def schemas_command(check: bool) -> None:
    """Generate schemas/raw/*.avsc and schemas/dead_letter.avsc from the TR catalogue."""
    from producer.avro import stale_schema_files, write_schema_files

    if check:
        stale = stale_schema_files()
        if stale:
            click.echo("stale schemas (run `kis-stream schemas`): " + ", ".join(stale), err=True)
            sys.exit(1)
        click.echo("schemas up to date")
        return
    changed = write_schema_files()
    click.echo(
        f"{len(changed)} schema file(s) written" + (": " + ", ".join(changed) if changed else "")
    )
