"""WriteBack: a table's writes held until the batch is done (processors/writeback.py)."""

from __future__ import annotations

from typing import Any

import pytest

from processors.writeback import WriteBack


class _Table(dict[str, Any]):
    """A dict that records its writes in order, like a table's changelog."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.log: list[tuple[str, Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.log.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.log.append((key, None))
        super().__delitem__(key)


def test_reads_see_pending_writes_the_table_only_after_flush() -> None:
    table = _Table({"a": 1, "b": 2})
    store = WriteBack(table)
    store["a"] = 10
    store["c"] = 3
    del store["b"]
    assert store["a"] == 10 and store.get("c") == 3 and store.get("b") is None
    assert "b" not in store and "c" in store
    with pytest.raises(KeyError):
        store["b"]
    assert sorted(store) == ["a", "c"] and len(store) == 2
    assert table == {"a": 1, "b": 2} and table.log == []
    assert store.flush() == 3
    assert table == {"a": 10, "c": 3}


def test_one_write_per_key_in_the_order_of_last_change() -> None:
    table = _Table()
    store = WriteBack(table)
    store["open"] = 1
    store["history"] = "bar"
    store["open"] = 2  # the open state, changed after the history entry: written after it
    store["open"] = 3
    store.flush()
    assert table.log == [("history", "bar"), ("open", 3)]
    assert store.flush() == 0


def test_deleting_a_key_the_table_does_not_hold_writes_nothing() -> None:
    table = _Table()
    store = WriteBack(table)
    store["x"] = 1
    del store["x"]
    with pytest.raises(KeyError):
        del store["y"]
    store.flush()
    assert table.log == []


def test_discard_forgets_pending_writes() -> None:
    table = _Table({"a": 1})
    store = WriteBack(table)
    store["a"] = 2
    store.discard()
    assert store["a"] == 1 and store.flush() == 0
