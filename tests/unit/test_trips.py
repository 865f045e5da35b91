"""How the writer cuts a batch into round trips bounded by work (state/writer.py)."""

from __future__ import annotations

import random
from datetime import date

import pytest

from state import writer
from state.batch import Contribution, DayBatch, DeviceBatch
from state.writer import cut_trips


def device(events: int, days: int = 1) -> DeviceBatch:
    batch = DeviceBatch("c", f"d{events}")
    for d in range(days):
        batch.days[date(2026, 12, 1 + d)] = DayBatch(
            0, [Contribution(0, n, 1, None) for n in range(events)]
        )
    return batch


def sizes(batches: list[DeviceBatch]) -> list[int]:
    return [sum(len(day.contributions) for day in b.days.values()) for b in batches]


@pytest.mark.parametrize("seed", range(20))
def test_round_trips_cover_every_device_once_in_order_within_both_bounds(seed: int) -> None:
    rng = random.Random(seed)
    batches = [device(rng.choice((1, 1, 2, 5, 40, 300)), rng.randint(1, 3)) for _ in range(300)]
    trips = cut_trips(batches)
    assert [i for trip in trips for i in trip] == list(range(len(batches)))
    events = sizes(batches)
    for trip in trips:
        assert 1 <= len(trip) <= writer.SCRIPTS_PER_TRIP
        carried = sum(events[i] for i in trip)
        assert carried <= writer.EVENTS_PER_TRIP or len(trip) == 1


def test_a_trip_is_only_cut_when_the_next_device_would_not_fit() -> None:
    batches = [device(1) for _ in range(writer.SCRIPTS_PER_TRIP * 2 + 1)]
    assert [len(t) for t in cut_trips(batches)] == [writer.SCRIPTS_PER_TRIP] * 2 + [1]


def test_a_device_heavier_than_a_trip_travels_alone() -> None:
    heavy = writer.EVENTS_PER_TRIP + 1
    trips = cut_trips([device(1), device(heavy), device(1)])
    assert [list(t) for t in trips] == [[0], [1], [2]]


def test_no_devices_no_trips() -> None:
    assert cut_trips([]) == []
