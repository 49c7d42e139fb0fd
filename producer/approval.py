"""WebSocket approval keys: issued once, cached on disk, refreshed on age or rejection.

KIS rate-limits issuing approval keys, so a key is reused across reconnects and restarts
(cached under the spool directory, file mode 0600, named by a hash of the app key and the
REST base so neither appears in a file name). The key itself is a secret: it is registered
with the log redaction filter the moment it is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from kis_stream.logging import register_secret
from kis_stream.settings import AppCredential

log = logging.getLogger(__name__)


class ApprovalError(RuntimeError):
    """The approval key could not be issued (network, HTTP error or unexpected reply)."""


class ApprovalKeys:
    """Approval keys per app key, thread-safe (one session thread per app key)."""

    def __init__(
        self, rest_url: str, cache_dir: Path, *, ttl_s: float, timeout_s: float = 10.0
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.cache_dir = cache_dir
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def _cache_path(self, cred: AppCredential) -> Path:
        digest = hashlib.sha256(
            (self.rest_url + "\0" + cred.app_key.get_secret_value()).encode()
        ).hexdigest()[:24]
        return self.cache_dir / f"approval-{digest}.json"

    def get(self, cred: AppCredential) -> str:
        """A valid approval key: the cached one while younger than the TTL, else a new one."""
        with self._lock:
            cached = self._read_cache(cred)
            if cached is not None:
                return cached
            key = self._issue(cred)
            self._write_cache(cred, key)
            return key

    def invalidate(self, cred: AppCredential) -> None:
        """The server rejected the key: forget it so that the next `get` issues a new one."""
        with self._lock:
            self._cache_path(cred).unlink(missing_ok=True)

    def _read_cache(self, cred: AppCredential) -> str | None:
        path = self._cache_path(cred)
        try:
            doc = json.loads(path.read_text())
            key, issued_at = str(doc["approval_key"]), float(doc["issued_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        register_secret(key)
        if time.time() - issued_at >= self.ttl_s or not key:
            return None
        return key

    def _write_cache(self, cred: AppCredential, key: str) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self._cache_path(cred)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"approval_key": key, "issued_at": time.time()}, handle)
        tmp.replace(path)

    def _issue(self, cred: AppCredential) -> str:
        body = json.dumps(
            {
                "grant_type": "client_credentials",
                "appkey": cred.app_key.get_secret_value(),
                "secretkey": cred.app_secret.get_secret_value(),
            }
        ).encode()
        request = urllib.request.Request(
            self.rest_url + "/oauth2/Approval",
            data=body,
            headers={"content-type": "application/json; charset=utf-8"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                doc = json.loads(reply.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace")
            raise ApprovalError(f"approval key request failed: HTTP {exc.code} {detail}") from None
        except (OSError, ValueError) as exc:
            raise ApprovalError(f"approval key request failed: {exc}") from None
        key = doc.get("approval_key") if isinstance(doc, dict) else None
        if not isinstance(key, str) or not key:
            raise ApprovalError("approval key reply carries no approval_key")
        register_secret(key)
        log.info("issued a new approval key", extra={"rest_url": self.rest_url})
        return key
