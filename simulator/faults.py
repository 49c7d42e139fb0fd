"""Fault injection: what the control endpoint and the CLI flags can switch on.

`POST /_sim/faults` takes one JSON object; each key is a command (`drop_connections`,
`stall_seconds`, `malformed_rate`, `malformed_kinds`, `extra_field`, `missing_fields`,
`refuse_subscribe`, `expire_approval_keys`, `trigger_vi`, `clear`). The state that outlives a
command (rates, drifted fields, stalls, subscribe refusals) lives here; one-shot actions are
carried out by the server.

Subscribe refusals answer a registration request with an error KIS really sends, without
registering it: `max_subscribe` (OPSP0008 MAX SUBSCRIBE OVER, what KIS answers while it still
counts a dropped connection's registrations: a client may ask again later) or
`invalid_tr_key` (JSON PARSING ERROR : invalid tr_key, which asking again cannot change).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

MALFORMED_KINDS = ("truncated", "bad_count", "garbage", "unknown_tr", "bad_utf8")
REFUSAL_REPLIES = ("max_subscribe", "invalid_tr_key")


class FaultError(ValueError):
    """A fault command that cannot be applied (reported to the caller as HTTP 400)."""


@dataclass
class RefusalRule:
    """Refuse matching registration requests: the first `times` of each (tr_id, key), or
    each one with probability `rate`. None in `tr_id`/`tr_key` matches any."""

    tr_id: str | None = None
    tr_key: str | None = None
    times: int | None = 1
    rate: float = 0.0
    reply: str = "max_subscribe"
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    refused: int = 0

    def matches(self, tr_id: str, tr_key: str) -> bool:
        return (self.tr_id is None or self.tr_id == tr_id) and (
            self.tr_key is None or self.tr_key == tr_key
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "tr_id": self.tr_id,
            "tr_key": self.tr_key,
            "times": self.times,
            "rate": self.rate,
            "reply": self.reply,
            "refused": self.refused,
        }


@dataclass
class Faults:
    seed: int = 1
    malformed_rate: float = 0.0
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    extra_fields: dict[str, str] = field(default_factory=dict)
    """tr_id -> value appended to every record of that TR (KIS-style field drift)."""
    missing_fields: dict[str, int] = field(default_factory=dict)
    """tr_id -> trailing fields left out of every record (an older or paper server)."""
    stalled_until: float = 0.0
    refusals: list[RefusalRule] = field(default_factory=list)
    subscribe_refused: int = 0
    """Registration requests refused by `refusals` so far."""
    rng: random.Random = field(init=False, repr=False)
    refusal_rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}:faults")
        self.refusal_rng = random.Random(f"{self.seed}:refusals")

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "malformed_rate": self.malformed_rate,
            "malformed_kinds": list(self.malformed_kinds),
            "extra_field": dict(self.extra_fields),
            "missing_fields": dict(self.missing_fields),
            "stalled_for": max(0.0, self.stalled_until - now),
            "refuse_subscribe": [rule.snapshot() for rule in self.refusals],
            "subscribe_refused": self.subscribe_refused,
        }

    def configure(self, command: dict[str, Any], now: float) -> None:
        """Apply the persistent parts of a command; raises FaultError on bad input."""
        if command.get("clear"):
            self.malformed_rate = 0.0
            self.malformed_kinds = MALFORMED_KINDS
            self.extra_fields.clear()
            self.missing_fields.clear()
            self.stalled_until = 0.0
            self.refusals.clear()
        if "malformed_rate" in command:
            rate = command["malformed_rate"]
            if not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise FaultError("malformed_rate must be a number in [0, 1]")
            self.malformed_rate = float(rate)
        if "malformed_kinds" in command:
            kinds = command["malformed_kinds"]
            if not isinstance(kinds, list) or not kinds or set(kinds) - set(MALFORMED_KINDS):
                raise FaultError(f"malformed_kinds must be a non-empty subset of {MALFORMED_KINDS}")
            self.malformed_kinds = tuple(kinds)
        if "stall_seconds" in command:
            seconds = command["stall_seconds"]
            if not isinstance(seconds, int | float) or seconds < 0:
                raise FaultError("stall_seconds must be a non-negative number")
            self.stalled_until = now + float(seconds)
        if "extra_field" in command:
            self._configure_extra(command["extra_field"])
        if "missing_fields" in command:
            self._configure_missing(command["missing_fields"])
        if "refuse_subscribe" in command:
            self._configure_refusals(command["refuse_subscribe"])

    def _configure_refusals(self, spec: Any) -> None:
        if spec is None:
            self.refusals.clear()
            return
        rules = []
        for item in spec if isinstance(spec, list) else [spec]:
            rules.append(_refusal_rule(item))
        self.refusals.extend(rules)  # all or nothing: a bad item applies none

    def refusal(self, tr_id: str, tr_key: str) -> str | None:
        """The error reply (one of REFUSAL_REPLIES) to a registration request, or None to
        accept it. Counts the attempt against every matching rule that limits by `times`."""
        for rule in self.refusals:
            if not rule.matches(tr_id, tr_key):
                continue
            if rule.times is not None:
                seen = rule.attempts.get((tr_id, tr_key), 0)
                if seen >= rule.times:
                    continue
                rule.attempts[(tr_id, tr_key)] = seen + 1
            elif not self.refusal_rng.random() < rule.rate:
                continue
            rule.refused += 1
            self.subscribe_refused += 1
            return rule.reply
        return None

    def _configure_extra(self, spec: Any) -> None:
        if spec is None:
            self.extra_fields.clear()
            return
        specs = spec if isinstance(spec, list) else [spec]
        for item in specs:
            if isinstance(item, str):
                item = {"tr_id": item}
            if not isinstance(item, dict) or not isinstance(item.get("tr_id"), str):
                raise FaultError(
                    'extra_field must be {"tr_id": ..., "value"?: ..., "enabled"?: ...}'
                )
            if item.get("enabled", True):
                self.extra_fields[item["tr_id"]] = str(item.get("value", "X"))
            else:
                self.extra_fields.pop(item["tr_id"], None)

    def _configure_missing(self, spec: Any) -> None:
        if spec is None:
            self.missing_fields.clear()
            return
        for item in spec if isinstance(spec, list) else [spec]:
            count = item.get("count", 1) if isinstance(item, dict) else None
            if not isinstance(item.get("tr_id") if isinstance(item, dict) else None, str) or (
                not isinstance(count, int) or count < 0
            ):
                raise FaultError('missing_fields must be {"tr_id": ..., "count"?: n >= 0}')
            if count:
                self.missing_fields[item["tr_id"]] = count
            else:
                self.missing_fields.pop(item["tr_id"], None)

    def stalled(self, now: float) -> float:
        """Seconds left of the current stall (0 if none)."""
        return max(0.0, self.stalled_until - now)

    def pick_malformed(self) -> str | None:
        """The kind of corruption for the next data frame, or None to send it intact."""
        if self.malformed_rate and self.rng.random() < self.malformed_rate:
            return self.rng.choice(self.malformed_kinds)
        return None

    def malform(self, frame: str, kind: str) -> str | bytes:
        """A corrupted version of a data frame (bytes for 'bad_utf8', sent as binary)."""
        head, _, payload = frame.partition("|")
        if kind == "truncated":
            cut = len(frame) - max(1, len(payload) // 3)
            return frame[: max(cut, len(head) + 1)]
        if kind == "bad_count":
            parts = frame.split("|", 3)
            if len(parts) == 4:
                parts[2] = "0x" + parts[2][-1]
            return "|".join(parts)
        if kind == "garbage":
            return "".join(self.rng.choice("^|0123456789abc~") for _ in range(40))
        if kind == "unknown_tr":
            parts = frame.split("|", 3)
            if len(parts) == 4:
                parts[1] = "H0ZZZZZ0"
            return "|".join(parts)
        raw = frame.encode("utf-8")
        at = len(raw) // 2
        return raw[:at] + b"\xff\xfe" + raw[at:]


def _refusal_rule(item: Any) -> RefusalRule:
    usage = (
        'refuse_subscribe must be {"tr_id"?: ..., "tr_key"?: ..., "times"?: n >= 1 | '
        f'"rate"?: p in (0, 1], "reply"?: one of {REFUSAL_REPLIES}}}'
    )
    if not isinstance(item, dict) or set(item) - {"tr_id", "tr_key", "times", "rate", "reply"}:
        raise FaultError(usage)
    tr_id, tr_key = item.get("tr_id"), item.get("tr_key")
    times, rate = item.get("times"), item.get("rate")
    reply = item.get("reply", "max_subscribe")
    if any(v is not None and (not isinstance(v, str) or not v) for v in (tr_id, tr_key)):
        raise FaultError(usage)
    if reply not in REFUSAL_REPLIES or (times is not None and rate is not None):
        raise FaultError(usage)
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
            raise FaultError(usage)
        return RefusalRule(tr_id, tr_key, None, float(rate), reply)
    times = 1 if times is None else times
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise FaultError(usage)
    return RefusalRule(tr_id, tr_key, times, 0.0, reply)
