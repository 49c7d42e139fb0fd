"""A write-back view of a Faust table: one changelog write per key per batch of inputs.

A Faust table sends a changelog record for every assignment, and the bars and program
ledgers change a key's state on every input: with batch delivery (processors/faust_speed.py)
that changelog traffic became the largest cost per input. `WriteBack` keeps the writes of
the inputs of one delivered batch in memory and writes each changed key once, with its last
value, when the agent has handled the batch's last record (`flush`), before any of the
batch is acknowledged, so that nothing is committed whose state is not in the changelog.

Order: keys are written in the order of their last change, so the changelog still holds a
prefix of the state after a crash in the middle of a flush. (The bars ledger writes a
published bar's history entry before the open state that records it; since the open state
is always changed after it, it is also flushed after it.)
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

_DELETED = object()


class WriteBack(MutableMapping[str, Any]):
    """Reads through to `table`; writes and deletions wait for `flush()` (see module doc)."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self.pending: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        value = self.pending.get(key, self)
        if value is self:
            return self.table[key]
        if value is _DELETED:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self.pending.get(key, self)
        if value is self:
            return self.table.get(key, default)
        return default if value is _DELETED else value

    def __contains__(self, key: object) -> bool:
        value = self.pending.get(key, self)  # type: ignore[call-overload]
        if value is self:
            return key in self.table
        return value is not _DELETED

    def __setitem__(self, key: str, value: Any) -> None:
        pending = self.pending
        pending.pop(key, None)  # (re-inserted last: flushed in the order of last change)
        pending[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.pending.pop(key, None)
        self.pending[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        for key in self.table:
            if key not in self.pending:
                yield key
        for key, value in list(self.pending.items()):
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> int:
        """Write the pending changes to the table (one changelog record each); how many."""
        pending, self.pending = self.pending, {}
        table = self.table
        for key, value in pending.items():
            if value is _DELETED:
                if key in table:
                    del table[key]
            else:
                table[key] = value
        return len(pending)

    def discard(self) -> None:
        """Forget the pending changes (their inputs were not acknowledged: read again)."""
        self.pending.clear()
