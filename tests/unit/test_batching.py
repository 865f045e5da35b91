"""The hand-off of whole fetches from Faust's consumer to the agent (stream/batching.py).

Pure logic with stand-ins for Faust's app and consumer; the same code against a real broker is
exercised by every worker test in tests/integration (pipeline, DLQ, rebalance, crash, replay).
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from mode.utils.queues import FlowControlEvent

from stream.batching import FETCHES_BUFFERED, BatchChannel, BatchingConsumer, from_faust


def in_event_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@dataclass(eq=False)
class FakeRecord:
    offset: int
    generation_id: int = 1
    topic: str = "heartbeats"
    partition: int = 0
    key: bytes | None = b"k"
    value: bytes | None = b"{}"
    timestamp: float | None = 1_765_000_000.123
    """Faust's: the record's milliseconds / 1000."""
    tracked: bool = False

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass
class FakeConsumer:
    tracked: list[int] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)

    def track_message(self, message: FakeRecord) -> None:
        self.tracked.append(message.offset)

    def ack(self, message: FakeRecord) -> bool:
        self.acked.append(message.offset)
        return True


@dataclass
class FakeMonitor:
    stream_inbound_time: dict[Any, float] = field(default_factory=dict)


@dataclass
class FakeApp:
    consumer: FakeConsumer = field(default_factory=FakeConsumer)
    monitor: FakeMonitor = field(default_factory=FakeMonitor)
    flow_control: FlowControlEvent = field(default_factory=FlowControlEvent)
    consumer_generation_id: int = 1


BIG = 1 << 30
"""A byte bound that never binds."""


def records(*offsets: int, generation: int = 1) -> list[Any]:
    return [FakeRecord(o, generation) for o in offsets]


def channel(app: FakeApp) -> BatchChannel:
    app.flow_control.resume()
    return BatchChannel(app, "heartbeats")  # type: ignore[arg-type]


@in_event_loop
async def test_take_joins_buffered_fetches_up_to_the_limit() -> None:
    app = FakeApp()
    ch = channel(app)
    for fetch in (records(0, 1), records(2, 3), records(4, 5)):
        await ch.put(fetch)
    first = await ch.take(max_messages=3, max_bytes=BIG)
    assert [r.offset for r in first] == [0, 1, 2]
    second = await ch.take(max_messages=3, max_bytes=BIG)
    assert [r.offset for r in second] == [3, 4, 5]  # the rest of a cut fetch comes first


@in_event_loop
async def test_take_is_bounded_by_the_bytes_of_the_values() -> None:
    """A gateway's message holds a hundred heartbeats: the work of a batch is in its bytes."""
    ch = channel(FakeApp())
    fetch = [FakeRecord(n, value=b"x" * 100) for n in range(10)]
    await ch.put(fetch)
    assert [r.offset for r in await ch.take(max_messages=100, max_bytes=250)] == [0, 1, 2]
    assert [r.offset for r in await ch.take(max_messages=100, max_bytes=250)] == [3, 4, 5]
    await ch.put([FakeRecord(10, value=b"y" * 1000)])
    taken = await ch.take(max_messages=100, max_bytes=10_000)
    assert [r.offset for r in taken] == [6, 7, 8, 9, 10]


@in_event_loop
async def test_one_message_larger_than_the_bound_is_taken_alone() -> None:
    ch = channel(FakeApp())
    await ch.put([FakeRecord(0, value=b"z" * 5000), FakeRecord(1)])
    assert [r.offset for r in await ch.take(max_messages=100, max_bytes=10)] == [0]
    assert [r.offset for r in await ch.take(max_messages=100, max_bytes=10)] == [1]


@in_event_loop
async def test_taking_shows_faust_s_monitor_that_the_partitions_are_processed() -> None:
    """Faust's consumer logs "Stream has not started processing" for a partition with a backlog
    whose inbound time its monitor never saw; the channel bypasses the streams that set it."""
    app = FakeApp()
    ch = channel(app)
    await ch.put([FakeRecord(0, partition=0), FakeRecord(0, partition=3)])
    assert app.monitor.stream_inbound_time == {}
    await ch.take(max_messages=10, max_bytes=BIG)
    assert set(app.monitor.stream_inbound_time) == {("heartbeats", 0), ("heartbeats", 3)}


@in_event_loop
async def test_take_waits_for_a_fetch() -> None:
    ch = channel(FakeApp())
    taking = asyncio.ensure_future(ch.take(max_messages=10, max_bytes=BIG))
    await asyncio.sleep(0)
    assert not taking.done()
    await ch.put(records(7))
    assert [r.offset for r in await asyncio.wait_for(taking, 5)] == [7]


@in_event_loop
async def test_taken_messages_are_tracked_until_acknowledged() -> None:
    app = FakeApp()
    ch = channel(app)
    await ch.put(records(0, 1, 2))
    taken = await ch.take(max_messages=10, max_bytes=BIG)
    assert app.consumer.tracked == [0, 1, 2]
    assert all(r.tracked for r in taken)
    assert app.consumer.acked == []
    ch.ack(taken)
    assert app.consumer.acked == [0, 1, 2]


@in_event_loop
async def test_messages_of_an_older_generation_are_dropped_untracked() -> None:
    app = FakeApp(consumer_generation_id=2)
    ch = channel(app)
    await ch.put(records(0, 1, generation=1))  # fetched before the rebalance
    await ch.put(records(5, 6, generation=2))
    taken = await ch.take(max_messages=10, max_bytes=BIG)
    assert [r.offset for r in taken] == [5, 6]
    assert app.consumer.tracked == [5, 6]


@in_event_loop
async def test_take_skips_a_take_made_only_of_stale_messages() -> None:
    app = FakeApp(consumer_generation_id=2)
    ch = channel(app)
    await ch.put(records(0, generation=1))
    taking = asyncio.ensure_future(ch.take(max_messages=1, max_bytes=BIG))
    await asyncio.sleep(0)
    assert not taking.done()  # nothing current yet: still waiting
    await ch.put(records(3, generation=2))
    assert [r.offset for r in await asyncio.wait_for(taking, 5)] == [3]


@in_event_loop
async def test_a_rebalance_clears_what_was_not_taken() -> None:
    app = FakeApp()
    ch = channel(app)
    await ch.put(records(0, 1))
    app.flow_control.suspend()
    app.flow_control.clear()  # what Faust does when partitions are revoked
    app.flow_control.resume()
    await ch.put(records(0, 1, 2))  # fetched again from the committed offset
    assert [r.offset for r in await ch.take(max_messages=10, max_bytes=BIG)] == [0, 1, 2]


@in_event_loop
async def test_the_channel_holds_a_bounded_number_of_fetches() -> None:
    ch = channel(FakeApp())
    for n in range(FETCHES_BUFFERED):
        await ch.put(records(n))
    blocked = asyncio.ensure_future(ch.put(records(99)))
    await asyncio.sleep(0)
    assert not blocked.done()  # the fetch loop waits: back-pressure towards Kafka
    await ch.take(max_messages=1, max_bytes=BIG)
    await asyncio.wait_for(blocked, 5)


def test_a_tombstone_becomes_an_empty_value() -> None:
    message = from_faust(FakeRecord(3, value=None))
    assert (message.partition, message.offset, message.value) == (0, 3, b"")


def test_a_message_keeps_its_record_time_to_the_millisecond() -> None:
    for millis in (0, 1_765_000_000_123, 1_765_000_000_999, 253_402_300_799_999):
        message = from_faust(FakeRecord(3, timestamp=millis / 1000))
        assert message.timestamp == millis
    assert from_faust(FakeRecord(3, timestamp=None)).timestamp is None


class FakeTopics:
    def acks_enabled_for(self, topic: str) -> bool:
        return True


def consumer_with_read_offsets() -> BatchingConsumer:
    """A BatchingConsumer with only what ``_admit`` touches: its read offsets and the app."""
    consumer = BatchingConsumer.__new__(BatchingConsumer)
    consumer._read_offset = defaultdict(lambda: None)
    consumer.app = type("App", (), {"topics": FakeTopics()})()
    return consumer


@pytest.mark.parametrize(
    ("offsets", "admitted", "gaps"),
    [
        ([0, 1, 2], [0, 1, 2], []),
        ([5, 5, 6], [5, 5, 6], []),  # the same offset again is admitted, as Faust does
        ([4, 3, 5], [4, 5], []),  # below the read offset: already read, dropped
        # A hole in the log (compaction, a marker): Faust's _add_gap(read + 1, offset).
        ([2, 3, 7], [2, 3, 7], [(4, 7)]),
    ],
)
def test_admit_keeps_fausts_read_offset_bookkeeping(
    offsets: list[int], admitted: list[int], gaps: list[tuple[int, int]]
) -> None:
    consumer = consumer_with_read_offsets()
    tp = ("heartbeats", 0)
    kept: list[int] = []
    recorded: list[tuple[int, int]] = []
    for offset in offsets:
        new, gap = consumer._admit(tp, FakeRecord(offset))  # type: ignore[arg-type]
        kept += [offset] if new else []
        recorded += [gap] if gap else []
    assert kept == admitted
    assert recorded == gaps
    assert consumer._read_offset[tp] == max(offsets)


@in_event_loop
async def test_taken_messages_name_what_the_consumer_delivered_before_them() -> None:
    app = FakeApp()
    ch = channel(app)
    await ch.put(records(0, 1, 2))
    first = ch.messages(await ch.take(max_messages=2, max_bytes=BIG))
    second = ch.messages(await ch.take(max_messages=2, max_bytes=BIG))
    assert [(m.offset, m.previous) for m in first] == [(0, None), (1, None)]
    assert [(m.offset, m.previous) for m in second] == [(2, 1)]


@in_event_loop
async def test_after_a_rebalance_nothing_is_known_to_precede_the_next_messages() -> None:
    app = FakeApp()
    ch = channel(app)
    await ch.put(records(0, 1))
    ch.messages(await ch.take(max_messages=10, max_bytes=BIG))
    app.consumer_generation_id = 2  # the consumer sought back to the committed offsets
    await ch.put(records(5, generation=2))
    assert [m.previous for m in ch.messages(await ch.take(max_messages=10, max_bytes=BIG))] == [
        None
    ]
