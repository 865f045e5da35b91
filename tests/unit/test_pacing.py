"""The worker hands the event loop back while it judges, plans and dead-letters a batch, whatever
the batch holds (stream/pacing.py): its /healthz, Redis round trips and Faust's fetches go on.

Time is a clock given to the pacer, so nothing here depends on how fast the machine is: with a
clock that says 20 ms passed at every reading, the pacer hands the loop back at every call, and
a task running beside the processor counts how often it got the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from state.batch import DeviceBatch
from state.write_types import ApplyResult, BatchResult, PackedBatch, Positions
from stream.pacing import SLICE_S, Pacer
from stream.plan import PIECE_EVENTS, Message
from stream.processor import BatchProcessor

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ELEMENTS = 10_000
ZEROS = b"[" + b",".join([b"0"] * ELEMENTS) + b"]"
"""A message at the element cap whose every element is refused: 10,000 dead letters."""


class Clock:
    """Seconds that advance by ``step`` at every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class NoDevices:
    """The writer's interface, for batches with no heartbeat in them."""

    async def applied_positions(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, int | None]:
        return dict.fromkeys(partitions)

    def pack(self, batches: Sequence[DeviceBatch]) -> PackedBatch:
        return PackedBatch(batches, [], [])

    async def apply_packed(
        self, packed: PackedBatch, positions: Positions, progress: object = None
    ) -> BatchResult:
        return BatchResult([ApplyResult() for _ in packed.batches], {})

    def leaving_out(self) -> bool:
        return False


class NoClients:
    async def timezones(self, *_: object) -> dict[str, str]:
        return {}


async def no_reread(*_: object) -> AsyncIterator[list[Message]]:
    return
    yield


def processor(clock: Clock, sent: list[object]) -> BatchProcessor:
    async def send(records: Sequence[object]) -> None:
        sent.extend(records)

    return BatchProcessor(
        registry=NoClients(),  # type: ignore[arg-type]
        writer=NoDevices(),
        send=send,
        clock=lambda: NOW,
        default_timezone="UTC",
        retention_days=400,
        reread=no_reread,
        pacer=lambda: Pacer(clock=clock),
    )


async def turns_beside(work: asyncio.Future[Any]) -> int:
    """How many times a task beside ``work`` got the event loop before ``work`` was done."""
    turns = 0
    while not work.done():
        await asyncio.sleep(0)
        turns += 1
    return turns


def test_the_pacer_hands_back_only_once_its_slice_has_passed() -> None:
    pacer = Pacer(slice_s=4.0, clock=Clock(1.0))  # made at 1; a pace reads the clock once...

    async def paces(count: int) -> None:
        for _ in range(count):
            await pacer.pace()

    asyncio.run(paces(3))  # at 2, 3, 4
    assert pacer.handed_back == 0
    asyncio.run(paces(1))  # at 5: hands back (and reads the clock again to start anew at 6)
    assert pacer.handed_back == 1
    asyncio.run(paces(3))  # at 7, 8, 9
    assert pacer.handed_back == 1
    asyncio.run(paces(1))  # at 10
    assert pacer.handed_back == 2


def test_preparing_a_batch_hands_the_loop_back_between_pieces_of_events() -> None:
    proc = processor(Clock(SLICE_S * 2), [])
    batch = [Message("heartbeats", 0, 0, None, ZEROS)]

    async def main() -> int:
        work = asyncio.ensure_future(proc.prepare(batch))
        turns = await turns_beside(work)
        prepared = await work
        assert len(prepared.plan.dead_letters) == ELEMENTS
        return turns

    pieces = -(-ELEMENTS // PIECE_EVENTS)
    assert asyncio.run(main()) >= 2 * pieces  # judged in pieces, then planned in pieces


def test_dead_lettering_a_batch_hands_the_loop_back_between_letters() -> None:
    sent: list[object] = []
    proc = processor(Clock(SLICE_S * 2), sent)
    batch = [Message("heartbeats", 0, 0, None, ZEROS)]

    async def main() -> int:
        prepared = await proc.prepare(batch)
        work = asyncio.ensure_future(proc.apply(prepared))
        turns = await turns_beside(work)
        outcome = await work
        assert outcome.dead_letters == ELEMENTS
        return turns

    assert asyncio.run(main()) >= ELEMENTS
    assert len(sent) == ELEMENTS


def test_a_clock_that_stands_still_never_hands_back() -> None:
    proc = processor(Clock(0.0), [])
    batch = [Message("heartbeats", 0, 0, None, ZEROS)]

    async def main() -> int:
        work = asyncio.ensure_future(proc.process(batch))
        turns = await turns_beside(work)
        await work
        return turns

    assert asyncio.run(main()) <= 1  # the task beside it starts once the work is done
