"""What the write side hands in and gets back, and ``BatchWriter``, the one interface of it.

stream/ depends on these alone (stream/processor.py): the writer behind them is
``state/writer.Writer`` over a transport of one Redis or of a Redis Cluster
(``state/transport.py``), or a test's stand-in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from state.batch import DeviceBatch
from state.fleet import ClientCall


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int = 0
    """Events counted now."""
    skipped: int = 0
    """Events found already applied (a replay); they change nothing."""
    owner: str | None = None
    """Set when the device belongs to another client: nothing of the batch was applied."""
    deferred: bool = False
    """The part of the store that holds it could not be reached (a Redis Cluster primary
    down): nothing was applied, and the partitions' positions there stay behind, so the events
    are read again and applied once it is back (state/transport.py)."""

    @property
    def rejected(self) -> bool:
        return self.owner is not None


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition's messages in a batch."""

    first: int
    last: int
    force: bool = False
    """Advance even if ``first`` does not follow the stored position (the caller knows the log
    holds nothing readable in between)."""
    after: int | None = None
    """The offset the reader delivered just before ``first``, when known: the batch continues a
    stored position equal to it, whatever lies between (transaction markers, aborted records)."""


@dataclass(frozen=True, slots=True)
class Positions:
    """What a batch covers, per partition; once it is applied, the applied positions advance."""

    topic: str
    spans: dict[int, Span]


@dataclass(frozen=True, slots=True)
class PackedBatch:
    """Device batches with their script calls already encoded, cut into round trips."""

    batches: Sequence[DeviceBatch]
    commands: list[bytes]
    trips: list[range]
    """The indexes of ``commands`` (and ``batches``) sent in each round trip, in order."""
    clients: list[ClientCall] = field(default_factory=list)
    """The client aggregates' calls, for when every device batch is accepted."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    devices: list[ApplyResult]
    """One per device batch, in order."""
    previous: dict[int, int | None]
    """Per partition, the applied position Redis held before this batch (None: nothing). When
    a span's first offset is past it + 1, Redis lost writes and the position did not move."""


@dataclass(slots=True)
class ApplyProgress:
    """How far applying one batch got: the round trips Redis answered and their results. A
    retry (after a time-out, a broken connection) resumes after them instead of sending the
    whole batch again; what they applied stays applied."""

    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    trips_done: int = 0
    devices: list[ApplyResult] = field(default_factory=list)
    previous: dict[int, int | None] | None = None
    """Set by the last round trip, which advances the applied positions."""
    finer: set[str] = field(default_factory=set)
    """The clients whose aggregate call was partly replayed: it goes again as one segment per
    offset (state/fleet.py)."""
    left_out: set[int] = field(default_factory=set)
    """The parts of the store (a cluster's slots) whose commands this batch deferred, their
    node out of reach; it only grows until the batch restarts (state/transport.py). Always
    empty on one Redis, which is reached whole or not at all."""

    def restart(self) -> None:
        """Forget everything: Redis lost writes, the batch is applied again from its start."""
        self.batch_id = uuid.uuid4().hex
        self.trips_done = 0
        self.devices.clear()
        self.previous = None
        self.finer.clear()
        self.left_out.clear()


class BatchWriter(Protocol):
    """Applies device batches to the store, each event once however often it is sent."""

    def pack(self, batches: Sequence[DeviceBatch]) -> PackedBatch:
        """Encode the batches' commands (CPU only: done while the store works on the last)."""
        ...

    async def apply_packed(
        self, packed: PackedBatch, positions: Positions, progress: ApplyProgress | None = None
    ) -> BatchResult:
        """Apply a packed batch and advance its partitions' applied positions; a retry with
        the same ``progress`` resumes after what the store answered."""
        ...

    async def applied_positions(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, int | None]:
        """Per partition, the highest offset whose batch is fully applied (None: nothing)."""
        ...

    def leaving_out(self) -> bool:
        """Whether a part of the store is left out for now, out of reach (its events wait)."""
        ...
