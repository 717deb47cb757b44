"""Record conversions without I/O: pages that fit their budget and reassemble, untrusted decoding."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from tesseract.dht import protocol as wire
from tesseract.dht.records import (
    entry_size,
    merge_records,
    record_from_message,
    record_page,
    to_found,
)
from tesseract.dht.storage import Entry, Record

encode = msgspec.msgpack.encode


def dictionary(count: int, value_size: int = 30) -> Record:
    return Record(None, {encode(i): Entry(b"v" * value_size, 1000.0 + i) for i in range(count)})


def read_in_pages(record: Record, budget: int) -> tuple[Record | None, int]:
    """Page through ``record`` as an asker would; (what it reassembled, pages)."""
    page, more = record_page(record, budget)
    whole, pages = record_from_message(page), 1
    while more:
        assert whole is not None, "a page must hold at least one entry"
        page, more = record_page(record, budget, after=max(whole.subkeys))
        whole, pages = merge_records(whole, record_from_message(page)), pages + 1
    return whole, pages


@given(
    count=st.integers(1, 300),
    value_size=st.integers(0, 700),
    budget=st.integers(800, 20_000),
)
def test_pages_fit_their_budget_and_reassemble_the_whole_record(count, value_size, budget) -> None:
    record = dictionary(count, value_size)
    whole, pages = read_in_pages(record, budget)
    assert whole == record
    page, _ = record_page(record, budget)
    assert len(encode(page)) <= budget
    if pages > 1:
        assert len(encode(page)) > budget - entry_size(encode(count), b"v" * value_size) - 8


def test_entry_size_is_the_encoded_size() -> None:
    for subkey_size, value_size in [(1, 0), (3, 255), (200, 256), (256, 16_384)]:
        entry = wire.SubEntry(b"k" * subkey_size, b"v" * value_size, 1.5)
        assert entry_size(entry.subkey, entry.value) == len(encode(entry))


def test_four_thousand_sub_keys_take_a_few_pages_in_sub_key_order() -> None:
    record = dictionary(4096)
    whole, pages = read_in_pages(record, 60_000)
    assert whole == record and 2 <= pages <= 5
    page, more = record_page(record, 60_000)
    subkeys = [entry.subkey for entry in page.subkeys]
    assert more and subkeys == sorted(subkeys)


def test_a_plain_value_is_whole_or_absent() -> None:
    record = Record(Entry(b"x" * 1000, 5.0))
    assert record_page(record, 2000) == (wire.RecordMessage(b"x" * 1000, 5.0), False)
    assert record_page(record, 500) == (None, True)


def test_undecodable_or_unhashable_entries_are_left_out() -> None:
    record = Record(
        None,
        {
            encode(1): Entry(encode("good"), 100.0),
            encode([1, 2]): Entry(encode("a list is not a dict key"), 100.0),
            encode(3): Entry(b"\xc1", 100.0),  # never valid msgpack
            encode(4): Entry(encode("expired"), 5.0),
        },
    )
    found = to_found(record, now=10.0)
    assert found.is_dictionary and {k: v.value for k, v in found.subkeys.items()} == {1: "good"}
    assert to_found(Record(Entry(b"\xc1", 100.0)), now=10.0) is None
    assert record_from_message(wire.RecordMessage(None, 1.0, [])) is None
