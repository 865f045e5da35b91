"""Answering the API's queries (state/queries.py), each in one round trip: the series, the
comparison and the ranking it asks for by meaning, a token's grant, a client's clients. The
round trips go through the transport of the store (state/transport.py), one Redis's or a
cluster's, the same code for both."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from state import fleet, keys, resp
from state.cluster_transport import transport_for
from state.dates import previous_range
from state.errors import unavailable_on_failure
from state.gate import Gate
from state.queries import (
    Comparison,
    Metric,
    Missing,
    Period,
    Ranking,
    RankingQuery,
    Series,
    SeriesAnswer,
    SeriesQuery,
)
from state.read_plans import RankingPlan, SeriesPlan, ranking_plan, series_plan, whole_plan
from state.registry import Client, Registry, TokenGrant
from state.scripts import Scripts, raise_errors


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


_FLEETS_KEPT = 64
"""Clients whose ``_Fleet`` a Reader remembers (about 1 MB for one of 10,000 devices)."""


def _hash_fields(reply: Any) -> dict[str, str]:
    """An HGETALL reply as a dict: RESP3 answers a map, RESP2 a flat list of fields and values."""
    if isinstance(reply, dict):
        return reply
    fields = iter(reply)
    return dict(zip(fields, fields, strict=True))


class Reader:
    def __init__(self, redis: Redis | RedisCluster, gate: Gate | None = None) -> None:
        self._redis: Any = redis
        """The client, for the typed one-off commands (a ping, a token's grant, a timezone, the
        registry's lists): redis-py routes and decodes those, one command each."""
        self._gate = gate or Gate(size=64, wait_s=5.0)
        self._transport = transport_for(redis)
        self._scripts = Scripts.register(redis)
        self._fleets: OrderedDict[str, _Fleet] = OrderedDict()

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

    async def series(self, query: SeriesQuery) -> SeriesAnswer:
        """The query's series and whether its client and device are there, in one round trip."""
        plan = series_plan(query.first, query.last, query.granularity)
        missing, values = await self._read(query, (plan,))
        return SeriesAnswer(missing, Series(plan.dates, values[0]))

    async def compare(self, query: SeriesQuery) -> Comparison:
        """The query's series and total beside those of the previous range
        (``dates.previous_range``), bucketed by the same rules, in one round trip."""
        first, last, granularity = query.first, query.last, query.granularity
        before = previous_range(first, last)
        plans = [series_plan(first, last, granularity)]
        if before is not None:
            plans.append(series_plan(before[0], before[1], granularity))
        users = query.metric == "user-count"
        if users:  # distinct users over a whole range: not the sum of its buckets' users
            plans += [whole_plan(first, last)] + ([] if before is None else [whole_plan(*before)])
        missing, values = await self._read(query, plans)
        count = len(plans) // 2 if users else len(plans)
        totals = [v[0] for v in values[count:]] if users else list(map(sum, values))
        current = Period(first, last, Series(plans[0].dates, values[0]), totals[0])
        if before is None:
            return Comparison(missing, current, None)
        previous = Period(*before, Series(plans[1].dates, values[1]), totals[1])
        return Comparison(missing, current, previous)

    async def missing(self, client_id: str, device_id: str) -> Missing | None:
        """Whether the client and its device are there (one round trip, no series)."""
        missing, _ = await self._device_read(client_id, device_id, [])
        return missing

    async def _read(
        self, query: SeriesQuery, plans: Sequence[SeriesPlan]
    ) -> tuple[Missing | None, list[list[int]]]:
        """The values of each plan's buckets for the query's device (its device-months) or,
        without one, its client (the client-day aggregates, state/fleet.py)."""
        device = query.device
        if device is None:
            tag, scratch = keys.client_tag(query.client), keys.client_scratch(query.client)
        else:
            tag, scratch = keys.device_tag(device), keys.device_scratch(device)
        calls = [
            self._series_command(tag, scratch, query.metric, plan, device=device is not None)
            for plan in plans
        ]
        if device is None:
            return await self._client_read(query.client, calls)
        return await self._device_read(query.client, device, calls)

    async def _device_read(
        self, client_id: str, device_id: str, calls: Sequence[bytes]
    ) -> tuple[Missing | None, list[list[int]]]:
        """The client's and the device's existence and, speculatively, the replies of the
        series ``calls``. They are computed even when the device turns out to be another
        client's; they only ever read the device's own keys, and the token was settled before
        (api/auth.py)."""
        commands = [
            resp.command("EXISTS", keys.client(client_id)),
            resp.command("HGET", keys.device_meta(device_id), "client"),
            *calls,
        ]
        tag = keys.device_tag(device_id)
        routes = [keys.client(client_id), keys.device_meta(device_id), *[tag] * len(calls)]
        replies = await self._round_trip(commands, routes, stale_ok=(0,))
        missing: Missing | None = (
            "client" if not replies[0] else None if replies[1] == client_id else "device"
        )
        return missing, [list(map(int, reply)) for reply in replies[2:]]

    async def _client_read(
        self, client_id: str, calls: Sequence[bytes]
    ) -> tuple[Missing | None, list[list[int]]]:
        """The client's existence and, speculatively, the replies of the series ``calls``."""
        commands = [resp.command("EXISTS", keys.client(client_id)), *calls]
        routes = [keys.client(client_id), *[keys.client_tag(client_id)] * len(calls)]
        replies = await self._round_trip(commands, routes, stale_ok=(0,))
        missing: Missing | None = None if replies[0] else "client"
        return missing, [list(map(int, reply)) for reply in replies[1:]]

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

    async def ranking(self, query: RankingQuery) -> Ranking:
        """The client's devices ranked over the query's range, from its fleet aggregates
        (state/fleet.py): one round trip, and a second when the client's devices changed since
        the last ranking."""
        client_id, metric = query.client, query.metric
        plan = ranking_plan(query.first, query.last)
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
            return Ranking(missing="client", total_devices=0, devices=[])
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
        key = values if query.order == "asc" else -values
        # Sorted by value, then by position: the devices are in id order already.
        ranked = np.lexsort((np.arange(len(devices.devices)), key))[: query.limit]
        # Through Python lists and ints: picking by numpy scalars made the body of 1,000 devices
        # take twice as long (timeit, 10,000 devices, 2026-12-07).
        ids = [devices.devices[i] for i in ranked.tolist()]
        return Ranking(
            missing=None,
            total_devices=len(devices.devices),
            devices=list(zip(ids, values[ranked].tolist(), strict=True)),
        )

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
        self, tag: str, scratch: str, metric: Metric, plan: SeriesPlan, *, device: bool
    ) -> bytes:
        """The call of the metric's read script over the plan's buckets, from the keys under
        ``tag``, a device's (its months) or a client's (its day aggregates); ``scratch`` is the
        users scripts' key of the same slot. The counts scripts write nothing and go by
        EVALSHA_RO; the users scripts may write their scratch key, so they go by EVALSHA and
        name it as their only key, the keys they read following as arguments: a reader's ACL
        user then needs the right to read those and to write its scratch key, nothing more
        (state/acl.py)."""
        users = metric == "user-count"
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
        """Every reply of ``commands``, sent at once through the transport (``Transport.send``:
        on a Redis Cluster each goes to the primary of the slot of its key in ``routes``); the
        replies from ``raw_from`` on are left undecoded. The commands at ``stale_ok`` read the
        registry (a token, a client): on a cluster, when their node cannot be reached, their
        last answer stands in, so that a device on a healthy node still answers while the node
        of its token or client is down. Sent again after a NOSCRIPT (``Scripts.reloading``: the
        read script's scratch key is its own, so that is safe); any other error reply raised."""

        async def attempt() -> list[Any]:
            replies = await self._transport.send(commands, routes, raw_from, stale_ok)
            raise_errors(replies)
            return replies

        async with self._gate.slot():
            with unavailable_on_failure():
                return await self._scripts.reloading(self._redis, attempt)
