"""Structured JSON logs with secrets masked wherever they appear.

Secrets (app keys and secrets, approval keys, AES keys/ivs from acknowledgements) are
registered at run time with `register_secret`; the handler's filter rewrites each record's
message, arguments, extra fields and traceback so that no registered value reaches any
output, whichever logger or library wrote it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

import orjson

MASK = "***"
_MIN_SECRET_LEN = 3

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()

# Attributes every LogRecord has; anything else was passed with `extra=`.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on (values shorter than 3 chars are ignored)."""
    global _secrets
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        if value not in _secrets:
            # Longest first, so a secret containing another is masked whole.
            _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so that no registered secret survives formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
            for key, value in list(record.__dict__.items()):
                if key not in _STANDARD:
                    record.__dict__[key] = _redact_value(value)
        return True


class RepeatFilter(logging.Filter):
    """Lets through one record per `window_s` of each kind; the next one says how many of its
    kind were held back meanwhile.

    A kind is the logger, the level and the message with its numbers blanked out, so "cannot
    connect to node 1 (after 0ms)" and "... (after 3ms)" are one kind. For the client
    libraries' connection errors, which repeat many times a second while a broker is down
    and would bury everything else in the log.
    """

    _NUMBERS = re.compile(r"\d+")

    def __init__(self, window_s: float = 10.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}
        """kind -> (when one was last let through, how many were held back since)."""

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, self._NUMBERS.sub("#", record.getMessage()))
        now = self._clock()
        with self._lock:
            shown, held = self._kinds.get(kind, (-1e18, 0))
            if now - shown < self.window_s:
                self._kinds[kind] = (shown, held + 1)
                return False
            self._kinds[kind] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} more like this in the last "
            record.msg += f"{now - shown:.0f} s not shown)"
            record.args = ()  # (not None: mode's formatter would format the message with it)
        return True


def quiet_repeats(loggers: Iterable[str], window_s: float = 10.0) -> RepeatFilter:
    """Put one `RepeatFilter` on these loggers, unless they have one (it sees the records
    they create themselves: a logger's filters do not see its children's records)."""
    repeats = RepeatFilter(window_s)
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):  # (called again)
            logger.addFilter(repeats)
    return repeats


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any `extra=` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        line = orjson.dumps(entry, default=str).decode()
        return redact(line)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(
    level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None
) -> logging.Handler:
    """Install one redacting handler on the root logger (replacing earlier ones of ours)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    handler.set_name("kis-stream")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "kis-stream":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def secret_filter_for(handler: logging.Handler) -> logging.Handler:
    """Add the redaction filter to a handler someone else created (e.g. pytest's caplog)."""
    handler.addFilter(RedactingFilter())
    return handler
