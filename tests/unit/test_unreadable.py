"""A record batch a consumer cannot read holds its partition there (stream/unreadable.py).

Built on aiokafka's own record batch builder and its fetcher's ``PartitionRecords``, fed the
bytes a broker would send; the worker, replay and gap re-reader against a real broker are in
tests/integration/test_unreadable.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiokafka.codec
import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from stream import unreadable

TP = TopicPartition("heartbeats", 3)
SNAPPY = 2


def batch(base: int, count: int, compression: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for n in range(count):
        builder.append(n, timestamp=None, key=b"k", value=b'{"n": %d}' % (base + n), headers=[])
    data = bytearray(builder.build())
    data[0:8] = base.to_bytes(8, "big")  # the base offset, as the broker assigns it
    return bytes(data)


def partition_records(data: bytes, fetch_offset: int = 0) -> PartitionRecords:
    return PartitionRecords(
        TP, MemoryRecords(data), [], fetch_offset, None, None, False, "read_committed"
    )


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    unreadable.install()
    unreadable.take(TP.topic, TP.partition)
    yield
    unreadable.take(TP.topic, TP.partition)


def without_snappy(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, a process built without the snappy codec."""
    monkeypatch.setattr(aiokafka.codec, "has_snappy", lambda: False)


def test_readable_batches_are_delivered_as_before() -> None:
    records = partition_records(batch(0, 3) + batch(3, 2, SNAPPY))
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert records.next_fetch_offset == 5
    assert unreadable.take(TP.topic, TP.partition) is None


def test_an_unreadable_batch_holds_the_partition_at_its_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = batch(0, 3) + batch(3, 4, SNAPPY) + batch(7, 2)
    without_snappy(monkeypatch)
    records = partition_records(data)
    assert [r.offset for r in records] == [0, 1, 2]  # what precedes it is delivered
    assert records.next_fetch_offset == 3  # the next fetch starts at the batch, not past it
    report = unreadable.take(TP.topic, TP.partition)
    assert report is not None
    assert (report.topic, report.partition, report.offset) == ("heartbeats", 3, 3)
    assert "snappy" in report.cause
    assert "heartbeats[3] offset 3" in report.describe()
    assert unreadable.take(TP.topic, TP.partition) is None  # taken once


def test_a_corrupt_batch_is_held_too() -> None:
    good, bad = batch(0, 2), bytearray(batch(2, 2))
    bad[-3] ^= 0xFF  # a flipped byte in a record: the CRC no longer matches
    records = PartitionRecords(
        TP, MemoryRecords(good + bytes(bad)), [], 0, None, None, True, "read_committed"
    )
    assert [r.offset for r in records] == [0, 1]
    report = unreadable.take(TP.topic, TP.partition)
    assert report is not None
    assert report.offset == 2
    assert "CorruptRecord" in report.cause


def test_once_the_codec_is_there_the_same_bytes_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    data = batch(0, 2, SNAPPY)
    without_snappy(monkeypatch)
    assert list(partition_records(data)) == []
    assert unreadable.take(TP.topic, TP.partition) is not None
    monkeypatch.undo()
    assert [r.offset for r in partition_records(data)] == [0, 1]


def test_reports_are_taken_per_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    data = batch(5, 1, SNAPPY)
    without_snappy(monkeypatch)
    assert list(partition_records(data, 5)) == []
    assert unreadable.take_all("other-topic") == []
    assert [r.offset for r in unreadable.take_all("heartbeats")] == [5]
