"""Spool.discard / unread_messages: dropping left-over records the broker already holds."""

from __future__ import annotations

from pathlib import Path

from producer.spool import Spool, SpoolMessage
from producer.spool_dedupe import identity


def _msg(i: int) -> SpoolMessage:
    return SpoolMessage("kis.h0stcnt0", f"k{i % 3}".encode(), f"value-{i:04d}".encode(), i)


def _drain(spool: Spool) -> list[SpoolMessage]:
    out = []
    while (item := spool.peek()) is not None:
        offset, message = item
        spool.advance()
        spool.ack(offset)
        out.append(message)
    return out


def test_discarded_records_are_never_handed_out_and_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=150)
    sent = [_msg(i) for i in range(40)]
    for m in sent[10:]:
        spool.append(m)
    spool.prepend(sent[:10])
    spool.close()

    again = Spool(tmp_path, segment_bytes=150)
    listed = list(again.unread_messages())
    assert [m for _, m in listed] == sent
    drop = {0, 1, 2, 5, 9, 17, 39}  # a leading run, holes, a whole-segment tail
    assert again.discard(offset for offset, m in listed if m.received_at in drop) == len(drop)
    assert again.discard([listed[0][0]]) == 0, "discarding twice is a no-op"
    assert again.depth == again.unread == 40 - len(drop)
    again.close()  # persisted: a restart does not bring them back

    third = Spool(tmp_path, segment_bytes=150)
    assert third.depth == third.unread == 40 - len(drop)
    assert _drain(third) == [m for m in sent if m.received_at not in drop]
    third.close()
    assert not list(tmp_path.glob("*.seg"))


def test_identity_tells_a_missing_key_from_an_empty_one() -> None:
    assert identity(None, b"v") != identity(b"", b"v")
    assert identity(b"ab", b"c") != identity(b"a", b"bc")
    assert identity(b"k", b"v") == identity(b"k", b"v")
