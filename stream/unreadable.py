"""Record batches a consumer cannot read: held at their offset and reported, never a crash.

Why a patch: aiokafka (0.14) decodes a fetched partition's record batches lazily, in the
generator ``PartitionRecords._unpack_records`` of its fetcher. A batch it cannot read (a codec
the process lacks, a corrupt batch) raises from there through ``getmany`` for every partition:
Faust's fetch loop crashes the worker, and the topic still holds the batch, so every restart
crashes again. Worse, the records the generator had already decoded from the same fetch are
dropped, and the next ``getmany`` moves the partition's position past them (``FetchResult.getall``
loses its list; the next call updates the position to the generator's last offset): a retry
would lose events silently. Nothing in aiokafka's API lets a caller see the failing partition.

So :func:`install` wraps that generator: a batch that raises ends the partition's records
there, the records before it are delivered as usual, the position stays at the unreadable
batch's first offset, and an :class:`Unreadable` report is left for whoever reads the partition
(``take``). Every consumer of the project runs with it: the worker holds the partition and
retries it now and then (stream/batching.py), the gap re-reader and ``devact replay`` stop
with a clear error. Reports cross threads (Faust's consumer runs in a thread of its own), so the
registry is locked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.consumer import fetcher

_lock = threading.Lock()
_reports: dict[tuple[str, int], Unreadable] = {}
_original: Any = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A partition held at ``offset``: the record batch there could not be read."""

    topic: str
    partition: int
    offset: int
    cause: str

    def describe(self) -> str:
        return (
            f"{self.topic}[{self.partition}] offset {self.offset}: record batch unreadable "
            f"({self.cause})"
        )


class UnreadableBatch(Exception):
    """A reader met a batch it cannot read; it stops there instead of skipping it."""

    def __init__(self, report: Unreadable) -> None:
        super().__init__(report.describe())
        self.report = report


def install() -> None:
    """Wrap aiokafka's record unpacking (idempotent)."""
    global _original
    with _lock:
        if _original is not None:
            return
        _original = fetcher.PartitionRecords._unpack_records
        fetcher.PartitionRecords._unpack_records = _unpack_holding_unreadable


def take(topic: str, partition: int) -> Unreadable | None:
    """The report left for this partition since the last call, if any."""
    with _lock:
        return _reports.pop((topic, partition), None)


def take_all(topic: str) -> list[Unreadable]:
    """Every report left for partitions of ``topic``."""
    with _lock:
        found = [r for key, r in _reports.items() if key[0] == topic]
        for report in found:
            del _reports[(report.topic, report.partition)]
    return found


def _unpack_holding_unreadable(self: Any) -> Iterator[Any]:
    records = _original(self)
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as exc:  # any batch it cannot read: never skip it, never crash
            report = Unreadable(
                self._tp.topic, self._tp.partition, self.next_fetch_offset, _cause(exc)
            )
            with _lock:
                _reports[(report.topic, report.partition)] = report
            return
        yield record


def _cause(exc: Exception) -> str:
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"
