"""Which Redis a suite runs on: one Redis, the session's local Redis Cluster, or each in turn.

A module says so with ``pytestmark = pytest.mark.backends(...)``. ``backends("redis",
"cluster")`` runs every test of it that reaches the store (through the ``services`` or ``stack``
fixture) once per backend, and the test id names it: ``test_x[redis]``, ``test_x[cluster]``.
A single backend needs its reason: ``backends("redis", reason="...")``. Every suite says
which it runs on, even one that reaches no store (its reason says so): a new suite cannot
quietly run on one backend only.
"""

from __future__ import annotations

import os
from typing import Literal, cast, get_args

import pytest

from devtools.services import Endpoints

Backend = Literal["redis", "cluster"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
MARKER = "backends"
MARKER_HELP = (
    f"{MARKER}(*names, reason=...): the Redis backends the suite runs on, of "
    f"{', '.join(BACKENDS)} (tests/integration/harness/backends.py); fewer than all need a reason"
)


def declared(node: pytest.Item | pytest.Collector) -> tuple[Backend, ...]:
    """The backends ``node``'s module declares."""
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        raise pytest.UsageError(
            f"{node.nodeid}: say which Redis backends the suite runs on: "
            f'pytestmark = pytest.mark.{MARKER}("redis", "cluster") (harness/backends.py)'
        )
    names = marker.args
    unknown = [n for n in names if n not in BACKENDS]
    if not names or unknown or len(set(names)) != len(names):
        raise pytest.UsageError(
            f"{node.nodeid}: {MARKER}{names!r}: name each of {BACKENDS} at most once"
        )
    if len(names) < len(BACKENDS) and not marker.kwargs.get("reason"):
        raise pytest.UsageError(
            f"{node.nodeid}: {MARKER}{names!r} runs on one backend only: say why (reason=...)"
        )
    return cast(tuple[Backend, ...], names)


def parametrize(metafunc: pytest.Metafunc) -> None:
    """One call of the test per declared backend, when it reaches the ``backend`` fixture and
    its module declares more than one. Module scope: a module's tests on one backend run
    together, then on the next, so the module's stack starts once per backend."""
    if "backend" not in metafunc.fixturenames:
        return
    names = declared(metafunc.definition)
    if len(names) > 1:
        metafunc.parametrize("backend", names, indirect=True, scope="module")


def external_endpoints() -> Endpoints | None:
    """Kafka and one Redis named by DEVACT_KAFKA_BOOTSTRAP and DEVACT_REDIS_URL, when both
    are set: the session then starts neither (the cluster, when asked for, is still local)."""
    kafka = os.environ.get("DEVACT_KAFKA_BOOTSTRAP")
    redis = os.environ.get("DEVACT_REDIS_URL")
    if kafka and redis:
        return Endpoints(kafka_bootstrap=kafka, redis_url=redis)
    return None
