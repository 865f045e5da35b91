"""Fault injection for tests/integration/test_faults.py: own services, killable workers, truth.

The fault tests stop, kill and restart Kafka, Redis and workers, so they run on a LocalStack of
their own (one per module) and never disturb the session's shared services. Each test gets a
fresh topic and consumer group on it, a seeded workload whose expected numbers come from the
independent oracle, a producer that keeps the stream flowing while the faults strike, and
worker processes it can SIGKILL and restart under the same static group membership id.

Nothing here waits a fixed time to synchronise: every wait polls an observable (the Redis total,
a process's exit, an HTTP status) against a ``time.monotonic()`` deadline.

Modules: ``constants`` (numbers several modules share), ``services`` (the module's own LocalStack,
Redis pid/AOF, kill and restart), ``processes`` (`devact` commands, the API), ``probe`` (reads
Redis, digests), ``workload`` (seeded heartbeats and the oracle's numbers), ``kafka`` (topics,
producers, group members), ``pipeline`` (one test's topic, group and workers), ``checks`` (waits
and assertions against the oracle, measured figures).
"""
