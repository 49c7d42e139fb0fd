"""Writes to a Faust table in a partition named by the caller, without Faust's per-key layers.

`table[key] = value` costs, per key, Faust's current-event lookup (to find the changelog
partition), the source-topic check, the serializer lookups of the channel and the sensors;
in the spread's profile that was about a fifth of the worker's CPU (docs/benchmarks.md). The
spread keeps a quote per input and deletes it later, from the agent and from its release
timer (outside any event), always knowing the partition; it writes to the changelog only
the quotes a replay would need, when Faust commits (`set_local`, then `set`).

`TableWriter` writes the table's store and appends the changelog record exactly as Faust's
write does (same key and value bytes, same partition, the same delivery watch as
`faust_speed.apply_fast_changelog`), with the codecs resolved once. Without a started
producer or with a store other than memory it goes through the table's own
`send_changelog`, which needs no current event either.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from aiokafka.structs import TopicPartition
from faust.serializers import codecs
from faust.stores.memory import Store as MemoryStore
from faust.utils import json as faust_json
from mode.utils.compat import want_bytes

from processors.faust_speed import append_record, kafka_producer, watch_changelog_batch

_MISSING = object()


class TableWriter:
    """`set` and `delete` keys of one Faust table in a given changelog partition."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._kafka: Any = None
        """aiokafka's producer once started, while the fast path applies (memory store)."""
        self._tps: dict[int, TopicPartition] = {}
        self._items: MutableMapping[Any, Any] | None = None
        self._dumps_key: Callable[[Any], bytes] | None = None
        self._dumps_value: Callable[[Any], bytes] | None = None

    def set(self, partition: int, key: Any, value: Any) -> None:
        self.set_local(key, value)
        self._send(partition, key, value)

    def delete(self, partition: int, key: Any) -> bool:
        """Remove a key (a tombstone in the changelog); False if it was not there."""
        if (self._items or self._resolve_items()).pop(key, _MISSING) is _MISSING:
            return False
        self._send(partition, key, None)
        return True

    def set_local(self, key: Any, value: Any) -> None:
        """Set a key in this worker's store only (nothing in the changelog)."""
        (self._items or self._resolve_items())[key] = value

    def delete_local(self, key: Any) -> None:
        """Remove a key from this worker's store only (one never written to the changelog)."""
        (self._items or self._resolve_items()).pop(key, None)

    def _resolve_items(self) -> MutableMapping[Any, Any]:
        """The table's store; for the memory store, its dict (the store adds a call)."""
        store = self.table.data
        self._items = store.data if isinstance(store, MemoryStore) else store
        return self._items

    def _send(self, partition: int, key: Any, value: Any) -> None:
        kafka = self._kafka or self._fast()
        if kafka is not None:
            assert self._dumps_key is not None and self._dumps_value is not None
            tp = self._tps.get(partition)
            if tp is None:
                name = self.table.changelog_topic.get_topic_name()
                tp = self._tps[partition] = TopicPartition(name, partition)
            value_bytes = None if value is None else self._dumps_value(value)
            batch = append_record(kafka, tp, self._dumps_key(key), value_bytes)
            if batch is not None:
                watch_changelog_batch(self.table, tp, batch)
                return
            self._kafka = None  # (closed or failed: Faust's own path decides what happens)
        if value is None:
            self.table.send_changelog(partition, key, None, value_serializer="raw")
        else:
            self.table.send_changelog(partition, key, value)

    def _fast(self) -> Any:
        """aiokafka's producer if the fast path applies now (started, memory store)."""
        table = self.table
        app = table.app
        kafka = kafka_producer(app)
        if kafka is None or app.conf.store.scheme != "memory":
            return None
        if self._dumps_key is None or self._dumps_value is None:
            serializers = app.serializers
            self._dumps_key = dumper(
                serializers._serializer(None, table.key_serializer, serializers.key_serializer)
            )
            self._dumps_value = dumper(
                serializers._serializer(None, table.value_serializer, serializers.value_serializer)
            )
        self._kafka = kafka
        return kafka


def dumper(codec: Any) -> Callable[[Any], bytes]:
    """bytes of a key or value as Faust's registry makes them with this codec (bytes pass).

    Faust's plain json codec directly (its layers cost more than the encoding).
    """
    if not codec:
        return want_bytes
    resolved = codecs.get_codec(codec)
    if type(resolved) is codecs.json and list(resolved.nodes) == [resolved]:
        dumps = faust_json.dumps
        return lambda obj: obj if isinstance(obj, bytes) else want_bytes(dumps(obj))
    encode = resolved.dumps
    return lambda obj: obj if isinstance(obj, bytes) else encode(obj)
