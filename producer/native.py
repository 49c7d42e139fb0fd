"""Whether the compiled hot path (`kis_native`, built from native/) is in use.

producer/frames.py and producer/avro.py are the reference implementation; when the
`kis_native` extension imports and its version is the one this tree expects, they hand
their per-field work to it (same outputs, byte for byte). ``KIS_STREAM_PURE_PYTHON=1``
forces the pure-Python path (tests compare both; benchmarks report both). Which one is in
use is logged once, at INFO.

The choice is made when a decoder or encoder is built, so a test can build one of each
kind in the same process by setting the variable in between.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

log = logging.getLogger(__name__)

EXPECTED_VERSION = "0.2.0"
"""native/Cargo.toml's version: a stale build (older sources) is not used."""
PURE_PYTHON_ENV = "KIS_STREAM_PURE_PYTHON"

_loaded: ModuleType | None = None
_load_error: str | None = None
_attempted = False
_announced: set[bool] = set()


def pure_python_forced() -> bool:
    return os.environ.get(PURE_PYTHON_ENV, "").strip().lower() in ("1", "true", "yes")


def _load() -> ModuleType | None:
    global _loaded, _load_error, _attempted
    if not _attempted:
        _attempted = True
        try:
            module = importlib.import_module("kis_native")
        except ImportError as exc:
            _load_error = f"kis_native does not import ({exc})"
        else:
            version = getattr(module, "__version__", None)
            if version == EXPECTED_VERSION:
                _loaded = module
            else:
                _load_error = (
                    f"kis_native {version} is not the expected {EXPECTED_VERSION} "
                    "(rebuild: make venv)"
                )
    return _loaded


def native_module() -> ModuleType | None:
    """The extension module, or None when the pure-Python path is to be used."""
    module = None if pure_python_forced() else _load()
    in_use = module is not None
    if in_use not in _announced:
        _announced.add(in_use)
        if in_use:
            log.info("decode/encode hot path: native (kis_native %s)", EXPECTED_VERSION)
        elif pure_python_forced():
            log.info("decode/encode hot path: pure Python (%s=1)", PURE_PYTHON_ENV)
        else:
            log.info("decode/encode hot path: pure Python (%s)", _load_error)
    return module


def unavailable_reason() -> str | None:
    """Why the extension cannot be used (None when it can), ignoring the override."""
    _load()
    return _load_error


@contextmanager
def pure_python() -> Iterator[None]:
    """Decoders and encoders built inside use the pure-Python path (comparisons)."""
    old = os.environ.get(PURE_PYTHON_ENV)
    os.environ[PURE_PYTHON_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ[PURE_PYTHON_ENV]
        else:
            os.environ[PURE_PYTHON_ENV] = old
