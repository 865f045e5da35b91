"""Read-only views of Redis for the fault tests: totals, counts, user sets and key digests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import redis

from . import fleet_keys

# Sums the given fields of the given hashes (KEYS[i], ARGV[i]) server side: one round trip
# however many device-days.
_SUM_COUNTS = """
local total = 0
for i = 1, #KEYS do
  total = total + (tonumber(redis.call('HGET', KEYS[i], ARGV[i])) or 0)
end
return total
"""
Cell = tuple[str, str]
"""A hash key and field: a device-day's activity, in its device-month (faultkit.workload)."""
_CHUNK = 5000
T = TypeVar("T")


class RedisProbe:
    """Reads what the worker wrote, for checks and progress; never writes data keys."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)

    def close(self) -> None:
        self._redis.close()

    def total(self, counter_keys: Sequence[Cell]) -> int:
        """Sum of the activity counters of these device-days (a missing one counts 0)."""
        return sum(
            int(
                self._redis.eval(  # type: ignore[arg-type]
                    _SUM_COUNTS, len(chunk), *(k for k, _ in chunk), *(f for _, f in chunk)
                )
            )
            for chunk in _chunks(counter_keys)
        )

    def total_or_none(self, counter_keys: Sequence[Cell]) -> int | None:
        """``total``, or None while Redis does not answer (it is being restarted)."""
        try:
            return self.total(counter_keys)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return None

    def counts(self, counter_keys: Sequence[Cell]) -> list[int | None]:
        values: list[int | None] = []
        for chunk in _chunks(counter_keys):
            with self._redis.pipeline(transaction=False) as pipe:
                for key, day_field in chunk:
                    pipe.hget(key, day_field)
                values += [None if v is None else int(v) for v in pipe.execute()]
        return values

    def device_day_users(self, cells: Sequence[Cell]) -> list[tuple[str, int]]:
        """How each device-day keeps its users and how many: ("dictionary", the day bitmap's
        bits) in a month of few users, ("set", SCARD) or ("hyperloglog", 0) in a wide month,
        ("none", 0) for a day of nobody. Decoded here from the bytes (docs/key-schema.md),
        without the product's code."""
        months = {key: self.raw_hash(key) for key in dict.fromkeys(k for k, _ in cells)}
        out: list[tuple[str, int]] = []
        for key, day_field in cells:
            fields = months[key]
            if b"w" in fields:
                day_key = f"{key}-{int(day_field):02d}:u"
                kind = self._redis.type(day_key).decode()  # type: ignore[union-attr]
                if kind == "set":
                    out.append(("set", int(self._redis.scard(day_key))))  # type: ignore[arg-type]
                else:
                    out.append(("hyperloglog" if kind == "string" else "none", 0))
                continue
            bitmap = fields.get(f"{day_field}u".encode())
            if bitmap is None:
                out.append(("none", 0))
            else:
                dictionary = b"".join(fields.get(f"u{n}".encode(), b"") for n in range(8))
                bits = [i for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1]
                assert all(8 * i + 8 <= len(dictionary) for i in bits), "a bit past the users"
                out.append(("dictionary", len(bits)))
        return out

    def user_sets(self, user_keys: Sequence[str]) -> list[tuple[str, int]]:
        """(TYPE, SCARD or 0) of each day's users key."""
        result: list[tuple[str, int]] = []
        for chunk in _chunks(user_keys):
            with self._redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.type(key)
                types = [t.decode() for t in pipe.execute()]
                for key, kind in zip(chunk, types, strict=True):
                    if kind == "set":
                        pipe.scard(key)
                    else:
                        pipe.exists(key)  # placeholder keeps positions aligned
                sizes = pipe.execute()
            result += [
                (kind, int(size) if kind == "set" else 0)
                for kind, size in zip(types, sizes, strict=True)
            ]
        return result

    def pfcount(self, key: str) -> int:
        return int(self._redis.pfcount(key))

    def hash(self, key: str) -> dict[str, str]:
        """HGETALL, decoded."""
        fields = self._redis.hgetall(key)
        return {k.decode(): v.decode() for k, v in fields.items()}  # type: ignore[union-attr]

    def raw(self, key: str) -> bytes | None:
        """GET, as bytes (binary values)."""
        return self._redis.get(key)  # type: ignore[return-value]

    def raw_hash(self, key: str) -> dict[bytes, bytes]:
        """HGETALL, as bytes (binary values)."""
        return self._redis.hgetall(key)  # type: ignore[return-value]

    def keys_matching(self, pattern: str) -> list[str]:
        return sorted(k.decode() for k in self._redis.scan_iter(match=pattern, count=5000))

    def digest(self, include: Callable[[str], bool] = lambda _: True) -> dict[str, Any]:
        """Per key (sorted): TYPE, value and EXPIRETIME. Hashes as sorted items, sets as sorted
        members, strings (HyperLogLogs and positions) by GET; the fleet keys that name devices by
        index, by device id instead (``_by_device``). Compare two digests with
        ``digest_difference``."""
        names = [k for k in self.keys_matching("*") if include(k)]
        out: dict[str, Any] = {}
        for chunk in _chunks(names):
            with self._redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.type(key)
                    pipe.execute_command("EXPIRETIME", key)
                meta = pipe.execute()
                kinds = [t.decode() for t in meta[0::2]]
                for key, kind in zip(chunk, kinds, strict=True):
                    if kind == "hash":
                        pipe.hgetall(key)
                    elif kind == "set":
                        pipe.smembers(key)
                    elif kind == "string":
                        pipe.get(key)
                    else:
                        pipe.dump(key)
                values = pipe.execute()
            for key, kind, expire, value in zip(chunk, kinds, meta[1::2], values, strict=True):
                if key.startswith("da:{c:") and key.endswith((":index", ":a", ":du")):
                    value = self._by_device(key, value)
                elif key.startswith("da:{d:") and _MONTH.fullmatch(key.rsplit(":", 1)[1]):
                    value = _device_month_by_user(value)
                elif kind == "hash":
                    value = sorted(value.items())
                elif kind == "set":
                    value = sorted(value)
                out[key] = (kind, repr(value), int(expire))
        return out

    def _by_device(self, key: str, value: Any) -> Any:
        """A fleet key's value with devices named by id instead of by index: the indexes follow
        the order in which devices first reached the aggregates, which a replay need not
        repeat; what each device holds must be the same."""
        tag = key.split("}", 1)[0] + "}"
        index = fleet_keys.device_indexes(self.hash(f"{tag}:index"))
        if key.endswith(":index"):
            return sorted(index)
        if key.endswith(":a"):
            return sorted(fleet_keys.activity_by_device(index, value).items())
        return sorted(
            (device, sorted(users.items()))
            for device, users in fleet_keys.users_by_device(index, value).items()
        )

    def flushall(self) -> None:
        self._redis.flushall()


def digest_hash(digest: Mapping[str, Any]) -> str:
    return hashlib.sha256(repr(sorted(digest.items())).encode()).hexdigest()


def digest_difference(before: Mapping[str, Any], after: Mapping[str, Any], limit: int = 15) -> str:
    """A readable account of how two digests differ ('' when equal)."""
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    if not (gone or new or changed):
        return ""
    lines = [f"{len(gone)} keys gone, {len(new)} keys new, {len(changed)} keys changed"]
    lines += [f"  gone: {k} {before[k]}" for k in gone[:limit]]
    lines += [f"  new: {k} {after[k]}" for k in new[:limit]]
    lines += [
        f"  changed: {k}\n    before {before[k]}\n    after  {after[k]}" for k in changed[:limit]
    ]
    return "\n".join(lines)


_MONTH = re.compile(r"\d{4}-\d{2}")


def _device_month_by_user(fields: Mapping[bytes, bytes]) -> list[Any]:
    """A device-month with each day's users named by hash rather than by their place in the
    month's dictionary: the place follows the order in which users first reached the month,
    which a replay cut into other batches need not repeat; each day's users must be the same.
    Decoded from the bytes (docs/key-schema.md), without the product's code."""
    dictionary = b"".join(fields.get(f"u{n}".encode(), b"") for n in range(8))
    users = [dictionary[i : i + 8] for i in range(0, len(dictionary), 8)]
    out = []
    for field, value in sorted(fields.items()):
        name = field.decode()
        if name.endswith("u") and name[:-1].isdigit():
            bits = [i for i in range(len(value) * 8) if value[i // 8] >> (i % 8) & 1]
            out.append((name, sorted(users[i] for i in bits)))
        elif not (name.startswith("u") and name[1:].isdigit()):
            out.append((name, value))
    return out


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for first in range(0, len(items), _CHUNK):
        yield items[first : first + _CHUNK]


class ClusterProbe(RedisProbe):
    """``RedisProbe`` on a Redis Cluster: the library's cluster client routes each read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis.RedisCluster.from_url(  # type: ignore[assignment]
            url, socket_timeout=5, socket_connect_timeout=2
        )

    def total(self, counter_keys: Sequence[Cell]) -> int:
        """The keys sit in many slots: summed here rather than in one script."""
        return sum(c or 0 for c in self.counts(counter_keys))

    def total_or_none(self, counter_keys: Sequence[Cell]) -> int | None:
        """``total``, or None while the cluster does not answer for every slot (a node
        restarting, a failover under way)."""
        try:
            return self.total(counter_keys)
        except (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
                redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):  # fmt: skip
            return None
