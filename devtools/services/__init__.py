"""Local Kafka and Redis as plain processes, for `make services`, `make run` and the tests.

No Docker: Kafka's jars come from Maven Central (cached outside the checkout), Redis from
Debian's `redis-server` package. `python -m devtools.services up|down|status` is the CLI.
"""

from devtools.services.kafka import ensure_kafka_jars
from devtools.services.process import ServiceError, free_port
from devtools.services.redis import ensure_redis_installed
from devtools.services.stack import Endpoints, LocalStack

__all__ = [
    "Endpoints",
    "LocalStack",
    "ServiceError",
    "ensure_kafka_jars",
    "ensure_redis_installed",
    "free_port",
]
