"""Record builders laid out in catalogue order, whatever that order is."""

from __future__ import annotations

from simulator.fields import RowLayout, row_layout
from simulator.spec import load_layouts


def test_a_catalogue_that_starts_with_the_known_order_gets_a_prefix() -> None:
    layout = RowLayout(("A", "B", "C"), ("A", "B"))
    assert layout.arrange(["a", "b", "c"]) == ["a", "b"]
    full = ["a", "b", "c"]
    assert RowLayout(("A", "B", "C"), ("A", "B", "C")).arrange(full) is full


def test_reordered_renamed_and_unknown_fields() -> None:
    layout = RowLayout(("A", "B", "C"), ("C", "NEW", "ALIAS_OF_A"), {"ALIAS_OF_A": "A"})
    assert layout.arrange(["a", "b", "c"]) == ["c", "", "a"]
    single = RowLayout(("A", "B"), ("B",))
    assert single.arrange(["a", "b"]) == ["b"]
    assert RowLayout(("A", "B"), ("X",)).arrange(["a", "b"]) == [""]


def test_every_domestic_tr_of_the_catalogue_has_a_builder() -> None:
    for tr_id, layout in load_layouts().items():
        if layout.venue == "OVERSEAS" or layout.kind == "notice":
            continue
        assert row_layout(layout.kind, layout.names) is not None, tr_id
