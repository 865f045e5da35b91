"""Errors raised by state/, and the one place Redis's own errors become them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class StateError(Exception):
    """Base of every error state/ raises on purpose."""


class StoreUnavailable(StateError):
    """Redis cannot be reached or did not answer in time."""


class LostWrites(StateError):
    """Redis no longer holds writes it acknowledged earlier in the same batch (it restarted
    and replayed an AOF missing its last second, failed over, or was flushed): the batch must
    be applied again from its start."""


class StoreRefused(StateError):
    """Redis refused this process's user: a wrong password, a disabled user, or a right its
    ACL rules lack (state/acl.py). Not worth retrying: it stops the process at start."""


class NotFound(StateError):
    """A device or client an operator named is not in Redis."""


class UnknownTimezone(StateError):
    """A client timezone is not a valid IANA name."""


UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError)
"""What says that Redis, or the Redis Cluster node of a slot, cannot be reached now or did not
answer in time: raised by a send, or a command's reply in its place (``CLUSTERDOWN`` and
``TRYAGAIN`` say it of a slot; ``BusyLoadingError``, a restart still loading its data, is a
``ConnectionError``). The one list of state/: the transports and the reader use it."""


@contextmanager
def unavailable_on_failure() -> Iterator[None]:
    """Turn a Redis that cannot be reached or does not answer (``UNREACHABLE``) into
    :class:`StoreUnavailable`."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StoreUnavailable(str(exc)) from exc
