"""BatchProcessor's applied positions and its repair of gaps (Redis that lost writes).

Pure logic with an in-memory stand-in for state/ (the Redis side of the same rules is tested in
tests/integration/test_state.py and, end to end, in test_faults.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from state.writer import ApplyResult, BatchResult, DeviceBatch, Positions, Span
from stream.plan import Message
from stream.processor import BatchProcessor

TOPIC = "heartbeats"
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


class MemoryPositions:
    """The advance rule of state/lua/advance_applied.lua, kept in a dict."""

    def __init__(self, stored: dict[int, int] | None = None) -> None:
        self.stored = dict(stored or {})
        self.calls: list[Positions] = []

    async def apply(self, batches: Sequence[DeviceBatch], positions: Positions) -> BatchResult:
        self.calls.append(positions)
        previous: dict[int, int | None] = {}
        for p, span in positions.spans.items():
            found = self.stored.get(p, -1)
            previous[p] = None if found < 0 else found
            if (span.force or span.first <= found + 1) and span.last > found:
                self.stored[p] = span.last
        return BatchResult([ApplyResult() for _ in batches], previous)


class NoClients:
    async def timezones(self, *_: object) -> dict[str, str]:
        return {}


class Rewinds:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.calls: list[tuple[str, int, int | None, int]] = []

    async def __call__(self, topic: str, partition: int, applied: int | None, gap: int) -> bool:
        self.calls.append((topic, partition, applied, gap))
        return self.answer


async def _no_letters(_: object) -> None:
    return None


def processor(writer: MemoryPositions, rewind: Rewinds) -> BatchProcessor:
    return BatchProcessor(
        registry=NoClients(),  # type: ignore[arg-type]
        writer=writer,  # type: ignore[arg-type]
        send=_no_letters,
        clock=lambda: NOW,
        default_timezone="UTC",
        retention_days=400,
        rewind=rewind,
    )


def messages(partition: int, offsets: range) -> list[Message]:
    return [Message(TOPIC, partition, o, None, b"not json") for o in offsets]


def run(proc: BatchProcessor, *batches: list[Message]) -> None:
    async def main() -> None:
        for batch in batches:
            await proc.process(batch)

    asyncio.run(main())


def test_consecutive_batches_advance_the_position_without_rewinding() -> None:
    writer, rewind = MemoryPositions(), Rewinds()
    run(processor(writer, rewind), messages(0, range(0, 10)), messages(0, range(10, 25)))
    assert writer.stored == {0: 24}
    assert rewind.calls == []


def test_each_partition_of_a_batch_gets_its_own_span() -> None:
    writer, rewind = MemoryPositions(), Rewinds()
    run(processor(writer, rewind), messages(0, range(0, 3)) + messages(1, range(0, 5)))
    assert writer.calls[0].spans == {0: Span(0, 2), 1: Span(0, 4)}


def test_a_batch_past_the_stored_position_rewinds_to_just_after_it() -> None:
    # Redis lost writes: it says 0..49 are applied, the consumer is already at 80.
    writer, rewind = MemoryPositions({0: 49}), Rewinds()
    run(processor(writer, rewind), messages(0, range(80, 90)))
    assert rewind.calls == [(TOPIC, 0, 49, 80)]
    assert writer.stored == {0: 49}


def test_messages_fetched_before_the_seek_do_not_move_the_position() -> None:
    writer, rewind = MemoryPositions({0: 49}), Rewinds()
    run(
        processor(writer, rewind),
        messages(0, range(80, 90)),  # the gap: rewind to 50
        messages(0, range(90, 95)),  # still buffered from before the seek
        messages(0, range(50, 70)),  # the re-read: continues the position from 50
        messages(0, range(70, 100)),
    )
    assert rewind.calls == [(TOPIC, 0, 49, 80)]
    assert [c.spans for c in writer.calls[1:]] == [{}, {0: Span(50, 69, True)}, {0: Span(70, 99)}]
    assert writer.stored == {0: 99}


def test_nothing_stored_and_a_consumer_past_the_start_rewinds_to_the_beginning() -> None:
    writer, rewind = MemoryPositions(), Rewinds()  # e.g. after FLUSHALL
    run(processor(writer, rewind), messages(2, range(300, 310)))
    assert rewind.calls == [(TOPIC, 2, None, 300)]


def test_a_gap_past_retention_is_accepted_and_the_position_moves_on() -> None:
    writer, rewind = MemoryPositions({0: 9}), Rewinds(answer=False)
    run(processor(writer, rewind), messages(0, range(500, 510)), messages(0, range(510, 520)))
    assert writer.stored == {0: 519}


def test_revoking_partitions_forgets_a_rewind_in_progress() -> None:
    writer, rewind = MemoryPositions({0: 49}), Rewinds()
    proc = processor(writer, rewind)
    run(proc, messages(0, range(80, 90)))
    proc.forget_partitions()
    writer.stored[0] = 89  # the partition's new owner repaired it meanwhile
    run(proc, messages(0, range(90, 95)))
    assert writer.stored == {0: 94}
