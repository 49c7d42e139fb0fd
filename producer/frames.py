"""Decode KIS real-time data frames (``enc|tr_id|count|payload``) into typed `Record`s.

Every record the pipeline publishes passes through `FrameDecoder.decode`, so it is built
for two things at once:

- **Never raising.** Any input (unknown TR, bad count, bad base64, wrong AES key, bad
  padding, truncation, binary junk, invalid UTF-8, a letter where a number belongs) comes
  back as a `DecodeError` whose ``reason`` starts with a stable code (`REASON_CODES`),
  e.g. ``bad_number: field STCK_PRPR='7a100' (record 0)``.
- **Speed.** When the compiled extension `kis_native` (native/, see producer/native.py) is
  available, it splits, types and validates whole frames and returns ``kis_native.Record``s
  that keep the typed values in Rust and build ``fields`` when first read (the Avro
  encoder reads the Rust values, so publishing never builds the dict; see
  producer/records.py for the contract). It takes only the plainly regular cases and hands
  anything else back to the Python path below, which stays the reference.
  Per TR and record width the Python path compiles a converter that types a whole
  record with C-level ``map``/``itemgetter`` passes (no Python call per field). Anything
  unusual (an empty numeric field, ``(null)``, an out-of-range number) falls back to a
  per-field path that gives the same values, or the precise reason.

Field-count drift (KIS appends fields without notice): the record width is total fields ÷
count; the catalogue's prefix is mapped by name, fields it cannot name are kept verbatim in
`Record.extra`, fields the frame lacks are None, and every width other than the catalogue's
is counted in `FrameDecoder.drift` and logged once. Columns never shift.

Values: empty and the literal ``(null)`` (which KIS sends in some text fields) are None in
every field type; ``YYYYMMDD`` of ``00000000`` is None too. Strings are kept verbatim
(leading zeros, padding). Numbers accept a sign (``-300``, ``+0.11``).

Event time: the TR's date field + time field in Korea time (UTC+9, no DST) as UTC epoch
milliseconds. TRs with a time but no date (order books, program trading) take the date
from ``business_date()`` (default: today in Korea). No time field -> None.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import orjson
from Crypto.Cipher import AES

from producer.catalogue import Catalogue, FieldSpec, TrSpec, load_catalogue
from producer.native import native_module
from producer.records import DecodeError, Record, register_native_record_type

log = logging.getLogger(__name__)

KST = dt.timezone(dt.timedelta(hours=9), "KST")
KST_OFFSET_MS = 9 * 3_600_000
DAY_MS = 86_400_000
NULL_TEXT = "(null)"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()

REASON_CODES = (
    "utf8",  # bytes that are not UTF-8
    "malformed",  # not enc|tr_id|count|payload
    "unknown_tr",  # tr_id not in the catalogue
    "bad_count",  # count not a positive number
    "bad_enc",  # encryption flag neither 0 nor 1
    "no_key",  # encrypted frame but no (valid) key/iv for its TR
    "decrypt",  # bad base64, bad length, bad padding, non-UTF-8 plaintext
    "width",  # fields not divisible by count, or an implausible record width
    "bad_number",  # a long/double field that does not parse (or is out of range)
    "bad_time",  # a time field that is not HHMMSS
    "bad_date",  # a date field that is not YYYYMMDD
    "no_symbol",  # the symbol field is empty
    "internal",  # a bug: the decoder caught its own exception
)


def reason_code(reason: str) -> str:
    """The stable code that starts a `DecodeError.reason` (``bad_count: ...`` -> ``bad_count``)."""
    return reason.split(":", 1)[0]


def korea_today() -> dt.date:
    """Today's date in Korea: the default business date for TRs that carry only a time."""
    return dt.datetime.now(KST).date()


# --- value parsing (the per-field path; the fast path must agree with it) ---------------


def parse_time(text: str) -> int | None:
    """``HHMMSS`` -> milliseconds since midnight; empty/``(null)`` -> None."""
    if text == "" or text == NULL_TEXT:
        return None
    if len(text) != 6 or not (text.isascii() and text.isdigit()):
        raise ValueError("not HHMMSS")
    hh, mm, ss = int(text[:2]), int(text[2:4]), int(text[4:])
    if hh > 23 or mm > 59 or ss > 59:
        raise ValueError("not a time of day")
    return (hh * 3600 + mm * 60 + ss) * 1000


def parse_date(text: str) -> int | None:
    """``YYYYMMDD`` -> days since 1970-01-01; empty/``(null)``/``00000000`` -> None."""
    if text == "" or text == NULL_TEXT or text == "00000000":
        return None
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        raise ValueError("not YYYYMMDD")
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:])).toordinal() - _EPOCH_ORDINAL


def parse_long(text: str) -> int | None:
    if text == "" or text == NULL_TEXT:
        return None
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("out of 64-bit range")
    return value


def parse_double(text: str) -> float | None:
    if text == "" or text == NULL_TEXT:
        return None
    value = float(text)
    if value - value != 0.0:
        raise ValueError("not finite")
    return value


def parse_string(text: str) -> str | None:
    return None if text == "" or text == NULL_TEXT else text


PARSERS: dict[str, Callable[[str], Any]] = {
    "string": parse_string,
    "long": parse_long,
    "double": parse_double,
    "time": parse_time,
    "date": parse_date,
}
_ERROR_CODE = {
    "long": "bad_number",
    "double": "bad_number",
    "time": "bad_time",
    "date": "bad_date",
    "string": "bad_value",
}


class _ParseCache(dict[str, Any]):
    """Memo of a parser for values that repeat (times, dates); misses parse and validate."""

    def __init__(self, parse: Callable[[str], Any], limit: int) -> None:
        super().__init__({"": None, NULL_TEXT: None})
        self._parse = parse
        self._limit = limit

    def __missing__(self, text: str) -> Any:
        value = self._parse(text)  # raises ValueError on a bad value
        if len(self) >= self._limit:
            self.clear()
            self.update({"": None, NULL_TEXT: None})
        self[text] = value
        return value


_TIMES = _ParseCache(parse_time, 100_000)
_DATES = _ParseCache(parse_date, 20_000)
_NULLS: dict[str, None] = {"": None, NULL_TEXT: None}


# --- per (TR, width) compiled converters -------------------------------------------------

Converter = Callable[[Sequence[str]], dict[str, Any]]


def _getter_expr(name: str, indices: Sequence[int], env: dict[str, Any]) -> str:
    """Source for a tuple of p[i] for the indices (itemgetter when there are several)."""
    if len(indices) == 1:
        return f"(p[{indices[0]}],)"
    env[name] = itemgetter(*indices)
    return f"{name}(p)"


def converter_columns(fields: Sequence[FieldSpec | None]) -> list[tuple[str, int, str]]:
    """(column, position, type) of the mapped fields, in field order (the dict's key order).

    Column names are interned: the Avro encoder's keys are the same objects, so its dict
    lookups succeed on identity."""
    return [(sys.intern(f.column), i, f.type) for i, f in enumerate(fields) if f is not None]


def compile_converter(fields: Sequence[FieldSpec | None], missing: Sequence[str] = ()) -> Converter:
    """A function typing one record: ``p[i]`` is the text of ``fields[i]`` (None: not
    mapped); ``missing`` columns (the frame lacks them) come out None.

    Numbers are parsed in one ``orjson.loads`` per record (a JSON array of the numeric
    fields, several times faster than ``int()``/``float()`` per field); strings, times
    and dates go through C-level ``map`` over dict lookups. Whatever this does not handle
    exactly (an empty number, ``(null)``, signs, leading zeros, exponents, 64-bit overflow,
    non-finite values) raises ValueError/TypeError, and the caller takes the per-field
    path, which gives the same values or the precise reason.
    """
    groups: dict[str, list[int]] = {t: [] for t in ("string", "long", "double", "time", "date")}
    for i, f in enumerate(fields):
        if f is not None:
            groups[f.type].append(i)
    env: dict[str, Any] = {
        "NG": _NULLS.get,
        "TG": _TIMES.__getitem__,
        "DG": _DATES.__getitem__,
        "loads": orjson.loads,
        "join": ",".join,
        "INT64_MAX": INT64_MAX,
        "NL": len(groups["long"]),
        "ND": len(groups["double"]),
    }
    body: list[str] = []
    parts: list[str] = []
    if groups["string"]:
        body.append(f"sv = {_getter_expr('gs', groups['string'], env)}")
        parts.append("*map(NG, sv, sv)")
    if groups["long"]:
        body += [
            f"ls = '[' + join({_getter_expr('gl', groups['long'], env)}) + ']'",
            # Only plain integer literals: no fraction/exponent (which JSON would turn
            # into floats) and no true/false (which contain 'e').
            "if '.' in ls or 'e' in ls or 'E' in ls:",
            "    raise ValueError('not an integer literal')",
            "lv = loads(ls)",
            # len: a field holding ',' must not shift columns; abs() rejects null/str/list;
            # the sum bounds every value to the Avro long range (and rejects big floats).
            "if len(lv) != NL or sum(map(abs, lv)) > INT64_MAX:",
            "    raise ValueError('not NL longs in range')",
        ]
        parts.append("*lv")
    if groups["double"]:
        getter = _getter_expr("gd", groups["double"], env)
        body += [
            f"dx = {getter}",
            "ds = '[' + join(dx) + ']'",
            "if '+' in ds:",  # KIS writes overseas rates as +0.11; JSON has no '+'
            "    ds = ds.replace('[+', '[').replace(',+', ',')",
            "if '+' in ds or 'e' in ds or 'E' in ds:",
            "    dv = [*map(float, dx)]",
            "else:",
            "    dv = [*map(float, loads(ds))]",
            "s = sum(dv)",
            "if len(dv) != ND or s - s:",  # nan/inf anywhere makes the sum non-finite
            "    raise ValueError('not ND finite doubles')",
        ]
        parts.append("*dv")
    if groups["time"]:
        parts.append(f"*map(TG, {_getter_expr('gt', groups['time'], env)})")
    if groups["date"]:
        parts.append(f"*map(DG, {_getter_expr('gdd', groups['date'], env)})")
    # Values come out grouped by type; the dict is built in field order (then the missing
    # columns), as the per-field path builds it, so key order never depends on the path.
    grouped = [i for t in groups for i in groups[t]]
    positional = sorted(grouped)
    env["COLS"] = tuple([fields[i].column for i in positional] + list(missing))  # type: ignore[union-attr]
    values = f"[{', '.join(parts)}]" if parts else "[]"
    if grouped != positional:
        env["PERM"] = itemgetter(*[grouped.index(i) for i in positional])
        values = f"PERM({values})"
    if missing:
        env["NONES"] = (None,) * len(missing)
        values = f"(*{values}, *NONES)"
    body.append(f"return dict(zip(COLS, {values}))")
    source = "def convert(p):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, f"<converter {len(fields)} fields>", "exec"), env)
    convert: Converter = env["convert"]
    return convert


def convert_slowly(
    fields: Sequence[FieldSpec | None], values: Sequence[str], missing: Sequence[str], index: int
) -> dict[str, Any] | str:
    """The per-field path: typed dict, or the reason naming the first bad field."""
    out: dict[str, Any] = {}
    for f, text in zip(fields, values, strict=False):
        if f is None:
            continue
        try:
            out[f.column] = PARSERS[f.type](text)
        except (ValueError, OverflowError) as exc:
            shown = text if len(text) <= 40 else text[:40] + "..."
            return f"{_ERROR_CODE[f.type]}: field {f.name}={shown!r} (record {index}): {exc}"
    for column in missing:
        out[column] = None
    return out


class _Layout:
    """How to read records of one width of one TR: which field each position holds,
    which columns the width lacks, and which positions go to `Record.extra`."""

    __slots__ = (
        "convert",
        "extra_from",
        "extra_positions",
        "fields",
        "missing",
        "native",
        "plain",
        "width",
    )

    def __init__(self, spec: TrSpec, width: int, native: Any = None) -> None:
        self.width = width
        names = spec.layouts.get(width)
        fields: tuple[FieldSpec | None, ...]
        if names is None:
            fields = spec.fields[:width]
            self.extra_positions: tuple[int, ...] = ()
        else:
            fields = tuple(None if n is None else spec.field_named(n) for n in names)
            self.extra_positions = tuple(i for i, n in enumerate(names) if n is None)
        self.fields = fields
        present = {f.name for f in fields if f is not None}
        self.missing = tuple(sys.intern(f.column) for f in spec.fields if f.name not in present)
        # Positions past the mapped ones are kept verbatim in Record.extra.
        self.extra_from = len(fields) if width > len(fields) else None
        self.plain = not self.extra_positions and self.extra_from is None
        self.convert = compile_converter(fields, self.missing)
        # The compiled converter (kis_native.RecordLayout) of this width, if available.
        self.native = (
            native.RecordLayout(width, converter_columns(fields), list(self.missing))
            if native is not None
            else None
        )

    def extra(self, chunk: Sequence[str]) -> list[str] | None:
        if not self.extra_positions:
            return list(chunk[self.extra_from :]) if self.extra_from is not None else None
        extra = [chunk[i] for i in self.extra_positions]
        if self.extra_from is not None:
            extra += chunk[self.extra_from :]
        return extra


class _TrPlan:
    """Everything the hot path needs about one TR, computed once."""

    __slots__ = (
        "date_column",
        "layouts",
        "max_width",
        "min_width",
        "native",
        "needs_business_date",
        "spec",
        "symbol_column",
        "symbol_index",
        "time_column",
        "topic",
        "width",
    )

    def __init__(self, spec: TrSpec, native: Any = None) -> None:
        self.spec = spec
        self.native = native
        self.topic = spec.topic
        # Read the symbol straight from the text unless positions vary by layout.
        self.symbol_index = spec.symbol_index if not spec.layouts else -1
        self.width = spec.width
        self.symbol_column = spec.field_named(spec.symbol_field).column
        self.time_column = spec.field_named(spec.time_field).column if spec.time_field else None
        self.date_column = spec.field_named(spec.date_field).column if spec.date_field else None
        self.needs_business_date = self.time_column is not None and self.date_column is None
        # Plausible widths: KIS has added or dropped a few trailing fields, never half a
        # record; a count that does not match the payload shows up as a far-off width.
        self.min_width = max(2, spec.width * 3 // 4, spec.symbol_index + 1)
        self.max_width = spec.width * 3 // 2
        self.layouts: dict[int, _Layout] = {spec.width: _Layout(spec, spec.width, native)}

    def layout(self, width: int) -> _Layout:
        layout = self.layouts.get(width)
        if layout is None:
            layout = self.layouts[width] = _Layout(self.spec, width, self.native)
        return layout


def _core_plan(plan: _TrPlan) -> tuple[Any, ...]:
    """What kis_native.FrameCore needs of a TR (see native/src/frame.rs)."""
    spec, layout = plan.spec, plan.layouts[plan.width]
    return (
        sorted(spec.tr_ids),
        spec.tr_id,
        spec.venue,
        plan.width,
        converter_columns(layout.fields),
        list(layout.missing),
        plan.symbol_column,
        plan.time_column,
        plan.date_column,
    )


class FrameDecoder:
    """Stateful decoder for one WebSocket session (it holds that session's AES keys).

    ``drift`` counts records per (tr_id, width) whose width differs from the catalogue;
    ``errors`` counts decode errors per reason code.
    """

    def __init__(
        self,
        catalogue: Catalogue | None = None,
        *,
        business_date: Callable[[], dt.date] | None = None,
    ) -> None:
        self.catalogue = catalogue if catalogue is not None else load_catalogue()
        self.business_date = business_date if business_date is not None else korea_today
        native = native_module()
        self.native = native is not None
        """Whether the compiled hot path is in use (decided when the decoder is built)."""
        self._plans: dict[str, _TrPlan] = {}
        for spec in self.catalogue:
            plan = _TrPlan(spec, native)
            for tr_id in spec.tr_ids:
                self._plans[tr_id] = plan
        # Plain frames at the catalogue width go straight to records in native code
        # (kis_native.Record: values parsed and validated, the `fields` dict built when
        # first read); it hands everything else (drift, errors, oddities) back to
        # `_decode`, which gives decrypted payloads back to it (`decode_payload`).
        self._core: Any = None
        if native is not None:
            register_native_record_type(native.Record)
            plans = {id(p): p for p in self._plans.values()}.values()
            self._core = native.FrameCore(
                [_core_plan(p) for p in plans if p.layouts[p.width].plain],
                Record,
                self._business_day,
            )
        self._keys: dict[str, tuple[bytes, bytes] | str] = {}
        self.drift: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()

    # --- keys -----------------------------------------------------------------------

    def set_key(self, tr_id: str, key: str, iv: str) -> None:
        """Store the AES key/iv from a subscribe acknowledgement of ``tr_id``.

        Never raises: an unusable key/iv is remembered as such, and frames of that TR then
        decode to ``no_key`` errors that say why. Secrets are never logged.
        """
        key_b, iv_b = (key or "").encode("utf-8"), (iv or "").encode("utf-8")
        if len(key_b) != 32 or len(iv_b) != 16:
            self._keys[tr_id] = (
                f"key/iv for {tr_id} unusable: need 32-byte key and 16-byte iv, "
                f"got {len(key_b)} and {len(iv_b)}"
            )
            log.warning("%s", self._keys[tr_id])
            return
        self._keys[tr_id] = (key_b, iv_b)

    def forget_keys(self) -> None:
        """Drop every key (a new connection gets new acknowledgements)."""
        self._keys.clear()

    def has_key(self, tr_id: str) -> bool:
        return isinstance(self._key_for(tr_id), tuple)

    def _key_for(self, tr_id: str) -> tuple[bytes, bytes] | str | None:
        key = self._keys.get(tr_id)
        if key is None:
            plan = self._plans.get(tr_id)
            if plan is not None:
                for twin in plan.spec.tr_ids:
                    key = self._keys.get(twin)
                    if key is not None:
                        break
        return key

    # --- decoding -------------------------------------------------------------------

    def decode(
        self, raw: str | bytes, *, received_at: int, session: str = "", seq: int = 0
    ) -> list[Record] | DecodeError:
        """Decode one data frame; never raises."""
        try:
            core = self._core
            result = None if core is None else core.decode(raw, received_at, session, seq)
            if result is None:
                result = self._decode(raw, received_at, session, seq)
        except Exception as exc:  # last line of defence: a bug must not stop the producer
            log.exception("decoder bug on a frame of %d chars", len(raw))
            result = f"internal: {type(exc).__name__}: {exc}"
        if isinstance(result, str):
            self.errors[reason_code(result)] += 1
            return DecodeError(result, raw, self._tr_id_of(raw), received_at, session, seq)
        return result

    @staticmethod
    def _tr_id_of(raw: str | bytes) -> str | None:
        try:
            text = raw if isinstance(raw, str) else bytes(raw[:64]).decode("ascii", "replace")
            parts = text.split("|", 2)
            return parts[1][:16] if len(parts) > 2 and parts[1] else None
        except Exception:
            return None

    def _decode(
        self, raw: str | bytes, received_at: int, session: str, seq: int
    ) -> list[Record] | str:
        """Records, or the reason (a str) the frame cannot be decoded."""
        if isinstance(raw, str):
            text = raw
        else:
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"utf8: invalid UTF-8 at byte {exc.start}"
            except TypeError:
                return f"malformed: not text ({type(raw).__name__})"
        parts = text.split("|", 3)
        if len(parts) != 4:
            return "malformed: expected enc|tr_id|count|payload"
        enc, tr_id, count_text, payload = parts
        plan = self._plans.get(tr_id)
        if plan is None:
            return f"unknown_tr: {tr_id[:20]!r}"
        if not (count_text.isdigit() and count_text.isascii()) or len(count_text) > 4:
            return f"bad_count: {count_text[:8]!r}"
        count = int(count_text)
        if count == 0:
            return "bad_count: 0 records"
        if enc == "1":
            plain = self._decrypt(tr_id, payload)
            if isinstance(plain, tuple):
                return plain[0]  # (reason,)
            payload = plain
            if self._core is not None:
                core_records: list[Record] | None = self._core.decode_payload(
                    tr_id, payload, count, received_at, session, seq
                )
                if core_records is not None:
                    return core_records
        elif enc != "0":
            return f"bad_enc: {enc[:8]!r}"

        # The compiled path splits the payload itself: only count the separators here.
        values = None if self.native else payload.split("^")
        total = payload.count("^") + 1 if values is None else len(values)
        width = total // count
        if width * count != total:
            return f"width: {total} fields do not split into {count} records"
        spec = plan.spec
        if width != plan.width:
            if not plan.min_width <= width <= plan.max_width:
                return (
                    f"width: {width} fields per record outside plausible "
                    f"[{plan.min_width}, {plan.max_width}] for {spec.tr_id} "
                    f"(catalogue {spec.width})"
                )
            self._note_drift(spec, width, count)
            layout = plan.layout(width)
        else:
            layout = plan.layouts[width]

        business_day = self._business_day() if plan.needs_business_date else 0
        if layout.native is not None:
            typed = layout.native.convert(payload, count)
            if typed is not None:
                return self._records(
                    plan, layout, typed, payload, business_day, received_at, session, seq
                )
            values = payload.split("^")
        assert values is not None
        convert = layout.convert
        plain_layout = layout.plain
        symbol_index = plan.symbol_index
        time_column, date_column = plan.time_column, plan.date_column
        venue, canonical = spec.venue, spec.tr_id
        records: list[Record] = []
        for i in range(count):
            chunk = values if count == 1 else values[i * width : (i + 1) * width]
            try:
                fields = convert(chunk)
            except (ValueError, TypeError):
                slow = convert_slowly(layout.fields, chunk, layout.missing, i)
                if isinstance(slow, str):
                    return slow
                fields = slow
            symbol = chunk[symbol_index] if symbol_index >= 0 else fields[plan.symbol_column]
            if not symbol or symbol == NULL_TEXT:
                return f"no_symbol: field {spec.symbol_field} empty (record {i})"
            event_time = None
            if time_column is not None:
                t = fields[time_column]
                if t is not None:
                    day = business_day if date_column is None else fields[date_column]
                    if day is None:
                        day = self._business_day()
                    event_time = day * DAY_MS + t - KST_OFFSET_MS
            records.append(
                Record(
                    canonical,
                    venue,
                    symbol,
                    event_time,
                    received_at,
                    session,
                    seq,
                    i,
                    fields,
                    None if plain_layout else layout.extra(chunk),
                )
            )
        return records

    def _records(
        self,
        plan: _TrPlan,
        layout: _Layout,
        typed: list[dict[str, Any]],
        payload: str,
        business_day: int,
        received_at: int,
        session: str,
        seq: int,
    ) -> list[Record] | str:
        """Records from dicts the compiled converter typed (the same values as `convert`)."""
        spec = plan.spec
        symbol_column, time_column, date_column = (
            plan.symbol_column,
            plan.time_column,
            plan.date_column,
        )
        venue, canonical = spec.venue, spec.tr_id
        values = None if layout.plain else payload.split("^")
        width = layout.width
        records: list[Record] = []
        for i, fields in enumerate(typed):
            symbol = fields[symbol_column]  # a string field: its text, None when empty
            if symbol is None:
                return f"no_symbol: field {spec.symbol_field} empty (record {i})"
            event_time = None
            if time_column is not None:
                t = fields[time_column]
                if t is not None:
                    day = business_day if date_column is None else fields[date_column]
                    if day is None:
                        day = self._business_day()
                    event_time = day * DAY_MS + t - KST_OFFSET_MS
            extra = None if values is None else layout.extra(values[i * width : (i + 1) * width])
            records.append(
                Record(
                    canonical,
                    venue,
                    symbol,
                    event_time,
                    received_at,
                    session,
                    seq,
                    i,
                    fields,
                    extra,
                )
            )
        return records

    def _business_day(self) -> int:
        return self.business_date().toordinal() - _EPOCH_ORDINAL

    def _note_drift(self, spec: TrSpec, width: int, count: int) -> None:
        key = (spec.tr_id, width)
        first = key not in self.drift
        self.drift[key] += count
        if first:
            level = logging.INFO if width in spec.known_widths else logging.WARNING
            log.log(
                level,
                "%s: record width %d differs from the catalogue's %d (%s); "
                "mapping the known prefix, extra fields kept, missing ones null",
                spec.tr_id,
                width,
                spec.width,
                "a known older layout" if width in spec.known_widths else "NEW LAYOUT",
            )

    def _decrypt(self, tr_id: str, payload: str) -> str | tuple[str]:
        key = self._key_for(tr_id)
        if key is None:
            return (f"no_key: no AES key/iv for {tr_id} (no subscribe acknowledgement seen)",)
        if isinstance(key, str):
            return (f"no_key: {key}",)
        try:
            cipher_text = base64.b64decode(payload, validate=True)
        except ValueError:
            return ("decrypt: payload is not valid base64",)
        if not cipher_text or len(cipher_text) % 16:
            return (f"decrypt: ciphertext of {len(cipher_text)} bytes is not whole AES blocks",)
        plain = AES.new(key[0], AES.MODE_CBC, key[1]).decrypt(cipher_text)
        pad = plain[-1]
        if not 1 <= pad <= 16 or plain[-pad:] != bytes((pad,)) * pad:
            return ("decrypt: bad PKCS#7 padding (wrong key/iv?)",)
        try:
            return plain[:-pad].decode("utf-8")
        except UnicodeDecodeError:
            return ("decrypt: plaintext is not UTF-8 (wrong key/iv?)",)


# --- the inverse: typed values -> frame text (tests, benchmarks, simulator) --------------


def format_value(ftype: str, value: Any) -> str:
    """The KIS text of a typed value (None -> empty)."""
    if value is None:
        return ""
    if ftype == "string":
        return str(value)
    if ftype == "long":
        return str(int(value))
    if ftype == "double":
        number = float(value)
        if number - number != 0.0:
            raise ValueError(f"non-finite double {value!r}")
        return repr(number)
    if ftype == "time":
        seconds, millis = divmod(int(value), 1000)
        if millis or not 0 <= seconds < 86400:
            raise ValueError(f"time {value!r} is not a whole second of a day")
        return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    if ftype == "date":
        return dt.date.fromordinal(int(value) + _EPOCH_ORDINAL).strftime("%Y%m%d")
    raise ValueError(f"unknown field type {ftype!r}")


def format_record(spec: TrSpec, fields: Mapping[str, Any], width: int | None = None) -> list[str]:
    """The field texts of one record in catalogue order (first ``width`` fields)."""
    texts = [format_value(f.type, fields.get(f.column)) for f in spec.fields]
    return texts if width is None else texts[:width]


def encrypt_payload(plain: str, key: str, iv: str) -> str:
    """AES-256-CBC + PKCS#7 + base64, the way KIS encrypts execution notices."""
    data = plain.encode("utf-8")
    pad = 16 - len(data) % 16
    cipher = AES.new(key.encode("utf-8"), AES.MODE_CBC, iv.encode("utf-8"))
    return base64.b64encode(cipher.encrypt(data + bytes((pad,)) * pad)).decode("ascii")


def format_frame(
    tr_id: str,
    records: Iterable[Mapping[str, Any] | Sequence[str]],
    *,
    catalogue: Catalogue | None = None,
    key: str | None = None,
    iv: str | None = None,
) -> str:
    """A data frame carrying ``records`` (typed dicts, or lists of field texts).

    With ``key``/``iv`` the payload is encrypted and the flag is ``1``.
    """
    cat = catalogue if catalogue is not None else load_catalogue()
    spec = cat[tr_id]
    rows = [list(r) if not isinstance(r, Mapping) else format_record(spec, r) for r in records]
    payload = "^".join("^".join(row) for row in rows)
    if key is not None and iv is not None:
        return f"1|{tr_id}|{len(rows):03d}|{encrypt_payload(payload, key, iv)}"
    return f"0|{tr_id}|{len(rows):03d}|{payload}"
