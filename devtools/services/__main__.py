"""`python -m devtools.services up|down|status`: the local services of DEVACT_RUN_DIR.

Environment: DEVACT_RUN_DIR (default `<repo>/.run`), DEVACT_KAFKA_PORT (9092),
DEVACT_REDIS_PORT (6379), DEVACT_REDIS_CLUSTER (1: a local Redis Cluster of three primaries with
a replica each, on DEVACT_REDIS_PORT and the five ports after it). `up` prints the
`DEVACT_...=` lines of the env file on stdout; `status` exits 0 only when every service runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from devtools.services.process import ServiceError
from devtools.services.stack import LocalStack

log = logging.getLogger("devtools.services")


def default_run_dir() -> Path:
    """`<repo>/.run` for a checkout (editable install), else `./.run`."""
    repo = Path(__file__).resolve().parents[2]
    base = repo if (repo / "pyproject.toml").exists() else Path.cwd()
    return base / ".run"


def stack_from_env() -> LocalStack:
    run_dir = os.environ.get("DEVACT_RUN_DIR")
    return LocalStack(
        Path(run_dir) if run_dir else default_run_dir(),
        kafka_port=int(os.environ.get("DEVACT_KAFKA_PORT", "9092")),
        redis_port=int(os.environ.get("DEVACT_REDIS_PORT", "6379")),
        redis_cluster=os.environ.get("DEVACT_REDIS_CLUSTER", "0") not in ("", "0", "false"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.services", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    stack = stack_from_env()
    try:
        if args.command == "up":
            endpoints = stack.start()
            sys.stdout.write(
                f"DEVACT_KAFKA_BOOTSTRAP={endpoints.kafka_bootstrap}\n"
                f"DEVACT_REDIS_URL={endpoints.redis_url}\n"
            )
        elif args.command == "down":
            stack.stop()
        else:
            states = stack.status()
            for name, state in states.items():
                sys.stdout.write(f"{name}: {state}\n")
            return 0 if all(s.startswith("running") for s in states.values()) else 1
    except ServiceError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
