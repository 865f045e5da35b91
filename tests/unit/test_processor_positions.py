"""BatchProcessor's applied positions, and how it re-applies what Redis lost before a batch.

Pure logic with an in-memory stand-in for state/ (the Redis side of the same rules is tested in
tests/integration/test_state.py and, end to end with real crashes, in test_faults.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from state.batch import DeviceBatch
from state.write_types import ApplyResult, BatchResult, PackedBatch, Positions, Span
from stream.plan import Continuity, Message
from stream.processor import BatchProcessor

TOPIC = "heartbeats"
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


class MemoryState:
    """The advance rule of state/lua/advance_applied.lua, and the order batches were applied."""

    def __init__(self, stored: dict[int, int] | None = None) -> None:
        self.stored = dict(stored or {})
        self.applied: list[Positions] = []

    async def applied_positions(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, int | None]:
        return {p: self.stored.get(p) for p in partitions}

    def pack(self, batches: Sequence[DeviceBatch]) -> PackedBatch:
        return PackedBatch(batches, [], [])

    async def apply_packed(
        self, packed: PackedBatch, positions: Positions, progress: object = None
    ) -> BatchResult:
        batches = packed.batches
        self.applied.append(positions)
        previous: dict[int, int | None] = {}
        for p, span in positions.spans.items():
            found = self.stored.get(p, -1)
            previous[p] = None if found < 0 else found
            continues = span.first <= found + 1 or span.after == found
            if (span.force or continues) and span.last > found:
                self.stored[p] = span.last
        return BatchResult([ApplyResult() for _ in batches], previous)

    def leaving_out(self) -> bool:
        return False


class Log:
    """A partition log that still holds offsets from ``earliest`` on, read in chunks of 4;
    offsets in ``unreadable`` (transaction markers, aborted records) are never delivered."""

    def __init__(self, earliest: int = 0, unreadable: Sequence[int] = ()) -> None:
        self.earliest = earliest
        self.unreadable = set(unreadable)
        self.reads: list[tuple[int, int, int]] = []

    async def reread(
        self, topic: str, partition: int, start: int, stop: int
    ) -> AsyncIterator[list[Message]]:
        self.reads.append((partition, start, stop))
        offsets = [o for o in range(max(start, self.earliest), stop) if o not in self.unreadable]
        for i in range(0, len(offsets), 4):
            yield messages(partition, offsets[i : i + 4])


class NoClients:
    async def timezones(self, *_: object) -> dict[str, str]:
        return {}


class Letters:
    def __init__(self) -> None:
        self.sent = 0

    async def __call__(self, records: Sequence[object]) -> None:
        self.sent += len(records)


def processor(state: MemoryState, log: Log, letters: Letters | None = None) -> BatchProcessor:
    return BatchProcessor(
        registry=NoClients(),  # type: ignore[arg-type]
        writer=state,
        send=letters or Letters(),
        clock=lambda: NOW,
        default_timezone="UTC",
        retention_days=400,
        reread=log.reread,
    )


def messages(partition: int, offsets: Sequence[int]) -> list[Message]:
    return [Message(TOPIC, partition, o, None, b"not json") for o in offsets]


def run(proc: BatchProcessor, *batches: list[Message]) -> None:
    async def main() -> None:
        for batch in batches:
            await proc.process(batch)

    asyncio.run(main())


def test_consecutive_batches_advance_the_position_without_rereading() -> None:
    state, log = MemoryState(), Log()
    run(processor(state, log), messages(0, range(0, 10)), messages(0, range(10, 25)))
    assert state.stored == {0: 24}
    assert log.reads == []


def test_each_partition_of_a_batch_gets_its_own_span() -> None:
    state, log = MemoryState(), Log()
    run(processor(state, log), messages(0, range(0, 3)) + messages(1, range(0, 5)))
    assert state.applied[0].spans == {0: Span(0, 2), 1: Span(0, 4)}


def test_writes_lost_before_a_batch_are_reapplied_before_it_in_order() -> None:
    # Redis lost writes: it says 0..49 are applied, the consumer is already at 80.
    state, log = MemoryState({0: 49}), Log()
    run(processor(state, log), messages(0, range(80, 90)))
    assert log.reads == [(0, 50, 80)]
    reread = [p.spans[0] for p in state.applied[:-1]]
    assert reread[0] == Span(50, 53, force=True)
    assert [s.first for s in reread] == list(range(50, 80, 4))  # in order, before the batch
    assert state.applied[-1].spans == {0: Span(80, 89, force=True)}
    assert state.stored == {0: 89}


def test_nothing_stored_and_a_consumer_past_the_start_rereads_from_the_beginning() -> None:
    state, log = MemoryState(), Log()  # e.g. after FLUSHALL
    run(processor(state, log), messages(2, range(12, 14)))
    assert log.reads == [(2, 0, 12)]
    assert state.stored == {2: 13}


def test_a_gap_past_retention_rereads_what_is_left_and_moves_on() -> None:
    state, log = MemoryState({0: 9}), Log(earliest=400)
    run(processor(state, log), messages(0, range(402, 410)), messages(0, range(410, 420)))
    assert state.applied[0].spans == {0: Span(400, 401, force=True)}
    assert state.stored == {0: 419}


def test_reread_events_are_not_dead_lettered_twice() -> None:
    state, log, letters = MemoryState({0: 49}), Log(), Letters()
    run(processor(state, log, letters), messages(0, range(80, 90)))
    assert letters.sent == 10  # the batch's own (all invalid), not the 30 re-read ones


def linked(reader: Continuity, partition: int, offsets: Sequence[int]) -> list[Message]:
    return reader.link(messages(partition, offsets))


def test_a_batch_continuing_across_transaction_markers_rereads_nothing() -> None:
    """Offsets 10 and 11 are a commit marker and an aborted record: no reader delivers them,
    and the reader says what it delivered before 12."""
    state, log, reader = MemoryState(), Log(unreadable=[10, 11]), Continuity()
    run(
        processor(state, log),
        linked(reader, 0, range(0, 10)),
        linked(reader, 0, range(12, 20)),
    )
    assert log.reads == []
    assert state.applied[1].spans == {0: Span(12, 19, after=9)}
    assert state.stored == {0: 19}


def test_an_unknown_predecessor_before_a_hole_costs_one_reread_then_moves_on() -> None:
    """A worker that just got the partition knows nothing before its first message: the hole
    is read once, holds nothing readable, and the position moves past it."""
    state, log, reader = MemoryState({0: 9}), Log(unreadable=[10, 11]), Continuity()
    run(processor(state, log), linked(reader, 0, range(12, 20)), linked(reader, 0, [22, 23]))
    assert log.reads == [(0, 10, 12)]
    assert state.stored == {0: 23}


def test_a_stale_predecessor_does_not_hide_writes_redis_lost() -> None:
    """The reader delivered 9 before 12, but Redis holds only up to 5 (it lost 6..9): the
    missing offsets are read again, whatever the reader remembers."""
    state, log = MemoryState({0: 5}), Log(unreadable=[10, 11])
    batch = Continuity()
    batch.link(messages(0, range(0, 10)))  # delivered (and applied) before Redis lost 6..9
    run(processor(state, log), batch.link(messages(0, range(12, 14))))
    assert log.reads == [(0, 6, 12)]
    assert state.stored == {0: 13}


def test_continuity_marks_each_partition_s_first_message_with_what_came_before() -> None:
    reader = Continuity()
    first = reader.link(messages(0, [3, 4]) + messages(1, [7]))
    assert [m.previous for m in first] == [None, None, None]
    second = reader.link(messages(1, [9, 10]) + messages(0, [8]))
    assert [m.previous for m in second] == [7, None, 4]
    reader.forget()
    assert [m.previous for m in reader.link(messages(0, [9]))] == [None]
