"""The subscription plan: which (tr_id, tr_key) pairs to register, and on which session.

KIS accepts about 41 registrations per session and one session per app key, so a plan
larger than that is sharded across app keys. A plan that does not fit fails at start-up
with a message saying how to fix it: subscribing a silent subset would lose data unnoticed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from producer.catalogue import Catalogue, TrSpec, load_catalogue

# Setting group name -> catalogue kind.
GROUP_KINDS: dict[str, str] = {
    "trades": "trade",
    "books": "book",
    "program": "program",
    "expected": "expected",
    "status": "market_status",
    "notices": "notice",
}
DOMESTIC_VENUES = frozenset({"KRX", "NXT", "UN"})


class PlanError(ValueError):
    """The configured plan cannot be subscribed as a whole."""


@dataclass(frozen=True, slots=True, order=True)
class Subscription:
    tr_id: str
    tr_key: str


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """The registrations of one session (one app key)."""

    index: int
    subscriptions: tuple[Subscription, ...]

    @property
    def name(self) -> str:
        return f"s{self.index}"


def _tr_id_for(spec: TrSpec, paper: bool) -> str:
    if not paper:
        return spec.tr_id
    if spec.paper_tr_id is None:
        raise PlanError(
            f"{spec.tr_id} ({spec.name}) has no paper-trading variant: "
            "remove its venue or TR group, or use KIS_ENV=real"
        )
    return spec.paper_tr_id


def build_subscriptions(
    *,
    symbols: Sequence[str],
    groups: Iterable[str],
    venues: Iterable[str],
    overseas_symbols: Sequence[str] = (),
    hts_id: str | None = None,
    paper: bool = False,
    catalogue: Catalogue | None = None,
) -> list[Subscription]:
    """Every registration the settings ask for, grouped by symbol (a symbol's TRs together)."""
    catalogue = catalogue or load_catalogue()
    venue_set = set(venues)
    kinds = [GROUP_KINDS[g] for g in dict.fromkeys(groups)]
    market_kinds = [k for k in kinds if k != "notice"]
    per_symbol: dict[str, list[str]] = {}

    def specs(kind: str, venue: str) -> list[TrSpec]:
        return [s for s in catalogue if s.kind == kind and s.venue == venue]

    for venue in sorted(venue_set):
        keys = overseas_symbols if venue == "OVERSEAS" else symbols
        tr_ids = [_tr_id_for(spec, paper) for kind in market_kinds for spec in specs(kind, venue)]
        for key in keys:
            per_symbol.setdefault(key, []).extend(tr_ids)

    result = [Subscription(tr_id, key) for key, tr_ids in per_symbol.items() for tr_id in tr_ids]
    if "notice" in kinds:
        if not hts_id:
            raise PlanError("TR group 'notices' needs KIS_HTS_ID")
        notice_venues = []
        if venue_set & DOMESTIC_VENUES:
            notice_venues.append("KR")
        if "OVERSEAS" in venue_set:
            notice_venues.append("OVERSEAS")
        for venue in notice_venues:
            result.extend(
                Subscription(_tr_id_for(s, paper), hts_id) for s in specs("notice", venue)
            )
    if len(set(result)) != len(result):
        raise PlanError("the plan lists a registration twice")
    return result


def shard(
    subscriptions: Sequence[Subscription], *, sessions_available: int, per_session: int
) -> list[SessionPlan]:
    """Spread the plan evenly over as few sessions as it needs; PlanError when it cannot fit."""
    total = len(subscriptions)
    capacity = sessions_available * per_session
    if total == 0:
        raise PlanError("the subscription plan is empty: check KIS_SYMBOLS and KIS_VENUES")
    if total > capacity:
        needed = math.ceil(total / per_session)
        raise PlanError(
            f"the subscription plan needs {total} registrations but {sessions_available} app "
            f"key(s) allow only {capacity} ({per_session} per session); add "
            f"{needed - sessions_available} app key(s) to KIS_APP_KEYS or reduce KIS_SYMBOLS, "
            "KIS_TR_GROUPS or KIS_VENUES"
        )
    count = math.ceil(total / per_session)
    size = math.ceil(total / count)
    chunks = [tuple(subscriptions[i : i + size]) for i in range(0, total, size)]
    return [SessionPlan(i, chunk) for i, chunk in enumerate(chunks)]
