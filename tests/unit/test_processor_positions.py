"""BatchProcessor's applied positions, and how it re-applies what Redis lost before a batch.

Pure logic with an in-memory stand-in for state/ (the Redis side of the same rules is tested in
tests/integration/test_state.py and, end to end with real crashes, in test_faults.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from state.writer import ApplyResult, BatchResult, DeviceBatch, PackedBatch, Positions, Span
from stream.plan import Message
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
            if (span.force or span.first <= found + 1) and span.last > found:
                self.stored[p] = span.last
        return BatchResult([ApplyResult() for _ in batches], previous)


class Log:
    """A partition log that still holds offsets from ``earliest`` on, read in chunks of 4."""

    def __init__(self, earliest: int = 0) -> None:
        self.earliest = earliest
        self.reads: list[tuple[int, int, int]] = []

    async def reread(
        self, topic: str, partition: int, start: int, stop: int
    ) -> AsyncIterator[list[Message]]:
        self.reads.append((partition, start, stop))
        offsets = list(range(max(start, self.earliest), stop))
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
        writer=state,  # type: ignore[arg-type]
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
