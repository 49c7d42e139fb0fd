"""Writes to a Faust table in a partition named by the caller, without Faust's per-key layers.

`table[key] = value` costs, per key, Faust's current-event lookup (to find the changelog
partition), the source-topic check, the serializer lookups of the channel and the sensors;
in the spread's profile that was about a fifth of the worker's CPU (docs/benchmarks.md). The
spread writes a quote per input and deletes it later, from the agent and from its release
timer (outside any event), always knowing the partition.

`TableWriter` writes the table's store and appends the changelog record exactly as Faust's
write does (same key and value bytes, same partition, the same delivery watch as
`faust_speed.apply_fast_changelog`), with the codecs resolved once. Without a started
producer or with a store other than memory it goes through the table's own
`send_changelog`, which needs no current event either.
"""

from __future__ import annotations

from typing import Any

from aiokafka.structs import TopicPartition
from faust.serializers.codecs import get_codec

from processors.faust_speed import append_record, kafka_producer, watch_changelog_batch

_MISSING = object()


class TableWriter:
    """`set` and `delete` keys of one Faust table in a given changelog partition."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._tps: dict[int, TopicPartition] = {}
        self._dumps_key: Any = None
        self._dumps_value: Any = None

    def set(self, partition: int, key: Any, value: Any) -> None:
        self.table.data[key] = value
        self._send(partition, key, value)

    def delete(self, partition: int, key: Any) -> bool:
        """Remove a key (a tombstone in the changelog); False if it was not there."""
        if self.table.data.pop(key, _MISSING) is _MISSING:
            return False
        self._send(partition, key, None)
        return True

    def _send(self, partition: int, key: Any, value: Any) -> None:
        table = self.table
        app = table.app
        kafka = kafka_producer(app)
        if kafka is not None and app.conf.store.scheme == "memory":
            if self._dumps_key is None:
                self._resolve()
            tp = self._tps.get(partition)
            if tp is None:
                tp = self._tps[partition] = TopicPartition(
                    table.changelog_topic.get_topic_name(), partition
                )
            value_bytes = None if value is None else self._dumps_value(value)
            batch = append_record(kafka, tp, self._dumps_key(key), value_bytes)
            if batch is not None:
                watch_changelog_batch(table, tp, batch)
                return
        if value is None:
            table.send_changelog(partition, key, None, value_serializer="raw")
        else:
            table.send_changelog(partition, key, value)

    def _resolve(self) -> None:
        """The codecs Faust's changelog channel would pick for this table's keys and values."""
        table = self.table
        serializers = table.app.serializers
        key_codec = serializers._serializer(None, table.key_serializer, serializers.key_serializer)
        value_codec = serializers._serializer(
            None, table.value_serializer, serializers.value_serializer
        )
        self._dumps_key = _dumper(key_codec)
        self._dumps_value = _dumper(value_codec)


def _dumper(codec: Any) -> Any:
    """bytes of a key or value as Faust's registry makes them with this codec (bytes pass)."""
    if not codec:
        return lambda obj: obj if isinstance(obj, bytes) else obj.encode()
    dumps = get_codec(codec).dumps
    return lambda obj: obj if isinstance(obj, bytes) else dumps(obj)
