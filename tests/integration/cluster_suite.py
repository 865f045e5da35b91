"""Running a suite again on a real local Redis Cluster: a module that imports this ``services``
fixture and another module's tests (``from .test_x import *``) runs those tests with the worker,
the API and the CLI on the session's cluster (three primaries, a replica each) instead of one
Redis, and Kafka as for every test."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.services import Endpoints
from devtools.services.redis_cluster import LocalRedisCluster
from tests.conftest import _external_endpoints


@pytest.fixture(scope="module")
def services(local_stack: Any, redis_cluster: LocalRedisCluster) -> Endpoints:
    base = local_stack.endpoints if local_stack is not None else _external_endpoints()
    assert base is not None
    return Endpoints(kafka_bootstrap=base.kafka_bootstrap, redis_url=redis_cluster.url)
