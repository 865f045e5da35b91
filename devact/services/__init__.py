"""Local Kafka and Redis as plain processes, for `make services`, `make run` and the tests.

No Docker: Kafka's jars come from Maven Central (cached outside the checkout), Redis from
Debian's `redis-server` package. `python -m devact.services up|down|status` is the CLI.
"""

from devact.services.kafka import ensure_kafka_jars
from devact.services.process import ServiceError, free_port
from devact.services.redis import ensure_redis_installed
from devact.services.stack import Endpoints, LocalStack

__all__ = [
    "Endpoints",
    "LocalStack",
    "ServiceError",
    "ensure_kafka_jars",
    "ensure_redis_installed",
    "free_port",
]
