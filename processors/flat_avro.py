"""Avro binary for flat records, specialised per schema (the processors' hot path).

Every raw TR schema and every derived schema is a flat record: primitive fields, unions of
null and a primitive, and (raw envelopes) a nullable array of strings. fastavro's generic
reader and writer pay per record for schema dispatch and union resolution; here a schema is
turned once into code that reads or writes exactly its fields in order. Measured on a book
record (65 fields, 54 read) the reader takes about 60% of fastavro's time, and the writer
about a third on the imbalance record. The bytes are the same as fastavro's, and a reader
refuses what fastavro would refuse (tests/unit/test_flat_avro.py); any schema of another
shape gives None from `compile` and stays with fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

_DOUBLE = struct.Struct("<d")
_PRIMITIVES = frozenset({"string", "long", "int", "double", "boolean"})


class AvroBodyError(ValueError):
    """Bytes that do not decode with the schema (truncated, or a foreign union index)."""


def _base_type(avro_type: Any) -> Any:
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "array":
            return "array<string>" if _base_type(avro_type.get("items")) == "string" else None
        return avro_type.get("type")
    return avro_type


def _field_kinds(schema: Mapping[str, Any], allowed: frozenset[str]) -> list[tuple[str, str, bool]]:
    """(name, base type, nullable) per field, or [] if the schema is not flat."""
    if schema.get("type") != "record":
        return []
    kinds = []
    for field in schema["fields"]:
        avro_type = field["type"]
        nullable = isinstance(avro_type, list)
        if nullable:
            # Only [null, X], null first (the order of every project schema): a reader keys
            # the branch on the index byte.
            if len(avro_type) != 2 or avro_type[0] != "null":
                return []
            avro_type = avro_type[1]
        base = _base_type(avro_type)
        if base not in allowed:
            return []
        kinds.append((field["name"], base, nullable))
    return kinds


# ------------------------------------------------------------------------------- reading


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint at `pos`: (value, position after it)."""
    b = buf[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:  # a 10th byte may hold one bit (as Avro's own readers)
            raise AvroBodyError("varint beyond 64 bits")
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    size, pos = read_long(buf, pos)
    end = pos + size
    if size < 0 or end > len(buf):
        raise AvroBodyError("string runs past the end of the value")
    return buf[pos:end].decode(), end


def read_strings(buf: bytes, pos: int) -> tuple[list[str], int]:
    """An Avro array of strings (blocks; a negative count is followed by the block size)."""
    items: list[str] = []
    count, pos = read_long(buf, pos)
    while count:
        if count < 0:
            count = -count
            _, pos = read_long(buf, pos)
        for _ in range(count):
            item, pos = read_string(buf, pos)
            items.append(item)
        count, pos = read_long(buf, pos)
    return items, pos


def read_double(buf: bytes, pos: int) -> tuple[float, int]:
    return _DOUBLE.unpack_from(buf, pos)[0], pos + 8


_VALUE_CODE = {
    # Varints of up to 3 bytes (|value| < 2**20: prices, quantities) inline, longer ones
    # (timestamps, amounts) read again from their start by read_long. `{t}` is the target.
    "long": (
        "b = buf[pos]\n"
        "if b < 128:\n"
        "    pos += 1\n"
        "    {t} = (b >> 1) ^ -(b & 1)\n"
        "else:\n"
        "    n = b & 0x7F\n"
        "    b = buf[pos + 1]\n"
        "    if b < 128:\n"
        "        pos += 2\n"
        "        n |= b << 7\n"
        "    else:\n"
        "        n |= (b & 0x7F) << 7\n"
        "        b = buf[pos + 2]\n"
        "        if b < 128:\n"
        "            pos += 3\n"
        "            n |= b << 14\n"
        "        else:\n"
        "            n, pos = read_long(buf, pos)\n"
        "            n = (n << 1) ^ (n >> 63)\n"
        "    {t} = (n >> 1) ^ -(n & 1)\n"
    ),
    # Short strings (< 64 bytes: a one-byte length) inline, others through read_string.
    "string": (
        "b = buf[pos]\n"
        "if b < 128 and not b & 1:\n"
        "    end = pos + 1 + (b >> 1)\n"
        "    if end > len(buf):\n"
        "        raise AvroBodyError('string runs past the end of the value')\n"
        "    {t} = buf[pos + 1:end].decode()\n"
        "    pos = end\n"
        "else:\n"
        "    {t}, pos = read_string(buf, pos)\n"
    ),
    "double": "{t} = unpack_double(buf, pos)[0]\npos += 8\n",
    "array<string>": "{t}, pos = read_strings(buf, pos)\n",
}
_VALUE_CODE["int"] = _VALUE_CODE["long"]
_READ_TYPES = frozenset(_VALUE_CODE)


def _indent(code: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in code.splitlines())


def _reader_source(kinds: list[tuple[str, str, bool]], result: str) -> str:
    """`def read(buf, pos)`: every field read into f0, f1, ... in order, then `result`."""
    lines = ["def read(buf, pos):\n"]
    for i, (_, base, nullable) in enumerate(kinds):
        value = _VALUE_CODE[base].replace("{t}", f"f{i}")
        if nullable:
            lines.append(
                "    u = buf[pos]\n    pos += 1\n    if u == 2:\n"
                + _indent(value, 8)
                + f"    elif u == 0:\n        f{i} = None\n"
                + "    else:\n        raise AvroBodyError(f'union index byte {u}')\n"
            )
        else:
            lines.append(_indent(value, 4))
    lines.append(f"    return {result}\n")
    return "".join(lines)


def _compile(source: str) -> Any:
    namespace: dict[str, Any] = {
        "read_long": read_long,
        "read_string": read_string,
        "read_strings": read_strings,
        "unpack_double": _DOUBLE.unpack_from,
        "AvroBodyError": AvroBodyError,
    }
    # The source is generated from the schema's field types only (names are repr'd keys).
    exec(source, namespace)
    return namespace["read"]


def compile_reader(schema: Mapping[str, Any]) -> Callable[[bytes, int], dict[str, Any]] | None:
    """`read(buf, pos) -> record` for a flat record schema, or None for other shapes."""
    kinds = _field_kinds(schema, _READ_TYPES)
    if not kinds:
        return None
    items = ", ".join(f"{name!r}: f{i}" for i, (name, _, _) in enumerate(kinds))
    reader: Callable[[bytes, int], dict[str, Any]] = _compile(_reader_source(kinds, f"{{{items}}}"))
    return reader


def compile_values_reader(
    schema: Mapping[str, Any], names: tuple[str, ...]
) -> Callable[[bytes, int], tuple[Any, ...]] | None:
    """`read(buf, pos) -> values` of `names`, in that order, for a flat record schema.

    A name the (writer) schema lacks gives None; the schema's other fields are read past.
    None for other shapes. Cheaper for the caller than a dict: values are indexed, not
    looked up by name.
    """
    kinds = _field_kinds(schema, _READ_TYPES)
    if not kinds:
        return None
    position = {name: i for i, (name, _, _) in enumerate(kinds)}
    items = [f"f{position[name]}" if name in position else "None" for name in names]
    reader: Callable[[bytes, int], tuple[Any, ...]] = _compile(
        _reader_source(kinds, f"({', '.join(items)},)" if items else "()")
    )
    return reader


# ------------------------------------------------------------------- the compiled reader

FLAT_READER_API = 1
"""kis_native's `FLAT_READER_API` this module uses (a build without it is not used)."""
_NATIVE_KINDS = {
    "long": "long",
    "int": "long",
    "double": "double",
    "string": "string",
    "array<string>": "string_array",
}


def native_flat() -> Any:
    """kis_native when its FlatReader can be used (built, current, not turned off), or None.

    The extension and `KIS_STREAM_PURE_PYTHON=1` are the producer's (producer/native.py).
    """
    from producer.native import native_module

    module = native_module()
    if module is None or getattr(module, "FLAT_READER_API", None) != FLAT_READER_API:
        return None
    return module


def native_reader(schema: Mapping[str, Any], names: tuple[str, ...] | None = None) -> Any:
    """kis_native's compiled reader of a flat schema (`read` -> values of `names`;
    `read_dict` -> the record, with `names=None`), or None (other shapes, no extension).

    Gives what `compile_values_reader` / `compile_reader` give, values and errors (a
    ValueError where the Python reader raises AvroBodyError, IndexError, struct.error or
    UnicodeDecodeError).
    """
    kinds = _field_kinds(schema, _READ_TYPES)
    module = native_flat() if kinds else None
    if module is None:
        return None
    keys = names if names is not None else tuple(name for name, _, _ in kinds)
    slot = {name: i for i, name in enumerate(keys)}
    fields = [(_NATIVE_KINDS[base], nullable, slot.get(name, -1)) for name, base, nullable in kinds]
    return module.FlatReader(fields, list(keys))


# ------------------------------------------------------------------------------- writing


def _write_long(out: bytearray, n: int) -> None:
    """Avro long/int: zig-zag, then base-128 varint (low groups first)."""
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_string(out: bytearray, text: str) -> None:
    data = text.encode()
    _write_long(out, len(data))
    out += data


def _write_double(out: bytearray, x: float) -> None:
    out += _DOUBLE.pack(x)


def _write_boolean(out: bytearray, flag: bool) -> None:
    if flag is not True and flag is not False:
        raise TypeError(f"not a boolean: {flag!r}")
    out.append(1 if flag else 0)


_WRITERS: dict[str, Callable[[bytearray, Any], None]] = {
    "long": _write_long,
    "int": _write_long,
    "string": _write_string,
    "double": _write_double,
    "boolean": _write_boolean,
}


_WRITE_CODE = {
    "long": (
        "n = (v << 1) ^ (v >> 63)\n"
        "while n > 0x7F:\n"
        "    out.append((n & 0x7F) | 0x80)\n"
        "    n >>= 7\n"
        "out.append(n)\n"
    ),
    "string": (
        "d = v.encode()\n"
        "n = len(d) << 1\n"
        "while n > 0x7F:\n"
        "    out.append((n & 0x7F) | 0x80)\n"
        "    n >>= 7\n"
        "out.append(n)\n"
        "out += d\n"
    ),
    "double": "out += pack_double(v)\n",
    "boolean": "write_boolean(out, v)\n",
}
_WRITE_CODE["int"] = _WRITE_CODE["long"]


def _compile_write(kinds: list[tuple[str, str, bool]]) -> Callable[[bytearray, Any], None]:
    """`write(out, record)` for the fields in order, as straight-line code (no per-field call)."""
    lines = ["def write(out, record):\n"]
    for name, base, nullable in kinds:
        lines.append(f"    v = record[{name!r}]\n")
        code = _WRITE_CODE[base]
        if nullable:
            lines.append("    if v is None:\n        out.append(0)\n    else:\n")
            lines.append("        out.append(2)\n" + _indent(code, 8))
        else:
            lines.append(_indent(code, 4))
    namespace: dict[str, Any] = {"pack_double": _DOUBLE.pack, "write_boolean": _write_boolean}
    # The source is generated from the schema's field types only (names are repr'd keys).
    exec("".join(lines), namespace)
    write: Callable[[bytearray, Any], None] = namespace["write"]
    return write


class FlatWriter:
    """Writes the fields of a flat record schema in order (`compile` it from the schema)."""

    def __init__(self, fields: list[tuple[str, Callable[[bytearray, Any], None], bool]]) -> None:
        self.fields = fields
        """(name, value writer, nullable) per field."""
        self.kinds: list[tuple[str, str, bool]] = []
        """(name, Avro type, nullable) per field (set by `compile`)."""
        self._write: Callable[[bytearray, Any], None] | None = None

    @classmethod
    def compile(cls, schema: Mapping[str, Any]) -> FlatWriter | None:
        kinds = _field_kinds(schema, _PRIMITIVES)
        if not kinds:
            return None
        writer = cls([(name, _WRITERS[base], nullable) for name, base, nullable in kinds])
        writer._write = _compile_write(kinds)
        writer.kinds = kinds
        return writer

    def write(self, out: bytearray, record: Mapping[str, Any]) -> None:
        """Append the record's Avro body; TypeError/KeyError if it does not fit the schema."""
        if self._write is not None:
            self._write(out, record)
            return
        for name, write, nullable in self.fields:
            value = record[name]
            if nullable:
                if value is None:
                    out.append(0)  # union branch 0: null
                    continue
                out.append(2)  # union branch 1, zig-zag encoded
            write(out, value)
