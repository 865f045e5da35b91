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
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from state import cluster_transport, keys, resp
from state.dates import GRANULARITIES, Granularity, buckets
from state.errors import StoreUnavailable
from state.queries import Comparison, Period, Ranking, RankingQuery, Series, SeriesQuery
from state.read_plans import SeriesPlan, series_plan
from state.reader import Reader
from state.routing import Routed
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


def series(reader: Reader, query: SeriesQuery) -> Any:
    return asyncio.run(reader.series(query))


def query(metric: Any, first: date, last: date, granularity: Any = "daily") -> SeriesQuery:
    return SeriesQuery(CLIENT, DEVICE, metric, first, last, granularity)


def device_call(metric: str, *spans_and_sizes: int) -> bytes:
    """The read script's call over the device's January 2026 (the ranges below are in it)."""
    scripts = Scripts.register(Redis())
    month = keys.device_month(DEVICE, date(2026, 1, 1))
    spans, sizes = spans_and_sizes[:3], spans_and_sizes[3:]
    if metric == "activity-count":  # read-only: the month is a key
        sha = scripts.read_device_counts.sha
        return resp.command("EVALSHA_RO", sha, 1, month, *spans, *sizes)
    # The scratch key alone is a key, the month an argument (state/acl.py).
    sha = scripts.read_device_users.sha
    return resp.command("EVALSHA", sha, 1, keys.device_scratch(DEVICE), *spans, month, *sizes)


@pytest.mark.parametrize("metric", ["activity-count", "user-count"])
def test_one_request_sends_the_client_device_and_series_commands(
    reader: Reader, monkeypatch: pytest.MonkeyPatch, metric: Any
) -> None:
    first, last = date(2026, 1, 1), date(2026, 1, 20)
    fake = FakeExchange([1, CLIENT, [5, 6, 7, 8]])
    monkeypatch.setattr(resp, "send", fake)

    answer = series(reader, query(metric, first, last, "weekly"))

    # One month from the 1st, 20 days of it; Thu-Sun, two weeks, Mon-Tue.
    assert fake.sent == [
        [
            resp.command("EXISTS", keys.client(CLIENT)),
            resp.command("HGET", keys.device_meta(DEVICE), "client"),
            device_call(metric, 1, 1, 20, 4, 7, 7, 2),
        ]
    ]
    dates = ("2026-01-01", "2026-01-05", "2026-01-12", "2026-01-19")
    assert (answer.missing, answer.series) == (None, Series(dates, [5, 6, 7, 8]))


@pytest.mark.parametrize(
    ("replies", "missing"),
    [([0, None], "client"), ([0, CLIENT], "client"), ([1, None], "device"),
     ([1, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"], "device"), ([1, CLIENT], None)],
)  # fmt: skip
def test_a_device_is_missing_unless_its_client_exists_and_owns_it(
    reader: Reader, monkeypatch: pytest.MonkeyPatch, replies: list[Any], missing: Any
) -> None:
    fake = FakeExchange(replies)
    monkeypatch.setattr(resp, "send", fake)
    assert asyncio.run(reader.missing(CLIENT, DEVICE)) == missing
    assert len(fake.sent[0]) == 2  # no series asked, none read


def test_a_client_series_reads_the_client_day_aggregates(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, last = date(2026, 1, 30), date(2026, 2, 2)
    fake = FakeExchange([0, [1, 2]])
    monkeypatch.setattr(resp, "send", fake)

    asked = SeriesQuery(CLIENT, None, "activity-count", first, last, "monthly")
    answer = series(reader, asked)

    days = [date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 2)]
    sha = Scripts.register(Redis()).read_counts.sha
    day_keys = [keys.client_day(CLIENT, d) for d in days]
    assert fake.sent == [
        [
            resp.command("EXISTS", keys.client(CLIENT)),
            resp.command("EVALSHA_RO", sha, 4, *day_keys, 2, 2),
        ]
    ]
    assert (answer.missing, answer.series) == (
        "client",
        Series(("2026-01-30", "2026-02-01"), [1, 2]),
    )


def test_a_comparison_of_activity_totals_each_range_by_its_buckets(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2026-01-11 .. 2026-01-14 (Sun, then Mon-Wed), and the four days before: Wed-Sat, one week.
    fake = FakeExchange([1, CLIENT, [3, 4], [10]])
    monkeypatch.setattr(resp, "send", fake)

    answer = asyncio.run(
        reader.compare(query("activity-count", date(2026, 1, 11), date(2026, 1, 14), "weekly"))
    )

    assert fake.sent[0][2:] == [
        device_call("activity-count", 1, 11, 4, 1, 3),
        device_call("activity-count", 1, 7, 4, 4),
    ]
    assert answer == Comparison(
        None,
        Period(
            date(2026, 1, 11), date(2026, 1, 14), Series(("2026-01-11", "2026-01-12"), [3, 4]), 7
        ),
        Period(date(2026, 1, 7), date(2026, 1, 10), Series(("2026-01-07",), [10]), 10),
    )


def test_a_comparison_of_users_reads_each_ranges_distinct_users_whole(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExchange([1, CLIENT, [3, 4], [5, 6], [6], [9]])
    monkeypatch.setattr(resp, "send", fake)

    answer = asyncio.run(reader.compare(query("user-count", date(2026, 1, 3), date(2026, 1, 4))))

    assert fake.sent[0][2:] == [
        device_call("user-count", 1, 3, 2, 1, 1),  # the range, by day
        device_call("user-count", 1, 1, 2, 1, 1),  # the two days before, by day
        device_call("user-count", 1, 3, 2, 2),  # the range as one bucket
        device_call("user-count", 1, 1, 2, 2),  # the days before as one bucket
    ]
    assert (answer.current.total, answer.current.series.values) == (6, [3, 4])
    assert answer.previous is not None
    assert (answer.previous.total, answer.previous.series.values) == (9, [5, 6])


def test_a_comparison_where_the_calendar_begins_has_no_previous_period(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeExchange([1, CLIENT, [2, 5], [7]])
    monkeypatch.setattr(resp, "send", fake)
    answer = asyncio.run(reader.compare(query("user-count", date.min, date(1, 1, 2))))
    assert len(fake.sent[0]) == 4  # the range by day and whole
    assert answer.previous is None
    assert answer.current.total == 7


# --- Rankings --------------------------------------------------------------------------------

OTHERS = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(1, 6)]
"""Five devices, in id order: index 4 is the first device that was active, and so on."""


def vector(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(8, "big", signed=True) for v in values)


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 2, 4, 10])
def test_a_ranking_orders_every_device_by_value_then_id_and_keeps_the_first_limit(
    reader: Reader, monkeypatch: pytest.MonkeyPatch, order: Any, limit: int
) -> None:
    activity = {0: [5, 4], 1: [7, 0], 2: [0, 0], 3: [2]}
    """Device index -> its activity on each day; index 3 has no element in the second vector."""
    indexed = {0: OTHERS[3], 1: OTHERS[1], 2: OTHERS[0], 3: OTHERS[2]}
    index = {device: str(i) for i, device in indexed.items()} | {"~": "\0" * 80}
    days = [vector([activity[i][0] for i in range(4)]), vector([activity[i][1] for i in range(3)])]
    fake = FakeExchange([1, 5, 5, days], [OTHERS, index])  # OTHERS[4]: owned, never active
    monkeypatch.setattr(resp, "send", fake)
    first, last = date(2026, 1, 1), date(2026, 1, 2)

    answer = asyncio.run(
        reader.ranking(RankingQuery(CLIENT, "activity-count", first, last, order, limit))
    )

    assert fake.sent[0][:3] == [
        resp.command("EXISTS", keys.client(CLIENT)),
        resp.command("SCARD", keys.client_devices(CLIENT)),
        resp.command("HLEN", keys.client_devices_index(CLIENT)),
    ]
    assert fake.sent[0][3] == resp.command(
        "MGET", keys.client_day_activity(CLIENT, first), keys.client_day_activity(CLIENT, last)
    )
    totals = {device: sum(activity[i]) for i, device in indexed.items()} | {OTHERS[4]: 0}
    sign = 1 if order == "asc" else -1
    ranked = sorted(totals.items(), key=lambda item: (sign * item[1], item[0]))[:limit]
    assert answer == Ranking(missing=None, total_devices=5, devices=ranked)


def test_a_ranking_of_an_unknown_client_ranks_nothing(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resp, "send", FakeExchange([0, 0, 0, [None]]))
    first = date(2026, 1, 1)
    answer = asyncio.run(
        reader.ranking(RankingQuery(CLIENT, "activity-count", first, first, "desc", 10))
    )
    assert answer == Ranking(missing="client", total_devices=0, devices=[])


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
    day = date(2026, 1, 1)
    assert series(reader, query("activity-count", day, day)).series.values == [9]
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
        asyncio.run(reader.missing(CLIENT, DEVICE))


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


# --- On a Redis Cluster ----------------------------------------------------------------------


def test_on_a_cluster_a_device_answers_while_its_clients_node_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same request as on one Redis, routed by its keys; the client's last answer stands in
    for its node (state/cluster_transport.py)."""
    down = RedisConnectionError("refused")
    sent: list[list[Routed]] = []
    answers = [[1, CLIENT, [5]], [down, CLIENT, [6]], [down, down, [7]]]

    async def send_routed(
        _: RedisCluster, commands: Sequence[Routed], raw_from: int | None = None
    ) -> list[Any]:
        sent.append(list(commands))
        return answers.pop(0)

    monkeypatch.setattr(cluster_transport, "send_routed", send_routed)
    reader = Reader(RedisCluster(host="127.0.0.1", port=1))  # never connects
    asked = query("activity-count", date(2026, 1, 1), date(2026, 1, 1))

    assert series(reader, asked).series.values == [5]
    assert [r.key for r in sent[0]] == [
        keys.client(CLIENT), keys.device_meta(DEVICE), keys.device_tag(DEVICE)
    ]  # fmt: skip
    assert series(reader, asked).series.values == [6]
    with pytest.raises(StoreUnavailable):  # the device's owner is not remembered
        series(reader, asked)
