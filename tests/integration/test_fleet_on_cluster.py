"""The fleet views' suite (test_fleet.py), run again with the worker, the API and the CLI on a
real local Redis Cluster (three primaries, a replica each) instead of one Redis: every count,
ranking, comparison, live event and error the same."""

from __future__ import annotations

from typing import Any

import pytest

from devact.services import Endpoints
from devact.services.redis_cluster import LocalRedisCluster

from .test_fleet import *  # noqa: F403 - the same tests, collected again here


@pytest.fixture(scope="module")
def services(local_stack: Any, redis_cluster: LocalRedisCluster) -> Endpoints:
    """Kafka as for every test; Redis: the cluster."""
    from tests.conftest import _external_endpoints

    base = local_stack.endpoints if local_stack is not None else _external_endpoints()
    assert base is not None
    return Endpoints(kafka_bootstrap=base.kafka_bootstrap, redis_url=redis_cluster.url)
