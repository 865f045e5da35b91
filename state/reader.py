"""Reading what the API needs for one request, in one round trip."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state import fleet, keys, resp
from state.dates import Bucket, Granularity, buckets, days_inclusive
from state.errors import unavailable_on_failure
from state.gate import Gate
from state.registry import Client, Registry, TokenGrant
from state.routing import Routed, send_routed
from state.scripts import Scripts

Metric = Literal["activity-count", "user-count"]

_PLANS_KEPT = 256
"""Ranges whose ``SeriesPlan`` is remembered. A dashboard asks for a few ranges (the last 7, 30,
90 days, by granularity) that move once a day; one plan of 90 days takes about 30 KB."""


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """The buckets of a range and what reading them takes, worked out once per range
    (``series_plan``): a request then only adds its device's key tag."""

    buckets: tuple[Bucket, ...]
    dates: tuple[str, ...]
    """The first day of each bucket, ISO: the ``date`` of each point."""
    sizes: tuple[int, ...]
    """The number of days of each bucket: the read scripts' arguments."""
    counter_keys: resp.PrefixedBulks
    """Every day's counter key, in order, given a client's tag (its day aggregates)."""
    users_keys: resp.PrefixedBulks
    """Every day's users key, in order, given a client's tag."""
    packed_sizes: bytes
    """``sizes`` as bulk strings."""
    month_keys: resp.PrefixedBulks
    """Every month's key, in order, given a device's tag (its device-months)."""
    month_spans: tuple[int, ...]
    """The device read scripts' first arguments: the number of months, then per month its
    first day in the range and how many of the range's days it holds."""

    @classmethod
    def of(cls, bucket_list: Sequence[Bucket]) -> SeriesPlan:
        days = [day for bucket in bucket_list for day in bucket.days()]
        sizes = tuple(days_inclusive(b.first, b.last) for b in bucket_list)
        months: dict[date, int] = {}
        """Each month's first day in the range -> the number of the range's days in it."""
        first = None
        for day in days:
            if first is None or (day.year, day.month) != (first.year, first.month):
                first = day
            months[first] = months.get(first, 0) + 1
        return cls(
            buckets=tuple(bucket_list),
            dates=tuple(b.first.isoformat() for b in bucket_list),
            sizes=sizes,
            counter_keys=resp.PrefixedBulks(keys.client_day_suffix(d) for d in days),
            users_keys=resp.PrefixedBulks(keys.client_day_users_suffix(d) for d in days),
            packed_sizes=resp.bulks(sizes),
            month_keys=resp.PrefixedBulks(keys.device_month_suffix(d) for d in months),
            month_spans=(len(months), *(x for d in months for x in (d.day, months[d]))),
        )


@lru_cache(maxsize=_PLANS_KEPT)
def whole_plan(first: date, last: date) -> SeriesPlan:
    """One bucket over the whole range: its total (distinct users over the range)."""
    return SeriesPlan.of([Bucket(first, last)])


@lru_cache(maxsize=_PLANS_KEPT)
def series_plan(first: date, last: date, granularity: Granularity) -> SeriesPlan:
    """``SeriesPlan.of(buckets(first, last, granularity))``, remembered per range."""
    return SeriesPlan.of(buckets(first, last, granularity))


@dataclass(frozen=True, slots=True)
class RankingPlan:
    """What ranking a client's devices over a range reads: the range's activity vectors
    (activity) or the device-users hashes of the months it touches, each with the bitmask of
    its days inside the range (users); state/fleet.py."""

    days: resp.PrefixedBulks
    months: tuple[tuple[date, int], ...]


@lru_cache(maxsize=_PLANS_KEPT)
def ranking_plan(first: date, last: date) -> RankingPlan:
    days = [first + timedelta(days=n) for n in range(days_inclusive(first, last))]
    masks: dict[date, int] = {}
    for day in days:
        month = day.replace(day=1)
        masks[month] = masks.get(month, 0) | 1 << (day.day - 1)
    return RankingPlan(
        days=resp.PrefixedBulks(keys.client_day_activity_suffix(d) for d in days),
        months=tuple(masks.items()),
    )


@dataclass(frozen=True, slots=True)
class RankingView:
    """What a ranking request needs: the client, its devices and their values."""

    client_exists: bool
    devices: Sequence[str]
    """Every device the client owns (the ranking lists them all, zeros included), by id."""
    values: np.ndarray
    """Each device's value over the range, in the order of ``devices``."""


@dataclass(frozen=True, slots=True)
class _Fleet:
    """A client's devices as rankings read them, remembered between requests: the device set
    and the device index only grow, so their sizes tell whether what is remembered is whole."""

    owned: int
    """SCARD of the client's device set."""
    indexed: int
    """HLEN of the client's device index (its filler field included)."""
    devices: list[str]
    """The union of both, by id."""
    positions: np.ndarray
    """Each device's index in the activity vectors, -1 for one without any."""
    size: int
    """One more than the largest index."""

    @classmethod
    def of(cls, owned: Sequence[str], index: dict[str, str], indexed: int) -> _Fleet:
        index.pop(fleet.FILLER, None)
        devices = sorted(set(owned) | set(index))
        positions = np.fromiter((int(index.get(d, -1)) for d in devices), np.int64, len(devices))
        size = int(positions.max()) + 1 if len(devices) else 0
        return cls(len(owned), indexed, devices, positions, size)


STALE_S = 60.0
"""How old a client's last answer may be to stand in while its node is down."""
_STALE_KEPT = 4096
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

_FLEETS_KEPT = 64
"""Clients whose ``_Fleet`` a Reader remembers (about 1 MB for one of 10,000 devices)."""


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    metric: Metric
    buckets: Sequence[Bucket] | SeriesPlan
    """The buckets to read, in order; a ``SeriesPlan`` spares working out their keys again."""


@dataclass(frozen=True, slots=True)
class DeviceView:
    """Everything one request may need once its token is settled; the API decides which parts
    to look at, in the contract's order (docs/api.md)."""

    client_exists: bool
    device_owner: str | None
    values: list[int] | None
    """One value per bucket of the query; None when no query was asked."""
    extra: list[list[int]] = field(default_factory=list)
    """The values of each extra query, in order."""


@dataclass(frozen=True, slots=True)
class ClientView:
    """What a client-wide request needs: the client, and each query's values."""

    client_exists: bool
    values: list[list[int]]


def _hash_fields(reply: Any) -> dict[str, str]:
    """An HGETALL reply as a dict: RESP3 answers a map, RESP2 a flat list of fields and values."""
    if isinstance(reply, dict):
        return reply
    fields = iter(reply)
    return dict(zip(fields, fields, strict=True))


class Reader:
    def __init__(self, redis: Redis | RedisCluster, gate: Gate | None = None) -> None:
        self._redis: Any = redis
        self._gate = gate or Gate(size=64, wait_s=5.0)
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self._scripts = Scripts.register(redis)
        self._fleets: OrderedDict[str, _Fleet] = OrderedDict()
        self._stale: OrderedDict[bytes, tuple[Any, float]] = OrderedDict()
        """Registry reads on a cluster (a command -> its last answer and when), for ``STALE_S``."""

    async def ping(self) -> None:
        async with self._gate.slot():
            with unavailable_on_failure():
                await self._redis.ping()

    async def grant(self, token_hash: str) -> TokenGrant | None:
        """The grant stored for a token's hash (``hash_token``); None: unknown or revoked. One
        HGETALL: the API asks this first, before any read a refused request must not cost."""
        async with self._gate.slot():
            with unavailable_on_failure():
                fields = await self._redis.hgetall(keys.token(token_hash))
        return TokenGrant.decode(_hash_fields(fields), token_hash)

    async def device_view(
        self,
        client_id: str,
        device_id: str,
        query: SeriesQuery | None,
        extra: Sequence[SeriesQuery] = (),
    ) -> DeviceView:
        """The client's and device's existence and, speculatively, the series (and ``extra``
        ones, e.g. the previous period), in one round trip. The series are computed even when
        the device turns out to be another client's; they only ever read the device's own keys,
        and the token was settled before (api/auth.py)."""
        commands = [
            resp.command("EXISTS", keys.client(client_id)),
            resp.command("HGET", keys.device_meta(device_id), "client"),
        ]
        queries = ([] if query is None else [query]) + list(extra)
        tag, scratch = keys.device_tag(device_id), keys.device_scratch(device_id)
        commands += [self._series_command(tag, scratch, q) for q in queries]
        routes = [keys.client(client_id), keys.device_meta(device_id), *[tag] * len(queries)]
        replies = await self._round_trip(commands, routes, stale_ok=(0,))
        values = [list(map(int, reply)) for reply in replies[2:]]
        return DeviceView(
            client_exists=bool(replies[0]),
            device_owner=replies[1],
            values=values[0] if query is not None else None,
            extra=values[1:] if query is not None else values,
        )

    async def clients_of(self, grant: TokenGrant) -> list[Client]:
        """The registered clients a grant may read, by id: its own (one round trip), or every
        client for a grant of all clients."""
        registry = Registry(self._redis)
        async with self._gate.slot():
            with unavailable_on_failure():
                if grant.all_clients:
                    return await registry.list_clients()
                return await registry.list_clients(sorted(grant.clients))

    async def client_timezone(self, client_id: str) -> str | None:
        """The client's IANA timezone, None for an unknown client."""
        async with self._gate.slot():
            with unavailable_on_failure():
                zone = await self._redis.hget(keys.client(client_id), "timezone")
        return None if zone is None else str(zone)

    async def client_view(self, client_id: str, queries: Sequence[SeriesQuery]) -> ClientView:
        """The client's existence and, speculatively, the client-wide series of ``queries`` over
        its client-day aggregates (state/fleet.py), in one round trip."""
        commands = [resp.command("EXISTS", keys.client(client_id))]
        tag, scratch = keys.client_tag(client_id), keys.client_scratch(client_id)
        commands += [self._series_command(tag, scratch, q, device=False) for q in queries]
        routes = [keys.client(client_id), *[tag] * len(queries)]
        replies = await self._round_trip(commands, routes, stale_ok=(0,))
        return ClientView(
            client_exists=bool(replies[0]),
            values=[list(map(int, reply)) for reply in replies[1:]],
        )

    async def ranking_view(self, client_id: str, metric: Metric, plan: RankingPlan) -> RankingView:
        """The client, its devices and, speculatively, each device's value over the plan's
        range, from the client's fleet aggregates (state/fleet.py): one round trip, and a
        second when the client's devices changed since the last ranking."""
        commands = [
            resp.command("EXISTS", keys.client(client_id)),
            resp.command("SCARD", keys.client_devices(client_id)),
            resp.command("HLEN", keys.client_devices_index(client_id)),
            *self._ranking_commands(client_id, metric, plan),
        ]
        routes = [
            keys.client(client_id),
            keys.client_devices(client_id),
            *[keys.client_tag(client_id)] * (len(commands) - 2),
        ]
        replies = await self._round_trip(commands, routes, raw_from=3, stale_ok=(0, 1))
        if not replies[0]:
            return RankingView(client_exists=False, devices=[], values=np.zeros(0, np.int64))
        devices = await self._fleet(client_id, int(replies[1]), int(replies[2]))
        values = np.zeros(len(devices.devices), dtype=np.int64)
        if devices.size:
            if metric == "activity-count":
                found = fleet.activity_totals(replies[3], devices.size)
            else:
                masks = [mask for _, mask in plan.months]
                found = fleet.distinct_users(
                    list(zip(replies[3:], masks, strict=True)), devices.size
                )
            indexed = devices.positions >= 0
            values[indexed] = found[devices.positions[indexed]]
        return RankingView(client_exists=True, devices=devices.devices, values=values)

    async def _fleet(self, client_id: str, owned: int, indexed: int) -> _Fleet:
        """The client's devices, read again when the set or the index changed size."""
        known = self._fleets.get(client_id)
        if known is not None and (known.owned, known.indexed) == (owned, indexed):
            self._fleets.move_to_end(client_id)
            return known
        members, index = await self._round_trip(
            [
                resp.command("SMEMBERS", keys.client_devices(client_id)),
                resp.command("HGETALL", keys.client_devices_index(client_id)),
            ],
            [keys.client_devices(client_id), keys.client_devices_index(client_id)],
            stale_ok=(0,),
        )
        index = _hash_fields(index)
        found = _Fleet.of(members, index, len(index))
        self._fleets[client_id] = found
        if len(self._fleets) > _FLEETS_KEPT:
            self._fleets.popitem(last=False)
        return found

    def _ranking_commands(self, client_id: str, metric: Metric, plan: RankingPlan) -> list[bytes]:
        if metric == "activity-count":
            return [
                b"".join(
                    (
                        resp.header(1 + len(plan.days)),
                        resp.bulk("MGET"),
                        plan.days.pack(keys.client_tag(client_id).encode()),
                    )
                )
            ]
        return [
            resp.command("HVALS", keys.client_month_users(client_id, month))
            for month, _ in plan.months
        ]

    def _series_command(
        self, tag: str, scratch: str, query: SeriesQuery, *, device: bool = True
    ) -> bytes:
        """The call of the query's read script over the keys under ``tag``, a device's (its
        months) or a client's (its day aggregates); ``scratch`` is the users scripts' key of
        the same slot. The counts scripts write nothing and go by EVALSHA_RO; the users scripts
        may write their scratch key, so they go by EVALSHA and name it as their only key, the
        keys they read following as arguments: a reader's ACL user then needs the right to
        read those and to write its scratch key, nothing more (state/acl.py)."""
        plan = query.buckets
        if not isinstance(plan, SeriesPlan):
            plan = SeriesPlan.of(plan)
        users = query.metric == "user-count"
        if device:
            script = self._scripts.read_device_users if users else self._scripts.read_device_counts
            read_keys, spans = plan.month_keys, plan.month_spans
        else:
            script = self._scripts.read_users if users else self._scripts.read_counts
            read_keys = plan.users_keys if users else plan.counter_keys
            spans = (len(read_keys),) if users else ()
        before: tuple[resp.Arg, ...]  # what comes before the keys read, and after them
        after: tuple[resp.Arg, ...]
        if users:
            before, after = ("EVALSHA", script.sha, 1, scratch, *spans), ()
        else:
            before, after = ("EVALSHA_RO", script.sha, len(read_keys)), spans
        return b"".join(
            (
                resp.header(len(before) + len(read_keys) + len(after) + len(plan.sizes)),
                resp.bulks(before),
                read_keys.pack(tag.encode()),
                resp.bulks(after),
                plan.packed_sizes,
            )
        )

    async def _round_trip(
        self,
        commands: Sequence[bytes],
        routes: Sequence[str],
        raw_from: int | None = None,
        stale_ok: Sequence[int] = (),
    ) -> list[Any]:
        """Every reply of ``commands``, sent at once (the read script's scratch key is its own,
        so sending again after a NOSCRIPT is safe). On a Redis Cluster, each goes to the
        primary of the slot of its key in ``routes`` (state/routing.py), one round trip per
        node, all at once; the replies from ``raw_from`` on are left undecoded. The commands
        at ``stale_ok`` read the registry (a token, a client): when their node cannot be
        reached, their last answer, up to ``STALE_S`` old, stands in, so that a device on a
        healthy node still answers while the node of its token or client is down."""

        async def send(redis: Any, packed: Sequence[bytes]) -> list[Any]:
            if self._cluster is None:
                return await resp.send(redis, packed, raw_from=raw_from)
            routed = [Routed(k, c) for k, c in zip(routes, packed, strict=True)]
            replies = await send_routed(self._cluster, routed, raw_from=raw_from)
            now = time.monotonic()
            for i in stale_ok:
                known = self._stale.get(packed[i])
                if isinstance(replies[i], _UNREACHABLE):
                    if known is not None and now - known[1] <= STALE_S:
                        replies[i] = known[0]
                elif not isinstance(replies[i], Exception):
                    self._stale[packed[i]] = (replies[i], now)
                    if len(self._stale) > _STALE_KEPT:
                        self._stale.popitem(last=False)
            return replies

        async with self._gate.slot():
            with unavailable_on_failure():
                return await self._scripts.send(self._redis, send, commands)
