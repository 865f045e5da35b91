"""What the API asks state/ to read, by meaning (a client, a device, a metric, a range, a
granularity), and what it gets back: values, never keys or packed commands (state/reader.py
answers them).

A few of these are made for every request, on the API's hot path: they are slotted dataclasses
but not frozen ones, whose ``__init__`` costs 0.78 us against 0.24 us for four fields
(``timeit``, 2026-12-07). Nothing changes them once made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from state.dates import Granularity

Metric = Literal["activity-count", "user-count"]
Order = Literal["desc", "asc"]
Missing = Literal["client", "device"]
"""What a query named that is not there: the client, or the device among the client's devices."""


@dataclass(slots=True)
class SeriesQuery:
    """A device's series, or with ``device`` None the client's (all its devices together): the
    metric over each bucket of ``granularity`` of the local days ``[first, last]``. Ids are
    lower-case, as state/ keys them."""

    client: str
    device: str | None
    metric: Metric
    first: date
    last: date
    granularity: Granularity = "daily"


@dataclass(slots=True)
class Series:
    dates: tuple[str, ...]
    """The first day of each bucket, ISO (docs/api.md: a point's ``date``)."""
    values: list[int]
    """The metric over each bucket, in the same order."""


@dataclass(slots=True)
class SeriesAnswer:
    missing: Missing | None
    series: Series
    """Read speculatively, in the same round trip: meaningless when ``missing``."""


@dataclass(slots=True)
class Period:
    """A range's series and its total: for user-count the distinct users over the whole range,
    not the sum of the buckets."""

    first: date
    last: date
    series: Series
    total: int


@dataclass(slots=True)
class Comparison:
    """A query's period and the one before it (``dates.previous_range``), None where the
    calendar begins."""

    missing: Missing | None
    current: Period
    previous: Period | None


@dataclass(slots=True)
class RankingQuery:
    """A client's devices ranked by the metric over ``[first, last]``: the first ``limit`` in
    ``order`` (desc: the most used first), ties by device id, ascending."""

    client: str
    metric: Metric
    first: date
    last: date
    order: Order
    limit: int


@dataclass(slots=True)
class Ranking:
    missing: Missing | None
    """Only ever the client: a ranking names no device."""
    total_devices: int
    """Every device the client owns, zeros included."""
    devices: list[tuple[str, int]]
    """The ranked devices' ids and values, at most ``limit`` of them."""
