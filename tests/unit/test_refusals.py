"""Which readings ask what was refused before, and how dead letters and redrive marks name the
events they refused (stream/refusals.py). Kafka's side is tested end to end in
tests/integration/test_verdicts.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence, Set
from datetime import UTC, datetime, timedelta

from stream.plan import Message, Source
from stream.processor import BatchProcessor
from stream.refusals import CLOCK_SKEW, _dead_letter_source, _mark_source
from tests.unit.test_processor_positions import Letters, MemoryState, NoClients

TOPIC = "heartbeats"
START = datetime(2026, 12, 7, 12, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class AskedRefusals:
    """Refusals that record which messages they were asked about."""

    def __init__(self, refused: Set[Source] = frozenset()) -> None:
        self.refused = refused
        self.asked: list[list[int]] = []
        self.forgotten = 0

    async def among(self, messages: Sequence[Message]) -> Set[Source]:
        self.asked.append([m.offset for m in messages])
        return self.refused

    def forget(self) -> None:
        self.forgotten += 1


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


async def no_reread(*_: object) -> AsyncIterator[list[Message]]:
    return
    yield []


def processor(
    refusals: AskedRefusals, clock: Clock, rereading: bool = False, letters: Letters | None = None
) -> BatchProcessor:
    return BatchProcessor(
        registry=NoClients(),  # type: ignore[arg-type]
        writer=MemoryState(),
        send=letters or Letters(),
        clock=clock,
        default_timezone="UTC",
        retention_days=400,
        reread=no_reread,
        refusals=refusals,  # type: ignore[arg-type]
        rereading=rereading,
    )


def message(offset: int, at: datetime | None) -> Message:
    return Message(TOPIC, 0, offset, None, b"not json", previous=offset - 1 if offset else None,
                   timestamp=None if at is None else ms(at))  # fmt: skip


def test_a_worker_asks_about_records_older_than_its_partitions_only() -> None:
    refusals, clock = AskedRefusals(), Clock()
    proc = processor(refusals, clock)
    fresh = START + CLOCK_SKEW + timedelta(seconds=1)
    asyncio.run(proc.process([message(0, START - timedelta(hours=1)), message(1, fresh)]))
    assert refusals.asked == [[0]]
    asyncio.run(proc.process([message(2, fresh), message(3, None)]))
    assert refusals.asked == [[0], [3]]  # a record without a time may be old
    asyncio.run(proc.process([message(4, fresh + timedelta(seconds=1))]))
    assert refusals.asked == [[0], [3]]  # the steady state: Kafka is not asked


def test_a_rebalance_makes_records_up_to_it_old_and_forgets_what_was_read() -> None:
    refusals, clock = AskedRefusals(), Clock()
    proc = processor(refusals, clock)
    clock.now = START + timedelta(hours=2)
    proc.reassigned()
    assert refusals.forgotten == 1
    asyncio.run(proc.process([message(0, START + timedelta(hours=2, minutes=4))]))
    assert refusals.asked == [[0]]


def test_a_replay_asks_about_every_batch() -> None:
    refusals, clock = AskedRefusals(), Clock()
    proc = processor(refusals, clock, rereading=True)
    later = START + timedelta(days=1)
    asyncio.run(proc.process([message(0, later), message(1, later)]))
    assert refusals.asked == [[0, 1]]


def test_refused_events_are_not_dead_lettered_again_and_the_others_are() -> None:
    refusals, clock, letters = AskedRefusals({(0, 0, None)}), Clock(), Letters()
    proc = processor(refusals, clock, letters=letters)
    outcome = asyncio.run(proc.process([message(0, START), message(1, START)]))
    assert (outcome.refused_before, outcome.dead_letters, letters.sent) == (1, 1, 1)


def test_dead_letters_name_their_event_by_source_and_element() -> None:
    assert _dead_letter_source({"source": b"heartbeats/3/4711"}, TOPIC) == (3, 4711, None)
    assert _dead_letter_source({"source": b"heartbeats/0/9", "element": b"12"}, TOPIC) == (
        0, 9, 12,
    )  # fmt: skip
    for headers in (
        {"source": b"other/3/4711"},  # another topic's
        {"source": b"heartbeats.dlq/3/4711"},
        {"source": b"heartbeats/x/1"},
        {"source": b"heartbeats/1/-2"},
        {"source": b"heartbeats/0/9", "element": b"-1"},
        {},
    ):
        assert _dead_letter_source(headers, TOPIC) is None, headers


def test_redrive_marks_name_their_event() -> None:
    assert _mark_source(b"heartbeats/2/77#", TOPIC) == (2, 77, None)
    assert _mark_source(b"heartbeats/2/77#3", TOPIC) == (2, 77, 3)
    for key in (b"dlq/0/5", b"heartbeats/2/77", b"other/2/77#", b"heartbeats/2/77#x", None):
        assert _mark_source(key, TOPIC) is None, key


def test_topic_names_with_dots_and_dashes_are_told_apart() -> None:
    topic = "heartbeats-e9.v2"
    assert _mark_source(b"heartbeats-e9.v2/1/5#", topic) == (1, 5, None)
    assert _mark_source(b"heartbeats-e9/1/5#", topic) is None
