"""The reader's request: the per-range plan gives what the bucket math and the key schema give
without it, the commands are those of the key schema, and a Redis that forgot its scripts or
dropped the connection is handled (``state/reader.py``, with Redis replaced by a fake exchange)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from state import keys, resp
from state.dates import GRANULARITIES, Granularity, buckets
from state.errors import StoreUnavailable
from state.reader import DeviceView, Reader, SeriesPlan, SeriesQuery, series_plan
from state.scripts import Scripts

DEVICE = "f1e2d3c4-b5a6-7890-abcd-ef1234567890"
CLIENT = "aa7cf840-9ca9-46a3-9778-9015d6580d50"
RANGES = [
    (date(2026, 1, 1), date(2026, 3, 31)),  # 90 days, a quarter
    (date(2024, 2, 20), date(2024, 3, 5)),  # over a leap day
    (date(2025, 12, 29), date(2026, 1, 4)),  # an ISO week across the new year
    (date(2026, 3, 29), date(2026, 3, 29)),  # one day (a DST change in Europe: no matter)
]


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize(("first", "last"), RANGES)
def test_a_plan_holds_what_the_bucket_math_and_the_key_schema_give(
    first: date, last: date, granularity: Granularity
) -> None:
    plan = series_plan(first, last, granularity)
    expected = buckets(first, last, granularity)
    days = [day for bucket in expected for day in bucket.days()]
    assert list(plan.buckets) == expected
    assert list(plan.dates) == [b.first.isoformat() for b in expected]
    assert list(plan.sizes) == [len(b.days()) for b in expected]
    tag = keys.device_tag(DEVICE).encode()
    months = list(dict.fromkeys((d.year, d.month) for d in days))
    assert plan.month_keys.pack(tag) == resp.bulks(
        [keys.device_month(DEVICE, date(y, m, 1)) for y, m in months]
    )
    spans = [(min(d.day for d in days if (d.year, d.month) == ym),
              sum(1 for d in days if (d.year, d.month) == ym)) for ym in months]  # fmt: skip
    assert plan.month_spans == (len(months), *(x for span in spans for x in span))
    client_tag = keys.client_tag(CLIENT).encode()
    assert plan.counter_keys.pack(client_tag) == resp.bulks(
        [keys.client_day(CLIENT, d) for d in days]
    )
    assert plan.users_keys.pack(client_tag) == resp.bulks(
        [keys.client_day_users(CLIENT, d) for d in days]
    )
    assert plan.packed_sizes == resp.bulks(plan.sizes)


def test_a_range_is_planned_once() -> None:
    first, last = date(2026, 1, 1), date(2026, 3, 31)
    assert series_plan(first, last, "weekly") is series_plan(first, last, "weekly")
    assert series_plan(first, last, "weekly") is not series_plan(first, last, "daily")


def test_a_month_key_is_the_device_tag_and_the_month_suffix() -> None:
    day = date(2026, 1, 15)
    assert keys.device_tag(DEVICE) + keys.device_month_suffix(day) == keys.device_month(DEVICE, day)
    assert keys.client_tag(CLIENT) + keys.client_day_suffix(day) == keys.client_day(CLIENT, day)
    assert keys.client_tag(CLIENT) + keys.client_day_users_suffix(day) == keys.client_day_users(
        CLIENT, day
    )


# --- The request sent ----------------------------------------------------------------------------


class FakeExchange:
    """Stands in for ``resp.send``: records the commands, answers from a script of replies."""

    def __init__(self, *answers: list[Any] | BaseException) -> None:
        self.answers = list(answers)
        self.sent: list[list[bytes]] = []

    async def __call__(
        self, _: Redis, commands: Sequence[bytes], raw_from: int | None = None
    ) -> list[Any]:
        self.sent.append(list(commands))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.fixture
def reader() -> Reader:
    return Reader(Redis())  # never connects: every exchange is faked


def view(reader: Reader, query: SeriesQuery | None) -> DeviceView:
    return asyncio.run(reader.device_view(CLIENT, DEVICE, query))


@pytest.mark.parametrize("metric", ["activity-count", "user-count"])
@pytest.mark.parametrize("planned", [True, False])
def test_one_request_sends_the_client_device_and_series_commands(
    reader: Reader, monkeypatch: pytest.MonkeyPatch, metric: Any, planned: bool
) -> None:
    first, last = date(2026, 1, 1), date(2026, 1, 20)
    plan = series_plan(first, last, "weekly")
    fake = FakeExchange([1, CLIENT, [5, 6, 7]])
    monkeypatch.setattr(resp, "send", fake)
    query = SeriesQuery(metric, plan if planned else list(plan.buckets))

    answer = view(reader, query)

    scripts = Scripts.register(Redis())
    month = keys.device_month(DEVICE, first)  # the 20 days are all in January
    # One month from the 1st, 20 days of it; Thu-Sun, two weeks, Mon-Tue.
    if metric == "activity-count":  # read-only: the month is a key
        sha = scripts.read_device_counts.sha
        call = resp.command("EVALSHA_RO", sha, 1, month, 1, 1, 20, 4, 7, 7, 2)
    else:  # the scratch key alone is a key, the month an argument (state/acl.py)
        sha = scripts.read_device_users.sha
        call = resp.command("EVALSHA", sha, 1, keys.device_scratch(DEVICE), 1, 1, 20, month,
                            4, 7, 7, 2)  # fmt: skip
    assert fake.sent == [
        [
            resp.command("EXISTS", keys.client(CLIENT)),
            resp.command("HGET", keys.device_meta(DEVICE), "client"),
            call,
        ]
    ]
    assert (answer.client_exists, answer.device_owner, answer.values) == (True, CLIENT, [5, 6, 7])


def test_without_a_query_no_script_is_sent_and_no_values_come_back(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExchange([0, None])
    monkeypatch.setattr(resp, "send", fake)
    answer = view(reader, None)
    assert len(fake.sent[0]) == 2
    assert answer == DeviceView(client_exists=False, device_owner=None, values=None)


def test_scripts_unknown_to_redis_are_loaded_and_the_request_sent_again(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Redis] = []

    async def load(_: Scripts, redis: Redis) -> None:
        loads.append(redis)

    fake = FakeExchange(
        [1, None, NoScriptError("NOSCRIPT No matching script")],
        [1, None, [9]],
    )
    monkeypatch.setattr(resp, "send", fake)
    monkeypatch.setattr(Scripts, "load", load)
    plan = series_plan(date(2026, 1, 1), date(2026, 1, 1), "daily")
    assert view(reader, SeriesQuery("activity-count", plan)).values == [9]
    assert len(loads) == 1
    assert fake.sent[0] == fake.sent[1]


@pytest.mark.parametrize(
    "failure", [RedisConnectionError("refused"), TimeoutError(), ConnectionResetError()]
)
def test_a_redis_that_cannot_answer_is_store_unavailable(
    reader: Reader, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    monkeypatch.setattr(resp, "send", FakeExchange(failure))
    with pytest.raises(StoreUnavailable):
        view(reader, None)


def test_a_plan_of_a_bucket_list_is_the_plan_of_its_range() -> None:
    first, last = date(2026, 2, 1), date(2026, 4, 30)
    cached = series_plan(first, last, "monthly")
    fresh = SeriesPlan.of(buckets(first, last, "monthly"))
    tag = b"da:{d:x}"
    assert (fresh.buckets, fresh.dates, fresh.sizes, fresh.packed_sizes) == (
        cached.buckets,
        cached.dates,
        cached.sizes,
        cached.packed_sizes,
    )
    assert fresh.counter_keys.pack(tag) == cached.counter_keys.pack(tag)
    assert fresh.users_keys.pack(tag) == cached.users_keys.pack(tag)
    assert fresh.month_keys.pack(tag) == cached.month_keys.pack(tag)
    assert fresh.month_spans == cached.month_spans
