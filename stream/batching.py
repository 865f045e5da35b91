"""Faust's consumer, handing each fetch of a batching topic to its reader at once.

Why: Faust delivers every message on its own. Its fetch loop awaits each one through
``wait_first(callback(message), suspend_flow.wait())``, which builds four futures per message,
and then the conductor, the channel queue and the stream each take their turn per message. Measured
on this project's worker, that hand-off, not our code, bounded ingest to about 6,000 heartbeats/s
with the process a third idle. Our agent works on whole batches anyway, so for the topics that
register a :class:`BatchChannel` the override below moves a whole fetch in one step.

What stays Faust's: the consumer group, its rebalance protocol, the read-offset and gap
bookkeeping, acknowledgements and the commit loop. A message is tracked as in flight when the
reader takes it (as Faust's streams do), acknowledged with ``Consumer.ack`` when applied, and
committed by Faust's own commit loop once every offset before it is acknowledged. On a rebalance
Faust suspends the flow, clears the channel (a managed ``FlowControlQueue``, as agents' buffers
are) and waits for the in-flight messages to be acknowledged; messages of an older generation are
dropped unprocessed, exactly as Faust's streams drop them, because the consumer seeks back to the
committed offsets. Topics without a channel still take Faust's per-message path.

Tested in tests/unit/test_batching.py (the hand-off and bookkeeping) and by every integration test
of the worker, including the rebalance, crash and replay tests of tests/integration/test_faults.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from time import monotonic
from typing import Any, ClassVar, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from stream import unreadable
from stream.plan import Continuity, Message, to_message
from stream.unreadable import Unreadable

FETCHES_BUFFERED = 4
"""Fetches a channel holds before the fetch loop waits: enough to keep the reader busy while
the next fetch is on its way, few enough that a rebalance has little to throw away."""


class BatchChannel:
    """The fetched, not yet taken messages of one topic, one list per fetch."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self.topic = topic
        self._app = app
        self._fetches: FlowControlQueue[list[Any]] = FlowControlQueue(
            maxsize=FETCHES_BUFFERED, flow_control=app.flow_control, clear_on_resume=True
        )
        self._rest: list[Any] = []
        """What the last ``take`` left of a fetch (dropped by generation after a rebalance)."""
        self._continuity = Continuity()
        self._generation: int | None = None
        """The consumer generation the continuity was recorded in."""

    async def put(self, messages: list[Any]) -> None:
        await self._fetches.put(messages)

    async def take(self, max_messages: int, max_bytes: int) -> list[Any]:
        """Wait for messages, then take what is buffered, up to ``max_messages`` messages and
        ``max_bytes`` of values (at least one message): the bytes bound the work, since one
        message may be a gateway's array of a hundred heartbeats. The rest of a fetch waits
        for the next call. Messages fetched before the last rebalance are dropped; the rest
        are tracked as in flight until acknowledged."""
        while True:
            taken: list[Any] = self._rest or await self._fetches.get()
            size = _value_bytes(taken)
            while len(taken) < max_messages and size < max_bytes and not self._fetches.empty():
                more = self._fetches.get_nowait()
                taken += more
                size += _value_bytes(more)
            cut = _cut(taken, max_messages, max_bytes)
            taken, self._rest = taken[:cut], taken[cut:]
            generation = self._app.consumer_generation_id
            current = [m for m in taken if m.generation_id == generation]
            if current:
                consumer = self._app.consumer
                for message in current:
                    message.tracked = True
                    consumer.track_message(message)
                self._show_progress(current)
                return current

    def _show_progress(self, messages: list[Any]) -> None:
        """Tell Faust's monitor that these partitions' events reach a reader, as its streams do
        per event: its consumer checks this to log "Stream has not started processing" (and
        "stopped processing") for partitions with a backlog, and our channel bypasses streams."""
        monitor = self._app.monitor
        if monitor is not None:
            now = monotonic()
            for tp in {m.tp for m in messages}:
                monitor.stream_inbound_time[tp] = now

    def messages(self, records: list[Any]) -> list[Message]:
        """Taken records as the processor's messages, each partition's first one marked with
        what this consumer delivered before it in the same generation (after a rebalance the
        consumer seeks, and nothing is known to precede what comes)."""
        generation = self._app.consumer_generation_id
        if generation != self._generation:
            self._continuity.forget()
            self._generation = generation
        return self._continuity.link([from_faust(r) for r in records])

    def ack(self, messages: list[Any]) -> None:
        """Acknowledge applied messages; Faust's commit loop commits them."""
        ack = self._app.consumer.ack
        for message in messages:
            ack(message)


def _value_bytes(messages: list[Any]) -> int:
    return sum(len(m.value or b"") for m in messages)


def _cut(messages: list[Any], max_messages: int, max_bytes: int) -> int:
    """How many of ``messages`` fit ``max_messages`` and ``max_bytes`` (at least one)."""
    size = 0
    for index, message in enumerate(messages[:max_messages]):
        size += len(message.value or b"")
        if size >= max_bytes:
            return index + 1
    return min(len(messages), max_messages)


def from_faust(record: Any) -> Message:
    """The message of a record Faust's consumer fetched (its timestamp is in seconds)."""
    seconds = record.timestamp
    return to_message(
        record.topic, record.partition, record.offset, record.key, record.value,
        None if seconds is None else round(seconds * 1000),
    )  # fmt: skip


class ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, reading only committed transactions.

    Faust reads committed data only when it runs its own transactions (processing_guarantee
    "exactly_once", which would also make its producer transactional): it picks the isolation
    level from ``consumer.in_transaction`` while it creates the aiokafka consumer. A producer's
    aborted transaction must never be counted, so the flag reads True for that one call.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = self.consumer
        in_transaction = consumer.in_transaction
        consumer.in_transaction = True
        try:
            return super()._create_worker_consumer(transport)
        finally:
            consumer.in_transaction = in_transaction


@dataclass(slots=True)
class Held:
    """A partition paused at a record batch it cannot read, and when to try it again."""

    report: Unreadable
    retry_at: float
    delay: float


HOLD_FIRST_RETRY_S = 5.0
HOLD_MAX_RETRY_S = 60.0
"""A held partition is fetched again after 5 s, then 10, 20, 40 and every 60 s: soon after an
upgrade adds the missing codec, without a fetch loop hammering the broker meanwhile."""


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with a fetch loop that moves whole fetches into channels, and
    that holds a partition at a record batch it cannot read instead of crashing on it."""

    held: dict[TP, Held]

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        channels: dict[str, BatchChannel] = cast(BatchingApp, self.app).batch_channels
        self.held = {}
        try:
            while not (self.should_stop or fetcher.should_stop):
                fetched: dict[str, list[Any]] = defaultdict(list)
                async for tp, message in self.getmany(timeout=1.0):
                    if self.held and tp in self.held:
                        self._release(tp, message.offset)
                    admitted, gap = self._admit(tp, message)
                    if gap is not None:
                        await self._add_gap(tp, *gap)
                    if admitted:
                        if message.topic in channels:
                            fetched[message.topic].append(message)
                        else:  # Faust's own path, one message at a time
                            await self.wait_first(self.callback(message), self.suspend_flow.wait())
                for topic, messages in fetched.items():
                    await self.wait_first(channels[topic].put(messages), self.suspend_flow.wait())
                self._hold_unreadable(channels)
                await self._maybe_commit()
                await self.sleep(0)  # a fetch that returned at once must not starve the loop
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except Exception as exc:
            self.log.exception("Fetch loop raised: %r", exc)
            raise

    def _hold_unreadable(self, channels: dict[str, BatchChannel]) -> None:
        """Pause the partitions whose next record batch cannot be read (stream/unreadable.py),
        so the others go on; resume each now and then to see whether the cause is gone."""
        now = monotonic()
        for topic in channels:
            for report in unreadable.take_all(topic):
                tp = TP(report.topic, report.partition)
                if tp not in self.assignment():
                    continue
                before = self.held.get(tp)
                if before is None or before.report != report:
                    self.log.error(
                        "Holding %s. Every other partition goes on; this one waits at that offset "
                        "and resumes by itself once the batch can be read (see "
                        'docs/operations.md, "A partition is held").',
                        report.describe(),
                    )
                delay = (
                    HOLD_FIRST_RETRY_S
                    if before is None
                    else min(2 * before.delay, HOLD_MAX_RETRY_S)
                )
                self.held[tp] = Held(report, now + delay, delay)
                self.pause_partitions([tp])
        for tp, held in self.held.items():
            if held.retry_at <= now and tp in self._paused_partitions:
                self.resume_partitions([tp])  # fetch it again: a report pauses it again

    def _release(self, tp: TP, offset: int) -> None:
        """A message at or past the held offset arrived: the batch is readable now."""
        held = self.held[tp]
        if offset >= held.report.offset:
            del self.held[tp]
            self.log.info(
                "%s[%d] resumed at offset %d: its record batch is readable now",
                tp.topic,
                tp.partition,
                offset,
            )

    def _admit(self, tp: TP, message: Any) -> tuple[bool, tuple[int, int] | None]:
        """Faust's read-offset bookkeeping: whether the message is new (not read already), and
        the gap before it to record (offsets a compaction or a transaction marker left out), so
        that commits can pass them. Not a coroutine: it runs for every message."""
        read = self._read_offset[tp]
        offset = message.offset
        if read is not None and offset < read:
            return False, None
        gap = None
        if read and offset - read > 1 and self.app.topics.acks_enabled_for(message.topic):
            gap = (read + 1, offset)
        self._read_offset[tp] = offset
        return True, gap

    async def _maybe_commit(self) -> None:
        """Faust's ``broker_commit_every``: commit once that many messages are acknowledged."""
        every = self._commit_every
        if every is not None and self._n_acked >= every:
            self._n_acked = 0
            await self.commit()


class BatchingTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = BatchingConsumer


class BatchingApp(faust.App):
    """A Faust app whose consumer hands whole fetches to the :class:`BatchChannel` of a topic."""

    batch_channels: dict[str, BatchChannel]

    def batch_channel(self, topic: faust.TopicT) -> BatchChannel:
        """Subscribe to ``topic`` and return the channel its fetches arrive in."""
        if not hasattr(self, "batch_channels"):
            self.batch_channels = {}
        (name,) = topic.topics
        self.topics.add(topic)  # the conductor subscribes the consumer to it
        channel = self.batch_channels[name] = BatchChannel(self, name)
        return channel

    def _new_transport(self) -> Any:
        return BatchingTransport(self.conf.broker_consumer, self)
